"""python -m jobs.gate [overrides]: the gate stage (logic in jobs/stages/gate.py)."""

from jobs.config.entry import stage_main

main = stage_main("gate")

if __name__ == "__main__":
    main()
