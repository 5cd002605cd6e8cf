"""python -m jobs.align [overrides]: the align stage (logic in jobs/stages/align.py)."""

from jobs.config.entry import stage_main
from jobs.stages.align import check, run

main = stage_main("align", check, run)

if __name__ == "__main__":
    main()
