"""Apply, wait and delete with the kubernetes client: the only module that touches a cluster.

Apply is server-side apply (field manager ``llmops``, ``force=True``, ``fieldValidation=Strict``,
content type ``application/apply-patch+yaml``) of Namespace, Secret, ServiceAccount,
ServingRuntime and InferenceService, in that order: a second apply of the same objects changes
nothing, a new run's objects update them in place. The Secret's credential placeholders are
filled from the environment here, in memory only. Wait polls the InferenceService until
``Ready`` with a current ``observedGeneration`` and fails fast with KServe's reason. Delete
removes, by label selector, exactly what one run applied (never the Namespace).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

from llmops.core.errors import LLMOpsError

log = logging.getLogger("llmops")

FIELD_MANAGER = "llmops"
APPLY = {"field_manager": FIELD_MANAGER, "force": True, "field_validation": "Strict",
         "_content_type": "application/apply-patch+yaml"}
CUSTOM = {  # kind -> (group, version, plural)
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "ServingRuntime": ("serving.kserve.io", "v1alpha1", "servingruntimes"),
    "LLMInferenceService": ("serving.kserve.io", "v1alpha2", "llminferenceservices"),
}
# the pods behind a served object, by the labels its controller puts on them
POD_SELECTOR = {"InferenceService": "serving.kserve.io/inferenceservice={name}",
                "LLMInferenceService": "app.kubernetes.io/name={name},"
                                       "app.kubernetes.io/component=llminferenceservice-workload"}
# LLMInferenceService: PresetsCombined=False (a baseRef missing or not mergeable) stops the
# controller until the spec changes; it is not part of the Ready rollup
BLOCKING_CONDITIONS = {"PresetsCombined"}
IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


# ---------------------------------------------------------------------------------------- client
def clients():
    """(CoreV1Api, CustomObjectsApi) from $KUBECONFIG / ~/.kube/config, or in-cluster config."""
    from kubernetes import client, config

    try:
        # the client reads $KUBECONFIG once, at import; read it now so a changed one counts
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    except Exception as e:  # no kubeconfig: maybe we run in a pod
        try:
            config.load_incluster_config()
        except Exception:
            raise LLMOpsError(f"no Kubernetes credentials: {e}; set KUBECONFIG (or run `oc login`) "
                              "or run inside a cluster") from None
    api = client.ApiClient()
    return client.CoreV1Api(api), client.CustomObjectsApi(api)


def _server_message(e) -> str:
    """The API server's own words from an ApiException (its Status `message`)."""
    body = getattr(e, "body", None)
    if body:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (ValueError, TypeError):
            pass
        return str(body)[:500]
    return str(getattr(e, "reason", e))


def _api_error(action: str, e) -> LLMOpsError:
    status = getattr(e, "status", None)
    msg = _server_message(e)
    if status == 403:
        hint = " (the credentials in use lack permission: check RBAC for this namespace)"
    elif status == 401:
        hint = " (the credentials were refused: log in again)"
    else:
        hint = ""
    return LLMOpsError(f"{action}: the API server answered {status} {getattr(e, 'reason', '')}: "
                       f"{msg}{hint}")


# ----------------------------------------------------------------------------------------- apply
PLACEHOLDER_RE = re.compile(r"^\$\{env:([A-Z_][A-Z0-9_]*)\}$")


def fill_secret(obj: dict) -> dict:
    """A copy of a rendered Secret with its ${env:NAME} placeholders filled from the environment
    (the values are remembered for scrubbing from logs and errors)."""
    from llmops.core import secrets

    out = json.loads(json.dumps(obj))
    missing = []
    for k, v in (out.get("stringData") or {}).items():
        m = PLACEHOLDER_RE.match(str(v))
        if m:
            val = os.environ.get(m.group(1))
            if not val:
                missing.append(m.group(1))
                continue
            secrets.remember(val)
            out["stringData"][k] = val
    if missing:
        raise LLMOpsError(
            f"Secret {obj['metadata']['name']}: {', '.join(missing)} not set in the environment; set "
            "them, or name an existing Secret with serving.existing_secret=true serving.secret_name=NAME")
    return out


def apply_one(core, custom, obj: dict) -> dict:
    from kubernetes.client.rest import ApiException

    kind, meta = obj["kind"], obj["metadata"]
    name, ns = meta["name"], meta.get("namespace")
    try:
        if kind == "Namespace":
            core.patch_namespace(name, obj, **APPLY)
        elif kind == "Secret":
            if any(PLACEHOLDER_RE.match(str(v)) for v in (obj.get("stringData") or {}).values()):
                obj = fill_secret(obj)
            core.patch_namespaced_secret(name, ns, obj, **APPLY)
        elif kind == "ServiceAccount":
            core.patch_namespaced_service_account(name, ns, obj, **APPLY)
        elif kind in CUSTOM:
            g, v, plural = CUSTOM[kind]
            custom.patch_namespaced_custom_object(g, v, ns, plural, name, obj, **APPLY)
        else:
            raise LLMOpsError(f"cannot apply kind {kind!r}")
    except ApiException as e:
        from llmops.core import secrets

        raise LLMOpsError(secrets.scrub(str(_api_error(f"apply {kind}/{name} in {ns or 'cluster'}", e)))) from None
    log.info("deploy: applied %s/%s", kind, name)
    return {"kind": kind, "name": name}


