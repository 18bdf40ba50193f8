"""A stand-in for the Kubernetes API server on 127.0.0.1, enough for llmops' serving path.

It answers the requests the real kubernetes client sends, the way the API server answers them:
server-side apply (PATCH, Content-Type application/apply-patch+yaml, fieldManager, force,
fieldValidation=Strict; 415/400 otherwise), GET of objects, pod lists by label, delete by label
selector (deletecollection), Status bodies for errors (403 Forbidden, 404 NotFound, 422 Invalid,
400 strict-decoding errors), and an InferenceService status that KServe would write: not ready
for a few polls, then Ready with observedGeneration and url; or a failed load.
A server-side dry run (``dryRun=All``) is validated and answered as if applied, and stores nothing;
``GET /version``, API discovery (``GET /apis/GROUP/VERSION``) and the CustomResourceDefinition of
each kind answer for the group/versions in ``served``; ServingRuntime, ClusterServingRuntime and
LocalQueue objects a test puts there with ``seed`` are read back; anything else absent is a 404.
It is a test double of the HTTP protocol, not of Kubernetes: no admission, no controllers.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CORE = {"secrets": "Secret", "serviceaccounts": "ServiceAccount", "pods": "Pod"}
CUSTOM = {("serving.kserve.io", "v1beta1", "inferenceservices"): "InferenceService",
          ("serving.kserve.io", "v1alpha1", "servingruntimes"): "ServingRuntime",
          ("serving.kserve.io", "v1alpha2", "llminferenceservices"): "LLMInferenceService",
          ("kueue.x-k8s.io", "v1beta1", "localqueues"): "LocalQueue",
          ("ray.io", "v1", "rayclusters"): "RayCluster",
          ("ray.io", "v1", "rayjobs"): "RayJob"}
CLUSTER_SCOPED = {("serving.kserve.io", "v1alpha1", "clusterservingruntimes"): "ClusterServingRuntime",
                  ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): "CustomResourceDefinition"}
# what `served` starts with: every group/version above
SERVED = {(g, v) for g, v, _ in [*CUSTOM, *CLUSTER_SCOPED]}
# how each served kind labels its pods (KServe's controllers)
POD_LABELS = {"InferenceService": "serving.kserve.io/inferenceservice={name}",
              "LLMInferenceService": "app.kubernetes.io/name={name},"
                                     "app.kubernetes.io/component=llminferenceservice-workload"}


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


class LoopbackAPIServer:
    """What every stand-in API server shares: an HTTP server on a free 127.0.0.1 port (serving the
    handler class `_handler()` returns), its URL, start/stop, and a kubeconfig pointing at it."""

    def _listen(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path) -> str:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "u"}}]}))
        return str(path)


class StandIn(LoopbackAPIServer):
    """Behaviour knobs (set before or during a test):
    ready_after: polls of an InferenceService before it reports Ready
    fail_load: the InferenceService reports BlockedByFailedLoad with a reason (an
      LLMInferenceService: MainWorkloadReady=False, the Deployment's progress deadline exceeded)
    missing_preset: an LLMInferenceService reports PresetsCombined=False, ConfigNotFound
    image_pull: the predictor pod waits in ImagePullBackOff
    forbidden: every write answers 403
    invalid: (kind, field path, message) -> 422 Invalid for that kind
    token: when set, a request without `Authorization: Bearer <token>` answers 401
    served: the (group, version) pairs served (discovery, CRDs, objects); discard one to make a
      cluster without that CRD version
    crds_readable: False -> reading a CustomResourceDefinition answers 403 (discovery still works)
    """

    def __init__(self, namespaces=("default",)):
        self.objects: dict = {}  # (kind, ns, name) -> object
        self.namespaces = {n: {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                           for n in namespaces}
        self.requests: list = []
        self.polls: dict = {}
        self.ready_after = 2
        self.fail_load = False
        self.missing_preset = False
        self.url_override = None  # status.url of a Ready LLMInferenceService (a real server to call)
        self.image_pull = False
        self.forbidden = False
        self.invalid = None
        self.strict_validator = None  # callable(obj) -> list of unknown-field paths
        self.token = None
        self.served = set(SERVED)
        self.crds_readable = True
        self.lock = threading.Lock()
        self._rv = 0
        self._listen()

    # -------------------------------------------------------------------------------- behaviour
    def seed(self, obj: dict) -> dict:
        """Put an object there as if an admin had made it (a ServingRuntime, a
        ClusterServingRuntime, a LocalQueue)."""
        meta = obj["metadata"]
        with self.lock:
            self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)
        return obj

    def stored(self) -> list:
        """The keys (kind, namespace, name) of what is stored, objects and namespaces made by
        requests (not those it was started with)."""
        return list(self.objects) + [("Namespace", None, n) for n, o in self.namespaces.items()
                                     if "resourceVersion" in o["metadata"]]

    def crd(self, name: str) -> dict | None:
        """The CustomResourceDefinition `name` (PLURAL.GROUP), listing the versions served."""
        kinds = {(g, v, p): k for (g, v, p), k in [*CUSTOM.items(), *CLUSTER_SCOPED.items()]
                 if f"{p}.{g}" == name and (g, v) in self.served}
        if not kinds:
            return None
        (g, _, p), kind = next(iter(kinds.items()))
        return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {"group": g, "names": {"kind": kind, "plural": p},
                         "scope": "Cluster" if (g, _, p) in CLUSTER_SCOPED else "Namespaced",
                         "versions": [{"name": v, "served": True, "storage": i == 0}
                                      for i, (_, v, _) in enumerate(kinds)]}}

    def discovery(self, group: str, version: str) -> dict | None:
        if (group, version) not in self.served:
            return None
        res = [{"name": p, "singularName": k.lower(), "namespaced": scoped, "kind": k,
                "verbs": ["get", "list", "patch", "delete", "deletecollection"]}
               for scoped, table in ((True, CUSTOM), (False, CLUSTER_SCOPED))
               for (g, v, p), k in table.items() if (g, v) == (group, version)]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                "resources": res}

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def isvc_view(self, obj: dict) -> dict:
        """The InferenceService as GET returns it, with the status KServe would have written."""
        out = copy.deepcopy(obj)
        meta = out["metadata"]
        key = (meta["namespace"], meta["name"], meta["generation"])
        n = self.polls[key] = self.polls.get(key, 0) + 1
        gen = meta["generation"]
        if self.fail_load:
            out["status"] = {"observedGeneration": gen, "conditions": [
                {"type": "PredictorReady", "status": "False", "reason": "ModelLoadFailed"},
                {"type": "Ready", "status": "False", "reason": "ModelLoadFailed"}],
                "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                                "states": {"activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"},
                                "lastFailureInfo": {"reason": "ModelLoadFailed",
                                                    "message": "config.json not found in /mnt/models"}}}
        elif n > self.ready_after:
            out["status"] = {"observedGeneration": gen, "url": f"http://{meta['name']}-{meta['namespace']}.apps.example",
                             "conditions": [{"type": t, "status": "True"} for t in
                                            ("IngressReady", "PredictorReady", "Ready")],
                             "modelStatus": {"transitionStatus": "UpToDate",
                                             "states": {"activeModelState": "Loaded"}}}
        else:
            out["status"] = {"observedGeneration": max(gen - 1, 0), "conditions": [
                {"type": "PredictorReady", "status": "False", "reason": "PredictorNotReady",
                 "message": "waiting for the predictor pod"},
                {"type": "Ready", "status": "False", "reason": "PredictorNotReady"}],
                "modelStatus": {"transitionStatus": "InProgress", "states": {"activeModelState": "Pending"}}}
        return out

    def llmisvc_view(self, obj: dict) -> dict:
        """The LLMInferenceService as GET returns it, with the status KServe's llmisvc controller
        would have written (Knative-style conditions, no modelStatus)."""
        out = copy.deepcopy(obj)
        meta = out["metadata"]
        key = (meta["namespace"], meta["name"], meta["generation"])
        n = self.polls[key] = self.polls.get(key, 0) + 1
        gen = meta["generation"]

        def cond(t, ok, reason=None, message=None):
            c = {"type": t, "status": "True" if ok else "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            return c if ok else {**c, "reason": reason, "message": message}

        if self.missing_preset:
            ref = ((out["spec"].get("baseRefs") or [{}])[0]).get("name", "?")
            msg = f'failed to get LLMInferenceServiceConfig "{ref}": not found'
            conds = [cond("PresetsCombined", False, "ConfigNotFound", msg),
                     cond("Ready", False, "ConfigNotFound", msg)]
        elif self.fail_load:
            msg = 'Deployment "%s-kserve" exceeded its progress deadline' % meta["name"]
            conds = [cond("PresetsCombined", True),
                     cond("MainWorkloadReady", False, "ProgressDeadlineExceeded", msg),
                     cond("WorkloadsReady", False, "ProgressDeadlineExceeded", msg),
                     cond("RouterReady", True), cond("Ready", False, "ProgressDeadlineExceeded", msg)]
        elif n > self.ready_after:
            url = self.url_override or f"http://gateway.example/{meta['namespace']}/{meta['name']}"
            out["status"] = {"observedGeneration": gen, "url": url,
                             "addresses": [{"name": "gateway-external", "url": url}],
                             "conditions": [cond(t, True) for t in ("PresetsCombined", "MainWorkloadReady",
                                            "WorkloadsReady", "HTTPRoutesReady", "RouterReady", "Ready")]}
            return out
        else:
            msg = "Deployment does not have minimum availability."
            conds = [cond("PresetsCombined", True),
                     cond("MainWorkloadReady", False, "MinimumReplicasUnavailable", msg),
                     cond("WorkloadsReady", False, "MinimumReplicasUnavailable", msg),
                     cond("RouterReady", True), cond("Ready", False, "MinimumReplicasUnavailable", msg)]
        out["status"] = {"observedGeneration": gen if n > 1 else max(gen - 1, 0), "conditions": conds}
        return out

    def pods(self, ns: str, selector: str) -> list:
        found = [(kind, re.fullmatch(rx.format(name="(.+)"), selector or ""))
                 for kind, rx in POD_LABELS.items()]
        kind, m = next(((k, m) for k, m in found if m), (None, None))
        if not m or (kind, ns, m.group(1)) not in self.objects:
            return []
        name = m.group(1)
        waiting = ({"reason": "ImagePullBackOff", "message": 'Back-off pulling image "quay.io/x/missing:1"'}
                   if self.image_pull else {"reason": "ContainerCreating"})
        return [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": f"{name}-predictor-abc", "namespace": ns},
                 "status": {"phase": "Pending", "containerStatuses": [{
                     "name": "kserve-container", "image": "quay.io/x/missing:1", "imageID": "",
                     "ready": False, "restartCount": 0, "state": {"waiting": waiting}}]}}]

    # ----------------------------------------------------------------------------------- http
    def _handler(self):
        standin = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                p = u.path.strip("/").split("/")
                if p == ["version"]:
                    return "Version", None, None, q
                # /apis/{group}/{version}: discovery
                if p[:1] == ["apis"] and len(p) == 3:
                    return "APIResourceList", None, (p[1], p[2]), q
                served = p[:1] != ["apis"] or (len(p) > 2 and (p[1], p[2]) in standin.served)
                # /apis/{group}/{version}/{plural}/{name}: cluster-scoped
                if p[:1] == ["apis"] and len(p) == 5 and served and tuple(p[1:4]) in CLUSTER_SCOPED:
                    return CLUSTER_SCOPED[tuple(p[1:4])], None, p[4], q
                # /api/v1/namespaces/{ns}[/{res}[/{name}]]
                if p[:3] == ["api", "v1", "namespaces"]:
                    if len(p) == 4:
                        return "Namespace", None, p[3], q
                    if len(p) in (5, 6) and p[4] in CORE:
                        return CORE[p[4]], p[3], p[5] if len(p) == 6 else None, q
                # /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
                if p[:1] == ["apis"] and len(p) in (6, 7) and p[3] == "namespaces" and served:
                    kind = CUSTOM.get((p[1], p[2], p[5]))
                    if kind:
                        return kind, p[4], p[6] if len(p) == 7 else None, q
                return None, None, None, q

            def _record(self, method, kind, ns, name, q, ctype=None):
                standin.requests.append({"method": method, "kind": kind, "ns": ns, "name": name,
                                         "query": q, "content_type": ctype,
                                         "auth": self.headers.get("Authorization")})
                if standin.token and self.headers.get("Authorization") != f"Bearer {standin.token}":
                    self._send(401, status_body(401, "Unauthorized", "Unauthorized"))
                    return True
                return False

            def do_PATCH(self):
                kind, ns, name, q = self._route()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                ctype = self.headers.get("Content-Type", "")
                if self._record("PATCH", kind, ns, name, q, ctype):
                    return
                if kind is None or name is None:
                    return self._send(404, status_body(404, "NotFound", "the server could not find the requested resource"))
                if standin.forbidden:
                    return self._send(403, status_body(403, "Forbidden",
                        f'{kind.lower()}s "{name}" is forbidden: User "system:serviceaccount:ci:bot" cannot patch '
                        f'resource "{kind.lower()}s" in API group "" in the namespace "{ns}"'))
                if ctype != "application/apply-patch+yaml":
                    return self._send(415, status_body(415, "UnsupportedMediaType", f"unsupported content type {ctype}"))
                if not q.get("fieldManager"):
                    return self._send(422, status_body(422, "Invalid", "PATCH: fieldManager is required for apply requests"))
                dry = "dryRun" in q
                if dry and q["dryRun"] != "All":
                    return self._send(400, status_body(400, "BadRequest", f'Invalid dryRun value "{q["dryRun"]}": '
                                                       'supported values: "All"'))
                try:
                    import yaml

                    obj = yaml.safe_load(raw)
                except Exception as e:
                    return self._send(400, status_body(400, "BadRequest", f"error decoding YAML: {e}"))
                standin.requests[-1]["body"] = obj  # what was sent (a test looks at a Secret's values)
                if q.get("fieldValidation") == "Strict" and standin.strict_validator:
                    unknown = standin.strict_validator(obj)
                    if unknown:
                        return self._send(400, status_body(400, "BadRequest", "; ".join(
                            f'strict decoding error: unknown field "{u}"' for u in unknown)))
                if standin.invalid and standin.invalid[0] == kind:
                    _, path, msg = standin.invalid
                    return self._send(422, status_body(422, "Invalid",
                        f'{kind}.serving.kserve.io "{name}" is invalid: {path}: {msg}',
                        {"name": name, "kind": kind.lower() + "s",
                         "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": path}]}))
                with standin.lock:
                    if kind == "Namespace":
                        cur = standin.namespaces.get(name, {"metadata": {}})
                        new = {**obj, "metadata": {**obj["metadata"], "resourceVersion": standin._next_rv()}}
                        if not dry:
                            standin.namespaces[name] = new
                        return self._send(200, new)
                    if ns not in standin.namespaces:
                        return self._send(404, status_body(404, "NotFound", f'namespaces "{ns}" not found'))
                    key = (kind, ns, name)
                    cur = standin.objects.get(key)
                    obj.setdefault("metadata", {})
                    body = {k: v for k, v in obj.items() if k != "status"}
                    if cur is None:
                        body["metadata"].update({"generation": 1, "uid": f"uid-{len(standin.objects)}",
                                                 "resourceVersion": standin._next_rv(),
                                                 "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ")})
                    else:
                        same = {k: v for k, v in cur.items() if k != "metadata"} == \
                            {k: v for k, v in body.items() if k != "metadata"} and \
                            cur["metadata"].get("labels") == body["metadata"].get("labels") and \
                            cur["metadata"].get("annotations") == body["metadata"].get("annotations")
                        gen_changed = cur.get("spec") != body.get("spec")
                        keep = {k: cur["metadata"][k] for k in ("uid", "creationTimestamp", "generation", "resourceVersion")}
                        body["metadata"].update(keep)
                        if gen_changed:
                            body["metadata"]["generation"] = cur["metadata"]["generation"] + 1
                        if not same:
                            body["metadata"]["resourceVersion"] = standin._next_rv()
                    if not dry:
                        standin.objects[key] = body
                if kind == "Secret":
                    body = {**body, "data": {k: "***" for k in (body.get("stringData") or {})}}
                    body.pop("stringData", None)
                self._send(201 if cur is None else 200, body)

            def do_GET(self):
                kind, ns, name, q = self._route()
                if self._record("GET", kind, ns, name, q):
                    return
                if kind == "Pod" and name is None:
                    return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                                            "items": standin.pods(ns, q.get("labelSelector"))})
                if kind == "Version":
                    return self._send(200, {k: "" for k in ("gitCommit", "gitTreeState", "buildDate",
                                                            "goVersion", "compiler")} |
                                      {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                       "platform": "linux/amd64"})
                if kind == "APIResourceList":
                    found = standin.discovery(*name)
                    return self._send(200, found) if found else self._send(
                        404, status_body(404, "NotFound", "the server could not find the requested resource"))
                if kind == "Namespace":
                    found = standin.namespaces.get(name)
                    return self._send(200, found) if found else self._send(
                        404, status_body(404, "NotFound", f'namespaces "{name}" not found'))
                if kind == "CustomResourceDefinition":
                    if not standin.crds_readable:
                        return self._send(403, status_body(403, "Forbidden", f'customresourcedefinitions.'
                            f'apiextensions.k8s.io "{name}" is forbidden: User "system:serviceaccount:ci:bot" '
                            'cannot get resource "customresourcedefinitions" at the cluster scope'))
                    found = standin.crd(name)
                    return self._send(200, found) if found else self._send(
                        404, status_body(404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io '
                                                          f'"{name}" not found'))
                with standin.lock:
                    obj = standin.objects.get((kind, ns, name))
                    if obj is None:
                        return self._send(404, status_body(404, "NotFound", f'{(kind or "").lower()}s "{name}" not found'))
                    if kind == "InferenceService":
                        return self._send(200, standin.isvc_view(obj))
                    if kind == "LLMInferenceService":
                        return self._send(200, standin.llmisvc_view(obj))
                    return self._send(200, obj)

            def do_DELETE(self):
                kind, ns, name, q = self._route()
                if self._record("DELETE", kind, ns, name, q):
                    return
                if standin.forbidden:
                    return self._send(403, status_body(403, "Forbidden", f"cannot delete {kind} in {ns}"))
                sel = dict(kv.split("=", 1) for kv in (q.get("labelSelector") or "").split(",") if kv)
                with standin.lock:
                    gone = []
                    for key, obj in list(standin.objects.items()):
                        labels = obj["metadata"].get("labels") or {}
                        if key[0] == kind and key[1] == ns and (name is None or key[2] == name) and \
                                all(labels.get(k) == v for k, v in sel.items()):
                            gone.append(standin.objects.pop(key))
                self._send(200, {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                                 "details": {"name": name or "", "kind": (kind or "").lower() + "s"}})

        return H
