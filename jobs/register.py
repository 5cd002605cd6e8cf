"""python -m jobs.register [overrides]: the register stage (logic in jobs/stages/register.py)."""

from jobs.config.entry import stage_main
from jobs.stages.register import check, run

main = stage_main("register", check, run)

if __name__ == "__main__":
    main()