def check_existing_secret(core, name: str, ns: str) -> None:
    from kubernetes.client.rest import ApiException

    try:
        core.read_namespaced_secret(name, ns)
    except ApiException as e:
        if e.status == 404:
            raise LLMOpsError(f"serving.secret_name = {name!r} (serving.existing_secret=true): no such "
                              f"Secret in namespace {ns!r}; create it or set existing_secret=false") from None
        raise _api_error(f"read Secret/{name}", e) from None


def apply_objects(objects: list[dict], cfg) -> list[dict]:
    """Server-side apply every object in order; returns [{kind, name}]."""
    core, custom = clients()
    s = cfg.serving
    if s.existing_secret and s.secret_name:
        check_existing_secret(core, str(s.secret_name), str(s.namespace))
    # fill every Secret first: a missing value stops the apply before anything reaches the cluster
    ready = [fill_secret(o) if o.get("kind") == "Secret" else o for o in objects]
    return [apply_one(core, custom, o) for o in ready]


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
    for t in BLOCKING_CONDITIONS & set(conds):
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


def pod_problem(core, name: str, ns: str, kind: str = "InferenceService") -> Optional[str]:
    """An image-pull failure in the serving pods, as the kubelet reports it."""
    from kubernetes.client.rest import ApiException

    try:
        pods = core.list_namespaced_pod(ns, label_selector=POD_SELECTOR[kind].format(name=name))
    except ApiException as e:
        if e.status in (403, 404):
            return None  # may lack pod access; readiness still tells
        raise _api_error(f"list pods of {name}", e) from None
    for pod in pods.items or []:
        for cs in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or []):
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in IMAGE_PULL:
                return f"pod {pod.metadata.name} container {cs.name}: {waiting.reason}: {waiting.message or cs.image}"
    return None


def wait_ready(name: str, ns: str, *, timeout_s: float = 900, interval_s: float = 5.0,
               clients_=None, kind: str = "InferenceService") -> dict:
    """Poll the InferenceService (or `kind`) until Ready; returns {"url", "waited_s"}. Fails fast
    on a failed load, a blocking condition or an image pull."""
    from kubernetes.client.rest import ApiException

    core, custom = clients_ or clients()
    g, v, plural = CUSTOM[kind]
    t0 = time.monotonic()
    why, last_logged = "", ""
    while True:
        try:
            isvc = custom.get_namespaced_custom_object(g, v, ns, plural, name)
        except ApiException as e:
            raise _api_error(f"read {kind}/{name} in {ns}", e) from None
        state, why = readiness(isvc)
        if state == "ready":
            url = (isvc.get("status") or {}).get("url")
            return {"url": url, "waited_s": round(time.monotonic() - t0, 2)}
        if state == "failed":
            raise LLMOpsError(f"{kind} {name} in {ns} failed to load: {why}")
        problem = pod_problem(core, name, ns, kind)
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
def delete_run(ns: str, selector: str, clients_=None) -> list[str]:
    """Delete the objects carrying `selector` (one run's labels) in `ns`; returns what it did."""
    from kubernetes.client.rest import ApiException

    core, custom = clients_ or clients()
    done = []
    steps = [("InferenceService", lambda: custom.delete_collection_namespaced_custom_object(
                 *CUSTOM["InferenceService"][:2], ns, CUSTOM["InferenceService"][2], label_selector=selector)),
             ("ServingRuntime", lambda: custom.delete_collection_namespaced_custom_object(
                 *CUSTOM["ServingRuntime"][:2], ns, CUSTOM["ServingRuntime"][2], label_selector=selector)),
             ("ServiceAccount", lambda: core.delete_collection_namespaced_service_account(
                 ns, label_selector=selector)),
             ("Secret", lambda: core.delete_collection_namespaced_secret(ns, label_selector=selector)),
             # 404 where the cluster has no LLMInferenceService CRD: skipped like any other
             ("LLMInferenceService", lambda: custom.delete_collection_namespaced_custom_object(
                 *CUSTOM["LLMInferenceService"][:2], ns, CUSTOM["LLMInferenceService"][2],
                 label_selector=selector))]
    for kind, fn in steps:
        try:
            fn()
        except ApiException as e:
            if e.status == 404:
                continue
            raise _api_error(f"delete {kind} objects with {selector} in {ns}", e) from None
        done.append(kind)
    log.info("undeploy: deleted %s labelled %s in %s", ", ".join(done), selector, ns)
    return done
