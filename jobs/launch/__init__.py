"""Where stages run: local processes, Kubernetes Jobs and their manifests, sweeps, local servers."""
