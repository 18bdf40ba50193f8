"""`llmops plan --server-dry-run`: ask the API server what an offline plan cannot know.

For the objects a plan would apply (every stage's ``objects``), with the run's own credentials
(``cluster.auth``, :func:`llmops.k8s.client.connect`, as deploy and the cluster backends):

1. each object's API is served: discovery (``GET /apis/GROUP/VERSION`` lists its resource) and,
   when readable, its CustomResourceDefinition lists that version as served;
2. the namespace of every namespaced object exists (or the plan itself applies it);
3. every object is sent as a server-side apply with ``dryRun=All`` (field manager ``llmops``,
   ``force``, ``fieldValidation=Strict``, as deploy sends it): the server validates and admits it
   and stores nothing. Secrets go with their ``${env:NAME}`` placeholders filled from the
   environment, in memory, as deploy fills them; the values are remembered, so that no message
   shows them. An object whose API or namespace is missing is not sent (the check says why);
4. the ServingRuntime an InferenceService names (``spec.predictor.model.runtime``): in the plan
   (its dry run passed), a ServingRuntime in its namespace, or a ClusterServingRuntime;
5. the Kueue LocalQueue every ``kueue.x-k8s.io/queue-name`` label names, in the object's namespace.

Every failure names the object (kind/namespace/name), the config key that set the value and what
was expected. Nothing is written to the cluster: every mutating call carries ``dryRun=All``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from llmops.clusters.kuberay import KUEUE_API, QUEUE_LABEL
from llmops.core import secrets
from llmops.core.errors import LLMOpsError
from llmops.k8s.client import Kube, group_version, plural
from llmops.serving.kube import FILL_HINT, RUNTIME_API

CRD_API = "apiextensions.k8s.io/v1"
NEW_NAMESPACE = "absent; this plan applies it first"
# which config keys set what a stage's objects carry
KEYS = {"deploy": {"section": "serving", "namespace": "serving.namespace",
                   "queue": f"serving.labels.{QUEUE_LABEL}", "create": "serving.create_namespace=true"},
        "train": {"section": "cluster", "namespace": "cluster.namespace",
                  "queue": "cluster.local_queue", "create": ""}}


@dataclass
class Finding:
    """One line of the report: `status` ok | failed | skipped (not a failure: said why)."""

    subject: str
    status: str
    text: str
    key: str = ""

    def line(self) -> str:
        """`subject: text`, naming the config key when the text does not already."""
        key = f" ({self.key})" if self.key and self.status == "failed" and self.key not in self.text else ""
        return secrets.scrub(f"{self.subject}: {self.text}{key}")


@dataclass
class Report:
    server: str
    applied: list = field(default_factory=list)  # one Finding per object sent (or not)
    checks: list = field(default_factory=list)   # APIs, namespaces, runtimes, queues

    @property
    def failures(self) -> list:
        return [f for f in self.applied + self.checks if f.status == "failed"]

    def counts(self) -> dict:
        out = {"ok": 0, "skipped": 0, "failed": 0}
        for f in self.applied + self.checks:
            out[f.status] += 1
        return out

    def as_dict(self) -> dict:
        def rows(fs):
            return [{"subject": f.subject, "status": f.status, "key": f.key, "text": secrets.scrub(f.text)}
                    for f in fs]

        return {"server": self.server, "applied": rows(self.applied), "checks": rows(self.checks),
                "counts": self.counts()}


def ref(obj: dict) -> str:
    """kind/namespace/name (kind/name when cluster-scoped)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return "/".join([obj.get("kind", "?"), *([ns] if ns else []), meta.get("name", "?")])


def _keys(stage: str) -> dict:
    return KEYS.get(stage, {"section": stage, "namespace": f"{stage}.namespace",
                            "queue": f"{stage}.labels", "create": ""})


