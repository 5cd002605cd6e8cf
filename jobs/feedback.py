"""python -m jobs.feedback [overrides]: the feedback stage (logic in jobs/stages/feedback.py)."""

from jobs.config.entry import stage_main

main = stage_main("feedback")

if __name__ == "__main__":
    main()
