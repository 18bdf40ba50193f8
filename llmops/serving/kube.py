"""Serving on a cluster: apply order, wait for Ready, delete by the run's labels.

The calls go through ``llmops.k8s.client`` (one auth path: ``cluster.auth``, also with
``cluster.auth=token``; server-side apply; errors naming the object and the server's message).
Apply is server-side apply of Namespace, Secret(s), ServiceAccount, ServingRuntime and
InferenceService (or the LLMInferenceService), in that order: a second apply of the same objects changes nothing, a new run's
objects update them in place. Secrets' ``${env:NAME}`` placeholders are filled from the
environment here, in memory only, before anything is applied. Wait polls the InferenceService
until ``Ready`` with a current ``observedGeneration`` and fails fast with KServe's reason. Delete
removes, by label selector, exactly what one run applied (never the Namespace).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from llmops.core.errors import LLMOpsError
from llmops.k8s.client import Kube, connect

log = logging.getLogger("llmops")

KSERVE = "serving.kserve.io/v1beta1"
RUNTIME_API = "serving.kserve.io/v1alpha1"
LLMISVC_API = "serving.kserve.io/v1alpha2"
SERVED_API = {"InferenceService": KSERVE, "LLMInferenceService": LLMISVC_API}
# the pods behind a served object, by the labels its controller puts on them
POD_SELECTOR = {"InferenceService": "serving.kserve.io/inferenceservice={name}",
                "LLMInferenceService": "app.kubernetes.io/name={name},"
                                       "app.kubernetes.io/component=llminferenceservice-workload"}
# LLMInferenceService: PresetsCombined=False (a baseRef missing or not mergeable) stops the
# controller until the spec changes; it is not part of the Ready rollup
BLOCKING_CONDITIONS = {"PresetsCombined"}
IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}
# (LLMInferenceService last: a cluster without its CRD answers 404, which is skipped)
DELETE_ORDER = [(KSERVE, "InferenceService"), (RUNTIME_API, "ServingRuntime"),
                ("v1", "ServiceAccount"), ("v1", "Secret"), (LLMISVC_API, "LLMInferenceService")]
FILL_HINT = (", or name an existing Secret: serving.existing_secret=true serving.secret_name=NAME "
             "(S3 credentials), serving.env_secret=NAME (serving.env)")


def _kube(cfg=None, kube: Optional[Kube] = None) -> Kube:
    """The given client, or one with the config's credentials (defaults without a config)."""
    if kube is not None:
        return kube
    if cfg is not None:
        return connect(cfg)
    from llmops.k8s.client import Auth, api_client

    auth = Auth()
    return Kube(api_client(auth), auth)


# ----------------------------------------------------------------------------------------- apply
def apply_objects(objects: list[dict], cfg, kube: Optional[Kube] = None) -> list[dict]:
    """Server-side apply every object in order; returns [{kind, name}]."""
    from llmops.k8s.secret_env import fill, has_placeholders

    kube = _kube(cfg, kube)
    s, ns = cfg.serving, str(cfg.serving.namespace)
    for key, name, what, fix in (
            ("serving.secret_name", s.secret_name if s.existing_secret else None,
             "(serving.existing_secret=true)", "set existing_secret=false"),
            ("serving.env_secret", s.env_secret, "(for the secret values of serving.env)",
             "unset it so that llmops makes one")):
        if name and kube.get("v1", "Secret", ns, str(name)) is None:
            raise LLMOpsError(f"{key} = {str(name)!r} {what}: no such Secret in namespace {ns!r}; "
                              f"create it or {fix}")
    # fill every Secret first: a missing value stops the apply before anything reaches the cluster
    ready = [fill(o, FILL_HINT) if o.get("kind") == "Secret" and has_placeholders(o) else o
             for o in objects]
    done = []
    for o in ready:
        kube.apply(o)
        log.info("deploy: applied %s/%s", o["kind"], o["metadata"]["name"])
        done.append({"kind": o["kind"], "name": o["metadata"]["name"]})
    return done


