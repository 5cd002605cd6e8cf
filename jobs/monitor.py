"""python -m jobs.monitor [overrides]: the monitor command (logic in jobs/stages/monitor.py)."""

from jobs.config.entry import stage_main
from jobs.stages.monitor import check, run

main = stage_main("monitor", check, run)

if __name__ == "__main__":
    main()
