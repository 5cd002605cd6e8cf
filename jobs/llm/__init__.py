"""Model endpoints, and compat: every patch of a dependency, with the version it is for."""
