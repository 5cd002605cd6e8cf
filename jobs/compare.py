"""python -m jobs.compare [overrides]: the compare stage (logic in jobs/stages/compare.py)."""

from jobs.config.entry import stage_main

main = stage_main("compare")

if __name__ == "__main__":
    main()
