"""Where stages run: local processes, Kubernetes Jobs and their manifests, sweeps (the servers they talk to start in jobs/core/servers.py)."""
