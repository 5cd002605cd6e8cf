"""python -m jobs.optimize [overrides]: the optimize stage (logic in jobs/stages/optimize.py).
Sweep with Hydra multirun: python -m jobs.optimize -m optimizer.max_metric_calls=40,70"""

from jobs.config.entry import stage_main
from jobs.stages.optimize import check, run

main = stage_main("optimize", check, run)

if __name__ == "__main__":
    main()
