"""python -m jobs.optimize [overrides]: the optimize stage (logic in jobs/stages/optimize.py)."""

from jobs.config.entry import stage_main

main = stage_main("optimize")

if __name__ == "__main__":
    main()
