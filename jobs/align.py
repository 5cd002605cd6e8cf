"""python -m jobs.align [overrides]: the align stage (logic in jobs/stages/align.py)."""

from jobs.config.entry import stage_main

main = stage_main("align")

if __name__ == "__main__":
    main()
