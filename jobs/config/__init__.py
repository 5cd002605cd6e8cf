"""Hydra glue: composing configs, the stage entrypoint wrapper, config schemas."""
