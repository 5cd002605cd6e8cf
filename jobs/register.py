"""python -m jobs.register [overrides]: the register stage (logic in jobs/stages/register.py)."""

from jobs.config.entry import stage_main

main = stage_main("register")

if __name__ == "__main__":
    main()
