"""Example domains, one folder each: ``tools.py`` exposing ``TOOLS`` (plain functions with
``Annotated`` parameter descriptions that return JSON text) and, for ``model=sim``, a
``sim_profile.yaml`` beside it telling the simulator the domain's behaviours, wording and
tool-result fields (docs/simulator.md). Everything else about a domain is configuration.
A user's domain needs no folder here: any importable module and config folder will do."""