# ------------------------------------------------------------------------------ 1. APIs served
def check_api(kube: Kube, api_version: str, kind: str, key: str, value: str) -> Finding:
    """`kind` of `api_version` is served: discovery, and the CRD when it is readable."""
    group, version = group_version(api_version)
    res, name = plural(kind), f"{plural(kind)}.{group}"
    subject = f"{kind} {api_version}"
    try:
        served = kube.resources(api_version)
    except LLMOpsError as e:
        return Finding(subject, "failed", f"discovery failed: {e}", key)
    how = (f"GET /apis/{api_version} answered 404" if served is None
           else f"GET /apis/{api_version} lists {res}" if res in served
           else f"GET /apis/{api_version} lists no {res}")
    try:
        crd = kube.get(CRD_API, "CustomResourceDefinition", None, name)
        versions = [v.get("name") for v in (crd or {}).get("spec", {}).get("versions") or []
                    if v.get("served")]
        crd_how = (f"CRD {name} absent" if crd is None
                   else f"CRD {name} serves {', '.join(versions) or 'no version'}")
    except LLMOpsError as e:
        crd, versions, crd_how = None, [], f"CRD {name} not readable ({str(e).split(': ', 1)[-1][:120]})"
    ok = bool(served) and res in served and (crd is None or version in versions)
    if ok:
        return Finding(subject, "ok", f"served (discovery: {how}; {crd_how})")
    return Finding(subject, "failed", f"{key} = {value!r} needs {kind} {api_version} served by "
                   f"{kube.server}, but it is not (discovery: {how}; {crd_how}); install that "
                   "CRD version or pick another option", key)


# ---------------------------------------------------------------------------- 2. namespaces
def check_namespace(kube: Kube, ns: str, keys: dict, created: bool) -> Finding:
    """The namespace exists, or this plan applies it (`created`)."""
    subject, key = f"Namespace/{ns}", keys["namespace"]
    try:
        found = kube.get("v1", "Namespace", None, ns)
    except LLMOpsError as e:
        if " 403 " in str(e):  # may not read namespaces: the dry run of its objects tells
            return Finding(subject, "skipped", "cannot read it (403); the dry run of its objects tells")
        return Finding(subject, "failed", str(e), key)
    if found is not None:
        return Finding(subject, "ok", "exists")
    if created:
        return Finding(subject, "ok", NEW_NAMESPACE)
    hint = f", or set {keys['create']}" if keys["create"] else ""
    return Finding(subject, "failed", f"{key} = {ns!r}: no such namespace on {kube.server}; expected "
                   f"an existing namespace (create it{hint})", key)


# --------------------------------------------------------------------------- 3. the dry run
def dry_apply(kube: Kube, obj: dict) -> Finding:
    from llmops.k8s.secret_env import fill, has_placeholders

    try:
        sent = fill(obj, FILL_HINT) if obj.get("kind") == "Secret" and has_placeholders(obj) else obj
        kube.apply(sent, dry_run=True)
    except LLMOpsError as e:
        return Finding(ref(obj), "failed", str(e))
    return Finding(ref(obj), "ok", "ok")


# ----------------------------------------------------------------------- 4. and 5. references
def _exists(kube: Kube, api: str, kind: str, ns: Optional[str], name: str) -> tuple[Optional[bool], str]:
    try:
        return kube.get(api, kind, ns, name) is not None, ""
    except LLMOpsError as e:
        return None, str(e)


