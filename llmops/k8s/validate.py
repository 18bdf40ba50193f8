"""Validate Kubernetes objects strictly, offline: what the API server would refuse on create.

Custom kinds against the CRDs llmops ships (``schemas/``: KServe, KubeRay, Kubeflow Trainer;
copies of ../shared/schemas) or those in ``$LLMOPS_SCHEMAS_DIR``, at the version the object's
apiVersion names, closed the way the API server closes them with ``fieldValidation=Strict``
(:func:`closed`). Then the CRD version's CEL rules (``x-kubernetes-validations``, evaluated by
:mod:`llmops.k8s.cel`); transition rules (``oldSelf``) apply only to updates and are skipped, and
said so in the notes :func:`validate_objects` returns (and a debug log line). Core kinds
(Namespace, Secret, ServiceAccount) with ``kubernetes-validate`` in strict mode. Metadata (names,
labels, annotations) is checked here, since a CRD schema leaves it open.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmops.core.errors import LLMOpsError
from llmops.core.names import (DNS1035_LABEL, DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_VALUE,
                               QUALIFIED_NAME, RAYCLUSTER_MAX, RAYJOB_MAX, dns1035_problem)

log = logging.getLogger("llmops.k8s")

SCHEMAS_ENV = "LLMOPS_SCHEMAS_DIR"
K8S_VERSION = "1.32"  # OpenShift 4.19; core-kind schemas from kubernetes-validate
CACHE_FORMAT = 2  # bump when what the cache holds changes

_FILES = {  # CRD file under schemas/ -> (group, kind, served versions)
    "kserve/serving.kserve.io_inferenceservices.yaml": ("serving.kserve.io", "InferenceService", ("v1beta1",)),
    "kserve/serving.kserve.io_servingruntimes.yaml": ("serving.kserve.io", "ServingRuntime", ("v1alpha1",)),
    "kserve/serving.kserve.io_clusterservingruntimes.yaml":
        ("serving.kserve.io", "ClusterServingRuntime", ("v1alpha1",)),
    "kserve/serving.kserve.io_llminferenceservices.yaml":
        ("serving.kserve.io", "LLMInferenceService", ("v1alpha2", "v1alpha1")),
    "kserve/serving.kserve.io_llminferenceserviceconfigs.yaml":
        ("serving.kserve.io", "LLMInferenceServiceConfig", ("v1alpha2", "v1alpha1")),
    "kuberay/ray.io_rayclusters.yaml": ("ray.io", "RayCluster", ("v1", "v1alpha1")),
    "kuberay/ray.io_rayjobs.yaml": ("ray.io", "RayJob", ("v1", "v1alpha1")),
    "kubeflow/trainer.kubeflow.org_trainjobs.yaml": ("trainer.kubeflow.org", "TrainJob", ("v1alpha1",)),
    "kubeflow/trainer.kubeflow.org_trainingruntimes.yaml":
        ("trainer.kubeflow.org", "TrainingRuntime", ("v1alpha1",)),
    "kubeflow/trainer.kubeflow.org_clustertrainingruntimes.yaml":
        ("trainer.kubeflow.org", "ClusterTrainingRuntime", ("v1alpha1",)),
}
CRDS = {(f"{g}/{v}", kind): rel for rel, (g, kind, versions) in _FILES.items() for v in versions}
CORE = {("v1", "Secret"), ("v1", "ServiceAccount"), ("v1", "Namespace")}
NAME_MAX_1035 = {"RayCluster": RAYCLUSTER_MAX, "RayJob": RAYJOB_MAX}  # KubeRay's own limits


def schemas_dir() -> Path:
    from llmops.core import resources

    d = resources.schemas_dir()
    if not (d / "kserve").is_dir():
        where = f"${SCHEMAS_ENV}={d}" if os.environ.get(SCHEMAS_ENV) else str(d)
        raise LLMOpsError(f"CRD schemas not found: {where} has no kserve/ folder; the CRDs "
                          "are needed to validate manifests")
    return d


def closed(schema: Any) -> Any:
    """A copy of a CRD's OpenAPI v3 schema as JSON Schema, closed the way strict field validation
    closes it: every object that lists `properties` rejects other keys unless it says
    `x-kubernetes-preserve-unknown-fields`; `x-kubernetes-int-or-string` is integer or string."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _cache_dir() -> Path:
    env = os.environ.get("LLMOPS_SCHEMA_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmops" / "crd-schemas"


def crd_version_schema(path: Path, version: str) -> dict:
    """The openAPIV3Schema of one version of the CRD in `path`, as the file has it. Parsing the
    2 MB InferenceService CRD takes seconds, so the extracted schema is cached as JSON keyed by
    the file's sha256 and the version."""
    import hashlib
    import json

    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:20]
    cached = _cache_dir() / f"{path.stem}-{version}-{digest}-f{CACHE_FORMAT}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(raw, Loader=loader)
    found = [v for v in crd["spec"]["versions"] if v.get("name") == version]
    if not found:
        raise LLMOpsError(f"{path}: the CRD has no version {version!r}")
    schema = found[0]["schema"]["openAPIV3Schema"]
    try:
        from llmops.core.io import atomic_write_text

        atomic_write_text(cached, json.dumps(schema))
    except OSError:
        pass  # a read-only home: no cache, still correct
    return schema


