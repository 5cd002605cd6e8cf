"""Domain tools modules. A domain is one module here that exposes ``TOOLS``: plain functions
with ``Annotated`` parameter descriptions that return JSON text (see jobs/sim/roles.py for
the fields the simulator reads). Everything else about a domain is configuration."""
