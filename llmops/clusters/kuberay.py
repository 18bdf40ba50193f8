"""KubeRay objects from the config, built without any API call, and checked against the CRDs.

The pod and Ray parts of a body come from the CodeFlare SDK's pure builder
(``codeflare_sdk.ray.rayjobs.config.build_ray_cluster_spec``) fed with a ``ClusterConfiguration``
made from ``cfg.cluster``; llmops adds apiVersion, kind, metadata and the Kueue label. The same
body is shown by ``llmops plan`` and applied by the codeflare backend, and both are validated
strictly against the KubeRay CRD schemas (an unknown field is an error).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any, Optional

from llmops.core.errors import ConfigError, LLMOpsError
from llmops.core.names import RAYCLUSTER_MAX, RAYJOB_MAX

RAY_VERSION = "2.58"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "llmops"}


def _v(x: Any) -> Any:
    return getattr(x, "value", x)


def _plain(x: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x


# ------------------------------------------------------------------------------------------ names
def _name(cfg, max_len: int, what: str) -> str:
    """cluster.name when set (checked: DNS-1035, <= max_len), else derived from the run id."""
    from llmops.core.names import dns1035_problem
    from llmops.core.names import k8s_name

    c = cfg.cluster
    if c.name:
        p = dns1035_problem(str(c.name), max_len)
        if p:
            raise ConfigError([f"cluster.name: {p} (a {what} name)"])
        return str(c.name)
    return k8s_name(str(cfg.run_id), max_len, dns1035=True)


def cluster_name(cfg) -> str:
    """The RayCluster name: cluster.name, else derived from the run id (<= 53, DNS-1035)."""
    return _name(cfg, RAYCLUSTER_MAX, "RayCluster")


def rayjob_name(cfg) -> str:
    """The RayJob name: cluster.name, else derived from the run id (<= 47, DNS-1035)."""
    return _name(cfg, RAYJOB_MAX, "RayJob")


# ------------------------------------------------------------------------------------------ image
_TAG_VERSION = re.compile(r"(?<![0-9.])(\d+\.\d+)(?:\.\d+)?(?![0-9])")


def image_problem(image: Optional[str]) -> Optional[str]:
    """Why `image` cannot run this llmops (Ray 2.58 on both sides), or None."""
    if not image:
        return f"an image is required for cluster=codeflare: a Ray {RAY_VERSION} image, e.g. " \
               f"quay.io/modh/ray:{RAY_VERSION}.0-py311-cu121 (the SDK default may not match)"
    ref = str(image)
    if "@sha256:" in ref:
        return (f"a tagged image naming Ray {RAY_VERSION} (e.g. ray:{RAY_VERSION}.0-py311); "
                "a digest cannot be checked for its Ray version")
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"an image with a tag naming Ray {RAY_VERSION} (e.g. ray:{RAY_VERSION}.0-py311)"
    tag = last.split(":", 1)[1]
    versions = _TAG_VERSION.findall(tag)
    if not versions:
        return f"an image tag naming the Ray version ({RAY_VERSION}); '{tag}' names none"
    if versions[0] != RAY_VERSION:
        return (f"a Ray {RAY_VERSION} image: '{ref}' is Ray {versions[0]}, and a job from Ray "
                f"{RAY_VERSION} cannot run there")
    return None


# ----------------------------------------------------------------------------- ClusterConfiguration
def _gb(n: int) -> str:
    return f"{int(n)}G"


def _import_sdk() -> None:
    """Import codeflare_sdk without letting it reconfigure logging (it calls basicConfig(INFO))."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import codeflare_sdk  # noqa: F401

    root.setLevel(level)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)


def cluster_configuration(cfg, name: str):
    """A codeflare_sdk ClusterConfiguration for `cfg.cluster` (no API call)."""
    _import_sdk()
    from codeflare_sdk.ray.cluster.config import ClusterConfiguration
    from kubernetes.client import V1Toleration

    c = cfg.cluster
    p = image_problem(c.image)
    if p:
        raise ConfigError([f"cluster.image = {c.image!r}: expected {p}"])
    gpu = str(c.gpu_resource)
    tolerations = [V1Toleration(**_snake(_plain(t))) for t in (c.tolerations or [])] or None
    try:
        return ClusterConfiguration(
            name=name,
            namespace=str(c.namespace),
            head_cpu_requests=str(int(c.head_cpus)), head_cpu_limits=str(int(c.head_cpus)),
            head_memory_requests=_gb(c.head_memory_gb), head_memory_limits=_gb(c.head_memory_gb),
            head_extended_resource_requests={gpu: str(int(c.head_gpus))} if c.head_gpus else {},
            head_tolerations=tolerations,
            num_workers=int(c.num_workers),
            worker_cpu_requests=str(int(c.worker_cpus)), worker_cpu_limits=str(int(c.worker_cpus)),
            worker_memory_requests=_gb(c.worker_memory_gb),
            worker_memory_limits=_gb(c.worker_memory_gb),
            worker_extended_resource_requests={gpu: str(int(c.gpus_per_worker))} if c.gpus_per_worker else {},
            worker_tolerations=tolerations,
            envs={str(k): str(v) for k, v in (c.envs or {}).items()},
            image=str(c.image),
            image_pull_secrets=[str(s) for s in c.image_pull_secrets or []],
            labels={str(k): str(v) for k, v in (c.labels or {}).items()},
            local_queue=str(c.local_queue) if c.local_queue else None,
            volumes=[_k8s_obj("V1Volume", _plain(v)) for v in c.volumes or []],
            volume_mounts=[_k8s_obj("V1VolumeMount", _plain(v)) for v in c.volume_mounts or []],
        )
    except (TypeError, ValueError) as e:
        raise ConfigError([f"cluster: the CodeFlare SDK rejects this cluster: {e}"]) from None


