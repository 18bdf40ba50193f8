"""Kubernetes names derived from recipe and run ids: valid, bounded, deterministic."""

from __future__ import annotations

import hashlib
import re


def k8s_name(base: str, max_len: int = 63, *, dns1035: bool = True) -> str:
    """Lower-case DNS label made from `base`, at most `max_len` characters.

    Anything that is not [a-z0-9-] becomes '-'. A name that had to be shortened keeps its head
    and ends in '-' plus 6 hex digits of the sha256 of the original, so two long run ids that
    share a prefix still get different names, and the same input always gets the same name.
    DNS-1035 (RayCluster, RayJob, Service) also needs a leading letter: 'x-' is prepended when
    the name would start with a digit.
    """
    if not base:
        raise ValueError("cannot derive a Kubernetes name from an empty string")
    name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if dns1035 and (not name or not name[0].isalpha()):
        name = "x-" + name
    if not name.strip("-x"):
        raise ValueError(f"cannot derive a Kubernetes name from {base!r}")
    if len(name) > max_len or name != base:
        digest = hashlib.sha256(base.encode()).hexdigest()[:6]
        if len(name) > max_len:
            name = name[: max_len - 7].rstrip("-") + "-" + digest
    return name.rstrip("-")
