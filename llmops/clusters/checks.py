"""Checks of the `cluster` config section: cluster=ray needs a dashboard URL; cluster=codeflare a
Ray 2.58 image and valid names."""

from __future__ import annotations

import re

from llmops.clusters.kuberay import image_problem
from llmops.config.validate import Checker
from llmops.core.names import RAYCLUSTER_MAX, RAYJOB_MAX, dns1035_problem, dns1123_problem, k8s_name


def check(c: Checker) -> None:
    """cluster=ray needs a dashboard URL; cluster=codeflare a Ray 2.58 image and valid names."""
    kind, mode = str(c.value("cluster.kind")), str(c.value("cluster.mode"))
    c.positive_ints("cluster.num_workers", "cluster.cpus_per_worker")
    c.nonnegative_ints("cluster.gpus_per_worker", "cluster.job_timeout_s")
    c.check("cluster.poll_interval_s", lambda v: v > 0, "a period in seconds > 0")
    c.check("cluster.auth", lambda v: v in ("auto", "kubeconfig", "incluster", "token"),
            "one of auto, kubeconfig, incluster, token")
    if str(c.value("cluster.trainer")) == "process":  # auto picks process only where it fits
        if kind != "local":
            c.add("cluster.trainer", f"process trains in the llmops process: cluster=local only, not {kind}")
        c.check("cluster.num_workers", lambda v: v == 1,
                "1 with cluster.trainer=process (one worker in this process; more need trainer=ray)")
        c.check("training.max_failures", lambda v: v == 0,
                "0 with cluster.trainer=process (restarts of a dead worker need trainer=ray)")
    url = re.compile(r"^https?://[^/\s:]+(:\d+)?(/.*)?$")
    if kind == "ray":
        addr = c.get("cluster.address")
        if not addr:
            c.add("cluster.address", "the Ray dashboard URL for cluster=ray, e.g. http://127.0.0.1:8265")
        elif not url.match(str(addr)):
            c.add("cluster.address", "an http(s)://host:port URL of the Ray dashboard (Jobs API)")
    if kind == "kubeflow":
        check_kubeflow(c, mode)
    elif kind == "codeflare" and mode not in ("raycluster", "rayjob"):
        c.add("cluster.mode", f"raycluster or rayjob with cluster=codeflare, not {mode}")
    if kind != "codeflare":
        return
    p = image_problem(c.get("cluster.image"))
    if p:
        c.add("cluster.image", f"expected {p}")
    p = dns1123_problem(str(c.get("cluster.namespace")))
    if p:
        c.add("cluster.namespace", p)
    limit, what = (RAYJOB_MAX, "RayJob") if mode == "rayjob" else (RAYCLUSTER_MAX, "RayCluster")
    name = c.get("cluster.name")
    if name is not None:
        p = dns1035_problem(str(name), limit)
        if p:
            c.add("cluster.name", f"{p} (a {what} name: DNS-1035, at most {limit} characters)")
    else:
        try:
            k8s_name(str(c.get("run_id")), limit, dns1035=True)
        except ValueError as e:
            c.add("run_id", f"{e} (set cluster.name)")
    q = c.get("cluster.local_queue")
    if q is not None:
        p = dns1123_problem(str(q))
        if p:
            c.add("cluster.local_queue", p)
    for key in ("cluster.head_cpus", "cluster.head_memory_gb", "cluster.worker_cpus",
                "cluster.worker_memory_gb", "cluster.apply_timeout_s", "cluster.ready_timeout_s"):
        c.check(key, lambda v: isinstance(v, int) and v > 0, "a positive integer")
    for key in ("cluster.head_gpus", "cluster.ttl_seconds_after_finished"):
        c.check(key, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    cpus, wcpus = c.get("cluster.cpus_per_worker"), c.get("cluster.worker_cpus")
    if isinstance(cpus, int) and isinstance(wcpus, int) and cpus > wcpus:
        c.add("cluster.cpus_per_worker", f"at most cluster.worker_cpus ({wcpus}): a Ray Train worker "
              "cannot ask for more CPUs than its pod has")
    if mode == "rayjob" and c.get("cluster.pass_secrets"):
        c.add("cluster.pass_secrets", "false with cluster.mode=rayjob: the RayJob object would store "
              "the secret values; give the pods a Secret-backed environment instead")
    _check_envs(c)
    for key in ("cluster.volumes", "cluster.volume_mounts", "cluster.tolerations"):
        for i, item in enumerate(c.get(key) or []):
            if not hasattr(item, "keys"):
                c.add(key, f"a list of mappings (item {i} is not one)")
            elif key != "cluster.tolerations" and "name" not in item:
                c.add(key, f"every item with a name (item {i} has none)")


def _check_envs(c: Checker) -> None:
    """A secret value of cluster.envs must come from the environment or cluster.env_secret."""
    from llmops.core import secrets
    from llmops.core.errors import ConfigError
    from llmops.k8s.secret_env import split_env

    envs = c.cfg.cluster.get("envs") or {}
    try:
        split_env(envs, "cluster.envs", "cluster.env_secret", "-", c.get("cluster.env_secret"))
    except ConfigError as e:
        for p in e.problems:  # not c.add: it would print the value, and the value is a secret
            key, _, msg = p.partition(": ")
            origin = c.source.origin(key) if c.source is not None else "config"
            c.problems.append(secrets.scrub(f"{key} (from {origin}): {msg}"))
    except Exception:
        pass  # an unresolvable value: reported by the config's own resolution check


def check_kubeflow(c: Checker, mode: str) -> None:
    """cluster=kubeflow: mode cluster|local, one node locally, names, resources, Secret refs."""
    from llmops.clusters.kubeflow import TRAINJOB_MAX

    if mode not in ("cluster", "local"):
        c.add("cluster.mode", f"cluster or local with cluster=kubeflow, not {mode}")
    c.positive_ints("cluster.nodes", "cluster.node_cpus", "cluster.node_memory_gb")
    c.nonnegative_ints("cluster.node_gpus", "cluster.ready_timeout_s")
    nodes = c.get("cluster.nodes")
    if mode == "local" and isinstance(nodes, int) and nodes != 1:
        c.add("cluster.nodes", f"1 with cluster.mode=local (the SDK's local process backend runs "
              f"one node), not {nodes}; use cluster.mode=cluster for more")
    if mode == "local" and str(c.get("cluster.runtime")) != "torch-distributed":
        c.add("cluster.runtime", "torch-distributed with cluster.mode=local (the only runtime of "
              "the SDK's local process backend)")
    if not str(c.get("cluster.runtime") or "").strip():
        c.add("cluster.runtime", "a TrainingRuntime or ClusterTrainingRuntime name, e.g. torch-distributed")
    for key in ("cluster.namespace", "cluster.local_queue"):
        v = c.get(key)
        if v is not None and dns1123_problem(str(v)):
            c.add(key, dns1123_problem(str(v)))
    name = c.get("cluster.name")
    if name is not None:
        p = dns1035_problem(str(name), TRAINJOB_MAX)
        if p:
            c.add("cluster.name", f"{p} (a TrainJob name: DNS-1035, at most {TRAINJOB_MAX} characters)")
    env_name = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
    for i, item in enumerate(c.get("cluster.env_from") or []):
        env, _, ref = str(item).partition("=")
        secret, _, key = ref.partition("/")
        if not env_name.match(env) or not key or "/" in key or dns1123_problem(secret, 253):
            c.add(f"cluster.env_from.{i}", "'ENV=secret-name/key' (an environment variable from "
                  "a key of a Secret in cluster.namespace)")
    from llmops.core import secrets

    for env in (c.get("cluster.envs") or {}) if mode == "cluster" else ():
        if secrets.is_secret_key(str(env)):  # its value is not repeated in the message
            c.problems.append(f"cluster.envs.{env}: a secret would be stored in the TrainJob "
                              f"object; give it as cluster.env_from=['{env}=secret-name/key'] "
                              "(a Kubernetes Secret reference)")
