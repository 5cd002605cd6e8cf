"""Stage logic. Each module has ``check(cfg)`` (fast, before heavy imports) and ``run(cfg)``."""
