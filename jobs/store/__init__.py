"""Everything that talks to MLflow (runs, tags, prompts, traces) or reads input files (local or S3)."""
