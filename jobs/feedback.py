"""python -m jobs.feedback [overrides]: the feedback stage (logic in jobs/stages/feedback.py)."""

from jobs.config.entry import stage_main
from jobs.stages.feedback import check, run

main = stage_main("feedback", check, run)

if __name__ == "__main__":
    main()
