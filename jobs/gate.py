"""python -m jobs.gate [overrides]: the gate stage (logic in jobs/stages/gate.py).
Rollback: python -m jobs.gate gate.rollback=true"""

from jobs.config.entry import stage_main
from jobs.stages.gate import check, run

main = stage_main("gate", check, run)

if __name__ == "__main__":
    main()