def _snake(d: dict) -> dict:
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in d.items()}


def _k8s_obj(cls: str, d: dict):
    """A kubernetes.client model from a camelCase dict (what a YAML manifest holds)."""
    from kubernetes.client import ApiClient

    # the client's own JSON -> model mapping (what it does with an API response)
    try:
        return ApiClient()._ApiClient__deserialize(d, cls)
    except Exception as e:  # pragma: no cover - depends on the kubernetes client's messages
        raise ConfigError([f"cluster.{'volumes' if cls == 'V1Volume' else 'volume_mounts'}: "
                           f"{d!r} is not a {cls[2:]}: {e}"]) from None


def _sanitize(obj: Any) -> Any:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def ray_cluster_spec(cfg, name: str, *, for_job: bool = False) -> dict:
    """The RayCluster `spec` (the SDK's builder, then sanitized to plain JSON types)."""
    _import_sdk()
    from codeflare_sdk.ray.rayjobs.config import build_ray_cluster_spec

    spec = _sanitize(build_ray_cluster_spec(cluster_configuration(cfg, name), name))
    if not for_job:
        # the SDK's builder is written for RayJob clusters (pods never restart); a long-lived
        # RayCluster keeps the Kubernetes default, as the SDK's own RayCluster builder does
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            group["template"]["spec"].pop("restartPolicy", None)
    return spec


def _labels(cfg, name: str, key: str) -> dict:
    labels = {key: name, **MANAGED_BY}
    labels.update({str(k): str(v) for k, v in (cfg.cluster.labels or {}).items()})
    if cfg.cluster.local_queue:
        labels[QUEUE_LABEL] = str(cfg.cluster.local_queue)
    return labels


def raycluster_body(cfg, name: Optional[str] = None) -> dict:
    """The RayCluster object that would be applied."""
    name = name or cluster_name(cfg)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "namespace": str(cfg.cluster.namespace),
                     "labels": _labels(cfg, name, "ray.io/cluster")},
        "spec": ray_cluster_spec(cfg, name),
    }


def rayjob_body(cfg, entrypoint: str, runtime_env: dict, name: Optional[str] = None) -> dict:
    """One RayJob with the cluster inline: deleted after the job, TTL, Kueue suspend."""
    import yaml

    name = name or rayjob_name(cfg)
    c = cfg.cluster
    spec: dict = {
        "entrypoint": entrypoint,
        "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True) if runtime_env else "",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": int(c.ttl_seconds_after_finished),
        "rayClusterSpec": ray_cluster_spec(cfg, name, for_job=True),
    }
    if not spec["runtimeEnvYAML"]:
        spec.pop("runtimeEnvYAML")
    if c.job_timeout_s:
        spec["activeDeadlineSeconds"] = int(c.job_timeout_s)
    if c.local_queue:
        spec["suspend"] = True  # Kueue admits (unsuspends) the job when its quota allows
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": str(c.namespace),
                     "labels": _labels(cfg, name, "ray.io/job-name")},
        "spec": spec,
    }


# ------------------------------------------------------------------------------------- validation
def schema_dir() -> Path:
    from llmops.core import resources

    d = resources.schemas_dir() / "kuberay"
    if not (d / "ray.io_rayclusters.yaml").is_file():
        raise LLMOpsError(f"KubeRay CRD schemas not found in {d} (set $LLMOPS_SCHEMAS_DIR to a folder "
                          "holding kuberay/ray.io_rayclusters.yaml and ray.io_rayjobs.yaml)")
    return d


@functools.lru_cache(maxsize=None)
def _crd_schema(kind: str) -> dict:
    import yaml

    path = schema_dir() / {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}[kind]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large: C parser
    crd = yaml.load(path.read_text(), Loader=loader)
    for v in crd["spec"]["versions"]:
        if v["name"] == "v1":
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise LLMOpsError(f"{path}: no v1 version")


def _strict(s: Any) -> Any:
    """OpenAPI -> JSON Schema with additionalProperties false wherever the CRD lists properties
    and does not say x-kubernetes-preserve-unknown-fields (what the API server's strict field
    validation rejects)."""
    if isinstance(s, dict):
        out = {k: _strict(v) for k, v in s.items() if k != "properties"}
        if "properties" in s:
            out["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
            if not s.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in s:
                out["additionalProperties"] = False
        if s.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(s, list):
        return [_strict(x) for x in s]
    return s


def validate_body(body: dict) -> list[str]:
    """Every schema problem of a RayCluster or RayJob body ('path: message'), empty when valid."""
    import jsonschema

    kind = body.get("kind")
    if kind not in ("RayCluster", "RayJob"):
        return [f"kind: expected RayCluster or RayJob, got {kind!r}"]
    problems = []
    if body.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion: expected ray.io/v1, got {body.get('apiVersion')!r}")
    v = jsonschema.Draft7Validator(_crd_schema(kind))
    for e in sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        problems.append(f"{path}: {e.message}")
    name = body.get("metadata", {}).get("name", "")
    from llmops.core.names import dns1035_problem

    p = dns1035_problem(str(name), RAYCLUSTER_MAX if kind == "RayCluster" else RAYJOB_MAX)
    if p:
        problems.append(f"metadata.name: {p}")
    return problems


def check_body(body: dict) -> dict:
    problems = validate_body(body)
    if problems:
        raise LLMOpsError(f"{body.get('kind')} body does not match the KubeRay CRD "
                          f"({schema_dir()}):\n" + "\n".join(f"  - {p}" for p in problems))
    return body
