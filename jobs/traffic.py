"""python -m jobs.traffic [overrides]: the traffic command (logic in jobs/stages/traffic.py)."""

from jobs.config.entry import stage_main
from jobs.stages.traffic import check, run

main = stage_main("traffic", check, run)

if __name__ == "__main__":
    main()
