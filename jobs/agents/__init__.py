"""Agents promptgate ships: each a factory of the agent contract (jobs/eval/agent.py)."""
