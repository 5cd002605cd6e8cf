"""python -m jobs.traffic [overrides]: the traffic stage (logic in jobs/stages/traffic.py)."""

from jobs.config.entry import stage_main

main = stage_main("traffic")

if __name__ == "__main__":
    main()
