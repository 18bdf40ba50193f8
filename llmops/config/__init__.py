"""Config: schemas (dataclasses), lint and compose (Hydra), recipe sources, the lock format, and
the checks that need no domain knowledge. Domain packages check their own sections."""
