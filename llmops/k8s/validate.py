"""Validate rendered objects strictly, offline.

KServe kinds against the CRDs llmops ships (``schemas/kserve``, copies of ../shared/schemas) or
those in ``$LLMOPS_SCHEMAS_DIR``, closed the way the API server closes them with
``fieldValidation=Strict``: every object schema that lists ``properties`` rejects other keys
unless it says ``x-kubernetes-preserve-unknown-fields``. Core kinds (Namespace, Secret,
ServiceAccount) with ``kubernetes-validate`` in strict mode. Metadata (names, labels,
annotations) is checked here, since a CRD schema leaves it open.
"""

from __future__ import annotations

import copy
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmops.core.errors import LLMOpsError
from llmops.core.names import (DNS1035_LABEL, DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_VALUE,
                               QUALIFIED_NAME)

SCHEMAS_ENV = "LLMOPS_SCHEMAS_DIR"
K8S_VERSION = "1.32"  # OpenShift 4.19; core-kind schemas from kubernetes-validate

CRDS = {  # (apiVersion, kind) -> CRD file under kserve/
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve/serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "kserve/serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"):
        "kserve/serving.kserve.io_clusterservingruntimes.yaml",
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "kubeflow/trainer.kubeflow.org_trainjobs.yaml",
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"):
        "kubeflow/trainer.kubeflow.org_trainingruntimes.yaml",
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"):
        "kubeflow/trainer.kubeflow.org_clustertrainingruntimes.yaml",
}
CORE = {("v1", "Secret"), ("v1", "ServiceAccount"), ("v1", "Namespace")}



def schemas_dir() -> Path:
    from llmops.core import resources

    d = resources.schemas_dir()
    if not (d / "kserve").is_dir():
        where = f"${SCHEMAS_ENV}={d}" if os.environ.get(SCHEMAS_ENV) else str(d)
        raise LLMOpsError(f"CRD schemas not found: {where} has no kserve/ folder; the KServe CRDs "
                          "are needed to validate serving manifests")
    return d


def _closed(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object listing properties is closed."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _cache_dir() -> Path:
    env = os.environ.get("LLMOPS_SCHEMA_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmops" / "crd-schemas"


def _load_crd_schema(path: Path) -> dict:
    """The served schema of a CRD file, closed. Parsing the 2 MB InferenceService CRD takes
    seconds, so the extracted schema is cached as JSON keyed by the file's sha256."""
    import hashlib
    import json

    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:20]
    cached = _cache_dir() / f"{path.stem}-{digest}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(raw, Loader=loader)
    versions = crd["spec"]["versions"]
    v = next((v for v in versions if v.get("storage")), versions[0])
    schema = _closed(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    try:
        from llmops.core.io import atomic_write_text

        atomic_write_text(cached, json.dumps(schema))
    except OSError:
        pass  # a read-only home: no cache, still correct
    return schema


@lru_cache(maxsize=None)
def _crd_validator(rel: str, root: str):
    import jsonschema

    path = Path(root) / rel
    if not path.is_file():
        raise LLMOpsError(f"CRD schema file missing: {path}")
    return jsonschema.Draft7Validator(_load_crd_schema(path))


@lru_cache(maxsize=None)
def _core_validator(api: str, kind: str):
    """kubernetes-validate's strict schema for a core kind, loaded once (its own `validate()`
    re-reads the schema files on every call)."""
    import jsonschema
    import kubernetes_validate.utils as kv
    from referencing import Registry, Resource

    version = [v for v in kv.all_versions() if kv.major_minor(v) <= K8S_VERSION][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api)
    schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    defs = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _path(err) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path]
    s = ""
    for p in parts:
        s += p if p.startswith("[") else (("." if s else "") + p)
    return s or "(root)"


def _meta_problems(obj: dict) -> list[str]:
    probs = []
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    rx, rule = (DNS1035_LABEL, "DNS-1035 (lower-case letters, digits, '-', starting with a letter)") \
        if kind == "InferenceService" else (DNS1123_LABEL, "DNS-1123 (lower-case letters, digits, '-')")
    if kind == "Secret":
        rx, rule = DNS1123_SUBDOMAIN, "a DNS-1123 subdomain"
    if not isinstance(name, str) or not name:
        probs.append("metadata.name: missing")
    elif len(name) > 63 or not rx.match(name):
        probs.append(f"metadata.name: {name!r} is not {rule}, at most 63 characters")
    ns = meta.get("namespace")
    if kind != "Namespace" and ns is not None and (len(str(ns)) > 63 or not DNS1123_LABEL.match(str(ns))):
        probs.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for section in ("labels", "annotations"):
        for k, v in (meta.get(section) or {}).items():
            prefix, _, nm = str(k).rpartition("/")
            if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or \
                    len(nm) > 63 or not QUALIFIED_NAME.match(nm):
                probs.append(f"metadata.{section}: key {k!r} is not a qualified name")
            if not isinstance(v, str):
                probs.append(f"metadata.{section}.{k}: value must be a string, got {type(v).__name__}")
            elif section == "labels" and (len(v) > 63 or not LABEL_VALUE.match(v)):
                probs.append(f"metadata.labels.{k}: {v!r} is not a valid label value")
    return probs


def problems(obj: dict) -> list[str]:
    """Every problem with one object, as 'Kind/name: path: message'."""
    if not isinstance(obj, dict):
        return [f"not an object: {type(obj).__name__}"]
    api, kind = obj.get("apiVersion"), obj.get("kind")
    label = f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"
    out = [f"{label}: {p}" for p in _meta_problems(obj)]
    if (api, kind) in CRDS:
        v = _crd_validator(CRDS[(api, kind)], str(schemas_dir()))
        for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            out.append(f"{label}: {_path(e)}: {e.message}")
    elif (api, kind) in CORE:
        for e in sorted(_core_validator(api, kind).iter_errors(obj),
                        key=lambda e: list(map(str, e.absolute_path))):
            out.append(f"{label}: {_path(e)}: {e.message}")
    else:
        out.append(f"{label}: no schema for apiVersion {api!r} kind {kind!r}")
    return out


def validate_objects(objects: list[dict]) -> None:
    """Raise LLMOpsError listing every problem of every object."""
    probs = [p for o in objects for p in problems(o)]
    if probs:
        n = len(probs)
        raise LLMOpsError(f"{n} problem{'s' if n != 1 else ''} in the rendered manifests "
                          "(strict schema validation):\n" + "\n".join(f"  - {p}" for p in probs))
