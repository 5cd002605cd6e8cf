"""The LLM gateway every stage's LLM calls go through (server, cache stores, stage client)."""
