"""python -m jobs.evaluate [overrides]: the evaluate stage (logic in jobs/stages/evaluate.py)."""

from jobs.config.entry import stage_main
from jobs.stages.evaluate import check, run

main = stage_main("evaluate", check, run)

if __name__ == "__main__":
    main()
