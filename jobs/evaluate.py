"""python -m jobs.evaluate [overrides]: the evaluate stage (logic in jobs/stages/evaluate.py)."""

from jobs.config.entry import stage_main

main = stage_main("evaluate")

if __name__ == "__main__":
    main()
