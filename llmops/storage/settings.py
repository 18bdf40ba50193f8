"""Settings dataclasses of the stores, read from the config's `storage` section."""

from __future__ import annotations

from typing import Any


def section_values(cls: type, storage: Any) -> dict:
    """The values of `storage` (a DictConfig or a dict) for the fields of dataclass `cls` that are
    set (not None); the rest keep the dataclass defaults."""
    kw = {}
    for n in cls.__dataclass_fields__:
        try:
            v = storage[n] if n in storage else None
        except Exception:
            v = None
        if v is not None:
            kw[n] = v
    return kw
