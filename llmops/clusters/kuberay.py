"""KubeRay objects from the config, built without any API call, and checked against the CRDs.

The pod and Ray parts of a body come from the CodeFlare SDK's pure builder
(``codeflare_sdk.ray.rayjobs.config.build_ray_cluster_spec``) fed with a ``ClusterConfiguration``
made from ``cfg.cluster``; llmops adds apiVersion, kind, metadata and the Kueue label. The same
body is shown by ``llmops plan`` and applied by the backends (``raycluster.py``, ``rayjob.py``),
and both are validated by ``llmops.k8s.validate`` against the KubeRay CRD schemas (an unknown
field is an error) and the CRD's CEL rules. Secret values of ``cluster.envs`` reach the pods as
``secretKeyRef`` of a Secret (``llmops.k8s.secret_env``), never as literals.

The two backends share :class:`KubeRayBackend`: credentials, the namespace and Kueue checks, the
env Secret, the apply and the delete (``cluster.keep``).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Callable, Optional

from llmops.clusters.ray_jobs import DEFAULT_CALLABLE
from llmops.core.errors import ConfigError, LLMOpsError
from llmops.core.names import RAYCLUSTER_MAX, RAYJOB_MAX

RAY_VERSION = "2.58"
RAY_API = "ray.io/v1"
KUEUE_API = "kueue.x-k8s.io/v1beta1"
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
            envs=env_split(cfg, name).plain,
            image=str(c.image),
            image_pull_secrets=[str(s) for s in c.image_pull_secrets or []],
            labels={str(k): str(v) for k, v in (c.labels or {}).items()},
            local_queue=str(c.local_queue) if c.local_queue else None,
            volumes=[_k8s_obj("V1Volume", _plain(v)) for v in c.volumes or []],
            volume_mounts=[_k8s_obj("V1VolumeMount", _plain(v)) for v in c.volume_mounts or []],
        )
    except (TypeError, ValueError) as e:
        raise ConfigError([f"cluster: the CodeFlare SDK rejects this cluster: {e}"]) from None


def env_split(cfg, name: str):
    """cluster.envs split into literal values and Secret references (``cluster.env_secret``, else
    a Secret ``<name>-env`` that llmops applies and deletes with the cluster)."""
    from llmops.k8s.secret_env import split_env

    c = cfg.cluster
    return split_env(c.envs or {}, "cluster.envs", "cluster.env_secret", f"{name}-env",
                     c.env_secret or None)


def env_secret_body(cfg, name: str, label_key: str) -> Optional[dict]:
    """The Secret llmops makes for the secret values of cluster.envs (placeholders, filled from
    the environment only at apply time), or None."""
    return env_split(cfg, name).secret_body(str(cfg.cluster.namespace),
                                            {label_key: name, **MANAGED_BY})


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
    refs = env_split(cfg, name).refs()
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"] if refs else []:
            container.setdefault("env", []).extend(refs)
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
        "apiVersion": RAY_API,
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
    if c.managed_by:
        spec["managedBy"] = str(c.managed_by)  # e.g. kueue.x-k8s.io/multikueue
    return {
        "apiVersion": RAY_API,
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": str(c.namespace),
                     "labels": _labels(cfg, name, "ray.io/job-name")},
        "spec": spec,
    }


# ------------------------------------------------------------------------------------- validation
def check_body(body: dict) -> list[str]:
    """Raise LLMOpsError when `body` breaks the KubeRay CRD (schema or CEL rules); return the
    notes on the CRD rules that were not evaluated (transition rules)."""
    from llmops.k8s import validate

    return validate.validate_objects([body], what=f"the {body.get('kind')} body")


# ---------------------------------------------------------------------- shared by both backends
class KubeRayBackend:
    """What the RayCluster and the RayJob backends share: credentials, checks, the env Secret,
    apply, and delete at the end (unless cluster.keep). Subclasses set KIND, LABEL and `name`."""

    KIND = ""
    LABEL = ""

    def __init__(self, cfg, *, kube=None, train_callable: str = DEFAULT_CALLABLE,
                 extra_py_modules: list[str] = (), echo: Callable[[str], None] = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.kube = kube
        self.train_callable = train_callable
        self.extra_py_modules = list(extra_py_modules)
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.sleep = sleep
        self.name: Optional[str] = None
        self.created = False      # llmops applied the object: llmops deletes it
        self.secret: Optional[str] = None  # the env Secret llmops applied

    @property
    def namespace(self) -> str:
        return str(self.cfg.cluster.namespace)

    @property
    def plural(self) -> str:
        return self.KIND.lower() + "s"

    def entrypoint(self) -> str:
        return f"{self.cfg.cluster.python or 'python'} -m llmops.clusters.job_entry"

    def headers(self) -> dict:
        headers = dict(self.kube.auth_header())
        headers.update({str(k): str(v) for k, v in (self.cfg.cluster.headers or {}).items()})
        return headers

    def plan_objects(self, cfg, body: dict) -> dict:
        """The plan of `body` and its env Secret (placeholders only), checked against the CRD."""
        notes = check_body(body)
        name = body["metadata"]["name"]
        secret = env_secret_body(cfg, name, self.LABEL)
        return {"mode": str(_v(cfg.cluster.mode)), "namespace": self.namespace, "name": name,
                "deletes_after_run": not cfg.cluster.keep,
                "objects": ([secret] if secret else []) + [body],
                **({"not_checked": notes} if notes else {})}

    def connect(self) -> None:
        """Credentials, then the namespace and the Kueue LocalQueue exist."""
        c = self.cfg.cluster
        if self.kube is None:
            from llmops.k8s.client import connect

            self.kube = connect(self.cfg)
        self.kube.check_namespace(self.namespace, "cluster.namespace")
        if c.local_queue:
            q = str(c.local_queue)
            if self.kube.get(KUEUE_API, "LocalQueue", self.namespace, q) is None:
                raise LLMOpsError(f"cluster.local_queue = {q!r}: no Kueue LocalQueue of that name "
                                  f"in namespace {self.namespace!r} (kubectl get localqueues -n "
                                  f"{self.namespace})")
        split = env_split(self.cfg, self.name)
        if split.secret and split.existing and \
                self.kube.get("v1", "Secret", self.namespace, split.secret_name) is None:
            raise LLMOpsError(f"cluster.env_secret = {split.secret_name!r}: no such Secret in "
                              f"namespace {self.namespace!r}; create it (keys: "
                              f"{', '.join(split.secret)}) or unset cluster.env_secret")

    def apply(self, body: dict) -> None:
        """Apply the env Secret (filled from the environment, in memory), then `body`."""
        from llmops.k8s.secret_env import fill

        timeout = int(self.cfg.cluster.apply_timeout_s)
        check_body(body)
        secret = env_secret_body(self.cfg, self.name, self.LABEL)
        filled = secret and fill(secret, " (cluster.envs takes them from the environment), or "
                                         "name an existing Secret in cluster.env_secret")
        self.created = True  # from here on, a failure still deletes
        if filled:
            self.secret = secret["metadata"]["name"]
            self.kube.apply(filled, timeout)
        self.kube.apply(body, timeout)
        self.echo(f"[llmops] applied {self.KIND} {self.name} in {self.namespace}")

    def down(self) -> None:
        if not self.created:
            return
        if self.cfg.cluster.keep:
            self.echo(f"[llmops] cluster.keep=true: {self.plural}/{self.name} stays in "
                      f"{self.namespace}; delete it with `kubectl delete {self.plural} {self.name} "
                      f"-n {self.namespace}`")
            return
        for api, kind, name in [(RAY_API, self.KIND, self.name), ("v1", "Secret", self.secret)]:
            if not name:
                continue
            try:
                if self.kube.delete(api, kind, self.namespace, name):
                    self.echo(f"[llmops] deleted {kind} {name} in {self.namespace}")
            except LLMOpsError as e:
                self.echo(f"[llmops] could not delete {kind} {name}: {e}")
        self.created, self.secret = False, None

    def __exit__(self, *exc) -> None:
        self.down()