def check_runtime(kube: Kube, isvc: dict, sent: dict) -> Finding:
    """The ServingRuntime (or ClusterServingRuntime) an InferenceService names exists."""
    model = ((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}
    name, ns = model.get("runtime"), isvc["metadata"].get("namespace")
    subject = f"{ref(isvc)} runtime"
    if not name:
        fmt = (model.get("modelFormat") or {}).get("name")
        return Finding(subject, "skipped", f"names none: KServe picks one that serves {fmt!r}")
    planned = sent.get(("ServingRuntime", ns, name))
    if planned is not None and planned.status == "ok":
        return Finding(subject, "ok", f"ServingRuntime/{ns}/{name}: applied by this plan (dry run ok)")
    for kind, where in (("ServingRuntime", ns), ("ClusterServingRuntime", None)):
        found, err = _exists(kube, RUNTIME_API, kind, where, name)
        if found:
            return Finding(subject, "ok", f"{kind}/{(where + '/') if where else ''}{name} exists")
        if err:
            return Finding(subject, "failed", err, "serving.runtime_name")
    also = " (the plan's own ServingRuntime was not accepted: see above)" if planned else ""
    return Finding(subject, "failed", f"serving.runtime_name = {name!r}: expected a ServingRuntime "
                   f"{name!r} in namespace {ns!r} or a ClusterServingRuntime {name!r} on "
                   f"{kube.server}; there is neither{also}", "serving.runtime_name")


def check_queue(kube: Kube, obj: dict, key: str) -> Finding:
    """The Kueue LocalQueue the object's queue-name label names exists in its namespace."""
    q, ns = obj["metadata"]["labels"][QUEUE_LABEL], obj["metadata"].get("namespace")
    subject = f"{ref(obj)} LocalQueue"
    found, err = _exists(kube, KUEUE_API, "LocalQueue", ns, q)
    if found:
        return Finding(subject, "ok", f"LocalQueue/{ns}/{q} exists")
    if not err and kube.resources(KUEUE_API) is None:
        err = (f"{key} = {q!r}: expected a Kueue LocalQueue {q!r} in namespace {ns!r}, but "
               f"{kube.server} does not serve {KUEUE_API} (Kueue is not installed)")
    return Finding(subject, "failed", err or (
        f"{key} = {q!r}: expected a Kueue LocalQueue {q!r} ({KUEUE_API}) in namespace {ns!r}; there is "
        f"none (kubectl get localqueues -n {ns})"), key)


# ------------------------------------------------------------------------------------- all
def server_dry_run(steps: list[dict], cfg, kube: Optional[Kube] = None) -> Report:
    """Every check above for the objects of `steps` (the plan's stages, unscrubbed: Secrets are
    filled for the request only). Raises LLMOpsError when there are no credentials or the API
    server does not answer; a refused object or a failed check is a Finding."""
    from omegaconf import OmegaConf

    if kube is None:
        from llmops.k8s.client import connect

        kube = connect(cfg)
    kube.version()  # credentials and reachability first: one clear error
    planned = [(s["stage"], o) for s in steps for o in s.get("objects") or []]
    report = Report(server=kube.server + kube.auth.hint())

    apis: dict = {}
    for stage, o in planned:
        if "/" in o["apiVersion"] and (o["apiVersion"], o["kind"]) not in apis:
            key = f"{_keys(stage)['section']}.kind"
            v = OmegaConf.select(cfg, key, default="?")
            value = str(getattr(v, "value", v))
            apis[(o["apiVersion"], o["kind"])] = f = check_api(kube, o["apiVersion"], o["kind"], key, value)
            report.checks.append(f)

    created = {o["metadata"]["name"] for _, o in planned if o["kind"] == "Namespace"}
    namespaces: dict = {}
    for stage, o in planned:
        ns = o["metadata"].get("namespace")
        if ns and ns not in namespaces:
            namespaces[ns] = f = check_namespace(kube, ns, _keys(stage), ns in created)
            report.checks.append(f)

    sent: dict = {}
    for stage, o in planned:
        ns = o["metadata"].get("namespace")
        api = apis.get((o["apiVersion"], o["kind"]))
        nsf = namespaces.get(ns)
        if api is not None and api.status == "failed":
            f = Finding(ref(o), "skipped", f"not sent: {o['apiVersion']} is not served (see below)")
        elif nsf is not None and nsf.status == "failed":
            f = Finding(ref(o), "skipped", f"not sent: namespace {ns!r} is missing (see below)")
        elif nsf is not None and nsf.text == NEW_NAMESPACE:
            f = Finding(ref(o), "skipped", f"not sent: its namespace {ns!r} does not exist yet (this "
                        "plan applies it first; a dry run cannot apply into it)")
        else:
            f = dry_apply(kube, o)
            f.key = f"rendered from the {_keys(stage)['section']}.* keys" if f.status == "failed" else ""
        sent[(o["kind"], ns, o["metadata"]["name"])] = f
        report.applied.append(f)

    queues = set()
    for stage, o in planned:
        ns = o["metadata"].get("namespace")
        if ns in namespaces and namespaces[ns].status == "failed":
            continue  # said once, by the namespace check
        if o["kind"] == "InferenceService":
            mine = sent[(o["kind"], ns, o["metadata"]["name"])]
            report.checks.append(check_runtime(kube, o, sent) if mine.status != "skipped" else
                                 Finding(f"{ref(o)} runtime", "skipped", "not checked: the "
                                         "InferenceService was not sent"))
        q = ((o.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
        if q and (ns, q) not in queues:
            queues.add((ns, q))
            report.checks.append(check_queue(kube, o, _keys(stage)["queue"]))
    return report
