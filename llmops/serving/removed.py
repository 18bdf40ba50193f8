"""Serving options today's OpenShift AI (Open Data Hub) removed: one table, one warning each.

The 2023 path keeps working (Caikit+TGIS and TGIS still deploy as custom ServingRuntimes that
llmops ships; KServe still takes a Serverless annotation where Knative is installed): a recipe
that picks one of these gets one line, starting ``warning:``, at ``llmops validate``, ``plan``
and ``run``, naming what upstream removed and the override to use instead. Nothing here stops a
run. Sources: REFERENCE.md section 8 (odh-model-controller pull requests).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class Removed:
    setting: str                          # the override that picks the option, as a user types it
    picked: Callable[[DictConfig], bool]  # whether a composed config picks it
    upstream: str                         # what upstream did, and when
    still: str                            # what keeps working here
    instead: str                          # today's override


def _get(cfg: DictConfig, key: str) -> Any:
    v = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    return getattr(v, "value", v)


def _modelmesh(cfg: DictConfig) -> bool:
    labels = _get(cfg, "serving.labels") or {}
    return str(labels.get("modelmesh-enabled", "")).lower() == "true"


REMOVED = (
    Removed("serving=caikit_tgis", lambda c: _get(c, "serving.kind") == "caikit_tgis",
            "Open Data Hub removed the Caikit-TGIS runtime template in 2025-10 (odh-model-controller #579)",
            "it still deploys as a custom ServingRuntime",
            "today's path is serving=vllm (or serving=llmisvc)"),
    Removed("serving=tgis", lambda c: _get(c, "serving.kind") == "tgis",
            "Open Data Hub deprecated TGIS standalone in 2025-03 (odh-model-controller #399) and ships no "
            "template for it",
            "it still deploys as a custom ServingRuntime",
            "today's path is serving=vllm (or serving=llmisvc)"),
    Removed("serving.deployment_mode=Serverless",
            lambda c: _get(c, "serving.kind") not in (None, "none")
            and _get(c, "serving.deployment_mode") == "Serverless",
            "Open Data Hub removed Serverless (Knative) and Service Mesh support in 2025-10 "
            "(odh-model-controller #554); KServe there defaults to RawDeployment",
            "the Knative annotations still render for a cluster that has Knative",
            "use serving.deployment_mode=RawDeployment"),
    Removed("serving.labels.modelmesh-enabled=true", _modelmesh,
            "Open Data Hub removed ModelMesh (odh-model-controller #546)",
            "the label is still set, but nothing serves it",
            "today's path is single-model serving: drop the label (serving=vllm or serving=llmisvc)"),
)


def warnings(cfg: DictConfig) -> list[str]:
    """One line per removed option the composed config picks, each starting with 'warning:'."""
    return [f"warning: {r.setting}: {r.upstream}; {r.still}; {r.instead}" for r in REMOVED if r.picked(cfg)]


def warn(cfg: DictConfig, file: TextIO = None, prefix: str = "") -> list[str]:
    """Print the warnings (to stderr unless `file`); returns them."""
    lines = warnings(cfg)
    for line in lines:
        print(line.replace("warning: ", f"warning: {prefix}", 1), file=file or sys.stderr)
    return lines