@lru_cache(maxsize=None)
def _crd(api: str, kind: str, root: str):
    """(JSON-schema validator of the closed schema, the schema, whether it has CEL rules)."""
    import jsonschema

    from llmops.k8s import cel

    path = Path(root) / CRDS[(api, kind)]
    if not path.is_file():
        raise LLMOpsError(f"CRD schema file missing: {path}")
    schema = crd_version_schema(path, api.rpartition("/")[2])
    return jsonschema.Draft7Validator(closed(copy.deepcopy(schema))), schema, bool(cel.rule_sites(schema))


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
    elif kind in NAME_MAX_1035:
        p = dns1035_problem(name, NAME_MAX_1035[kind])
        if p:
            probs.append(f"metadata.name: {p}")
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


def check(obj: dict, *, cel: bool = True) -> tuple[list[str], list[str]]:
    """(problems, notes) of one object: problems as 'Kind/name: path: message'; notes on the CRD
    rules that were not evaluated (transition rules, rules this offline evaluator lacks).
    `cel=False`: schema and metadata only, the CRD's CEL rules are not evaluated (and a note
    says so when the CRD has any)."""
    if not isinstance(obj, dict):
        return [f"not an object: {type(obj).__name__}"], []
    api, kind = obj.get("apiVersion"), obj.get("kind")
    label = f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"
    out = [f"{label}: {p}" for p in _meta_problems(obj)]
    notes: list[str] = []
    if (api, kind) in CRDS:
        v, schema, has_rules = _crd(api, kind, str(schemas_dir()))
        errors = sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        out += [f"{label}: {_path(e)}: {e.message}" for e in errors]
        if has_rules and not cel:
            notes.append(f"{label}: CRD rules (CEL) not checked: validation asked without them")
        elif has_rules and not errors:  # CEL sees the object only once it decodes
            from llmops.k8s import cel as cel_rules

            rep = cel_rules.cel_report(obj, schema)
            out += [f"{label}: {p}" for p in rep.problems]
            notes += [f"{label}: {path}: rule {rule!r} not checked: {why}"
                      for path, rule, why in rep.skipped]
            notes += [f"{label}: rule not checked offline: {u}" for u in rep.unsupported]
    elif (api, kind) in CORE:
        for e in sorted(_core_validator(api, kind).iter_errors(obj),
                        key=lambda e: list(map(str, e.absolute_path))):
            out.append(f"{label}: {_path(e)}: {e.message}")
    else:
        out.append(f"{label}: no schema for apiVersion {api!r} kind {kind!r}")
    return out, notes


def problems(obj: dict, *, cel: bool = True) -> list[str]:
    """Every problem with one object, as 'Kind/name: path: message'."""
    return check(obj, cel=cel)[0]


def validate_objects(objects: list[dict], what: str = "the rendered manifests", *,
                     cel: bool = True) -> list[str]:
    """Raise LLMOpsError listing every problem of every object (CRD schema, CEL rules, metadata);
    return the notes on rules that were not evaluated (also logged at debug level). `cel=False`
    skips the CRDs' CEL rules (schema and metadata only: what a plain JSON-schema tool checks)."""
    probs, notes = [], []
    for o in objects:
        p, n = check(o, cel=cel)
        probs += p
        notes += n
    for n in notes:
        log.debug("validate: %s", n)
    if probs:
        n = len(probs)
        raise LLMOpsError(f"{n} problem{'s' if n != 1 else ''} in {what} "
                          "(strict schema validation and CRD rules):\n"
                          + "\n".join(f"  - {p}" for p in probs))
    return notes