# ------------------------------------------------------------------------------------------ wait
def readiness(isvc: dict) -> tuple[str, str]:
    """('ready' | 'failed' | 'waiting', why) for an InferenceService or LLMInferenceService as the
    server returned it: Ready with a current observedGeneration; every condition not True, with
    its reason and message, as why."""
    status = isvc.get("status") or {}
    gen = (isvc.get("metadata") or {}).get("generation")
    obs = status.get("observedGeneration")
    ms = status.get("modelStatus") or {}
    failure = ms.get("lastFailureInfo") or {}
    reason = " ".join(str(x) for x in (failure.get("reason"), failure.get("message")) if x)
    if ms.get("transitionStatus") in FAILED_TRANSITIONS:
        return "failed", f"modelStatus.transitionStatus={ms['transitionStatus']}" + (f": {reason}" if reason else "")
    if (ms.get("states") or {}).get("activeModelState") == "FailedToLoad":
        return "failed", "modelStatus.states.activeModelState=FailedToLoad" + (f": {reason}" if reason else "")
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    for t in sorted(BLOCKING_CONDITIONS & set(conds)):
        if conds[t].get("status") == "False":
            return "failed", f"{t}=False" + "".join(f": {conds[t][k]}" for k in ("reason", "message")
                                                    if conds[t].get(k))
    ready = conds.get("Ready", {})
    if ready.get("status") == "True" and (gen is None or (obs is not None and obs >= gen)):
        return "ready", "Ready"
    pending = [f"{t}={c.get('status')}" + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") else "")
               for t, c in conds.items() if c.get("status") != "True"]
    if ready.get("status") == "True":
        pending.append(f"observedGeneration {obs} < generation {gen}")
    return "waiting", "; ".join(pending) or "no status yet"


def pod_problem(kube: Kube, name: str, ns: str, kind: str = "InferenceService") -> Optional[str]:
    """An image-pull failure in the serving pods, as the kubelet reports it."""
    from kubernetes.client.exceptions import ApiException

    try:
        pods = kube.core.list_namespaced_pod(ns, label_selector=POD_SELECTOR[kind].format(name=name))
    except ApiException as e:
        if e.status in (403, 404):
            return None  # may lack pod access; readiness still tells
        raise kube.error(f"list pods of {name}", e) from None
    for pod in pods.items or []:
        for cs in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or []):
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in IMAGE_PULL:
                return f"pod {pod.metadata.name} container {cs.name}: {waiting.reason}: {waiting.message or cs.image}"
    return None


def wait_ready(name: str, ns: str, *, timeout_s: float = 900, interval_s: float = 5.0,
               cfg=None, kube: Optional[Kube] = None, kind: str = "InferenceService") -> dict:
    """Poll the InferenceService (or `kind`) until Ready; returns {"url", "waited_s"}. Fails fast
    on a failed load, a blocking condition or an image pull."""
    kube = _kube(cfg, kube)
    t0 = time.monotonic()
    why, last_logged = "", ""
    while True:
        isvc = kube.get(SERVED_API[kind], kind, ns, name)
        if isvc is None:
            raise LLMOpsError(f"{kind} {name} in {ns} is gone (deleted while waiting?)")
        state, why = readiness(isvc)
        if state == "ready":
            url = (isvc.get("status") or {}).get("url")
            return {"url": url, "waited_s": round(time.monotonic() - t0, 2)}
        if state == "failed":
            raise LLMOpsError(f"{kind} {name} in {ns} failed to load: {why}")
        problem = pod_problem(kube, name, ns, kind)
        if problem:
            raise LLMOpsError(f"{kind} {name} in {ns} cannot start: {problem}")
        if why != last_logged:
            log.info("deploy: waiting for %s: %s", name, why)
            last_logged = why
        if time.monotonic() - t0 + interval_s > timeout_s:
            raise LLMOpsError(f"{kind} {name} in {ns} not Ready after {timeout_s:.0f} s "
                              f"(serving.ready_timeout_s); last status: {why}")
        time.sleep(interval_s)


# ---------------------------------------------------------------------------------------- delete
def delete_run(ns: str, selector: str, cfg=None, kube: Optional[Kube] = None) -> list[str]:
    """Delete the objects carrying `selector` (one run's labels) in `ns`; returns what it did."""
    kube = _kube(cfg, kube)
    done = [kind for api, kind in DELETE_ORDER if kube.delete_collection(api, kind, ns, selector)]
    log.info("undeploy: deleted %s labelled %s in %s", ", ".join(done), selector, ns)
    return done
