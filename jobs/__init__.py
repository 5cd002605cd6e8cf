"""promptgate: everything that runs inside a stage container."""
