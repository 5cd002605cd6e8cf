"""The deterministic OpenAI-compatible simulator. Rules: docs/simulator.md and jobs/sim/roles.py."""
