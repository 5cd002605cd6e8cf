"""python -m jobs.compare [overrides]: the compare stage (logic in jobs/stages/compare.py)."""

from jobs.config.entry import stage_main
from jobs.stages.compare import check, run

main = stage_main("compare", check, run)

if __name__ == "__main__":
    main()
