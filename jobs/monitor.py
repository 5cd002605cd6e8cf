"""python -m jobs.monitor [overrides]: the monitor stage (logic in jobs/stages/monitor.py)."""

from jobs.config.entry import stage_main

main = stage_main("monitor")

if __name__ == "__main__":
    main()
