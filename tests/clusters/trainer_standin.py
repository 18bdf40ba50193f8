"""A stand-in for a Kubernetes API server with Kubeflow Trainer v2 installed, on 127.0.0.1.

It answers what the kubernetes client (and so the Kubeflow SDK) sends for TrainJobs: namespaces,
Kueue LocalQueues, TrainingRuntimes and ClusterTrainingRuntimes (the stock ``torch-distributed``
one by default), TrainJob create/get/delete with Status bodies for errors (404, 409, 400 strict
decoding), the trainer's pods by label selector and their logs. A TrainJob then behaves as
`behaviour` says:

  succeed  pending for a poll, running, then Complete, its node printing `result_line`
  fail     running, then Failed (reason and message in the Failed condition, an LLMOPS_ERROR log)
  pending  its pod stays Pending forever (no node, no quota)
  run      a fake kubelet: the node container's command runs here, under bash, with the
           container's env (secretKeyRef resolved from `secrets`) and torchrun's PET_* variables;
           the pod's phase and log are the process's

It is a test double of the HTTP protocol, not of Kubernetes: no admission, no JobSet controller.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.serving.kube_standin import LoopbackAPIServer

TRAINER = ("trainer.kubeflow.org", "v1alpha1")
IMAGE = "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"


def runtime(name: str = "torch-distributed", framework: str = "torch", kind: str = "ClusterTrainingRuntime",
            namespace: str | None = None) -> dict:
    """A runtime shaped like kubeflow/trainer v2.3.0's manifests/base/runtimes (torch_distributed.yaml);
    framework 'mpi' gives an OpenMPI one (mlPolicy.mpi, no torchrun)."""
    policy = {"numNodes": 1, "torch": {}} if framework == "torch" else \
        {"numNodes": 1, "mpi": {"numProcPerNode": 1, "mpiImplementation": "OpenMPI",
                                "sshAuthMountPath": "/home/mpiuser/.ssh", "runLauncherAsNode": False}}
    meta = {"name": name, "labels": {"trainer.kubeflow.org/framework": framework}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "/".join(TRAINER), "kind": kind, "metadata": meta, "spec": {
        "mlPolicy": policy,
        "template": {"spec": {"replicatedJobs": [{
            "name": "node",
            "template": {"metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                         "spec": {"template": {"spec": {"containers": [{
                             "name": "node", "image": IMAGE,
                             "command": ["/bin/bash", "-c", "echo 'torch-distributed runtime'"]}]}}}}}]}}}}


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class TrainerStandIn(LoopbackAPIServer):
    def __init__(self, namespaces=("default",)):
        self.namespaces = set(namespaces)
        self.queues: set = set()  # (namespace, name) of Kueue LocalQueues
        self.cluster_runtimes = {"torch-distributed": runtime()}
        self.runtimes: dict = {}  # (namespace, name) -> TrainingRuntime
        self.trainjobs: dict = {}  # (namespace, name) -> object
        self.deleted: list = []  # (namespace, name) of deleted TrainJobs
        self.created: list = []  # bodies as posted
        self.secrets: dict = {}  # (namespace, name) -> {key: value}
        self.behaviour = "succeed"
        self.result_line = 'LLMOPS_RESULT {"outputs": {"metrics": {"eval_loss": 1.5}}, "history": []}'
        self.strict_validator = None  # callable(obj) -> list of problems -> 400 when any
        self.polls: dict = {}
        self.procs: dict = {}  # (namespace, name) -> (Popen, log path)
        self.lock = threading.Lock()
        self._listen()

    def stop(self):
        for proc, _ in list(self.procs.values()):
            self._end(proc)
        super().stop()

    # ------------------------------------------------------------------------------ behaviour
    @staticmethod
    def _end(proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def running(self) -> list:
        """(namespace, name) of TrainJobs whose fake node process still runs."""
        return [k for k, (p, _) in self.procs.items() if p.poll() is None]

    def _launch(self, key, job: dict) -> None:
        trainer = job["spec"].get("trainer") or {}
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
               "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PET_NNODES": "1",
               "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
               "PET_MASTER_PORT": str(_free_port())}
        for e in trainer.get("env") or []:
            env[e["name"]] = e["value"]
        for patch in job["spec"].get("runtimePatches") or []:
            for rj in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                for c in rj["template"]["spec"]["template"]["spec"].get("containers") or []:
                    for e in c.get("env") or []:
                        ref = e["valueFrom"]["secretKeyRef"]
                        env[e["name"]] = self.secrets[(key[0], ref["name"])][ref["key"]]
        work = tempfile.mkdtemp(prefix="standin-node-")
        logf = open(os.path.join(work, "log"), "w")
        proc = subprocess.Popen(trainer["command"], cwd=work, env=env, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[key] = (proc, os.path.join(work, "log"))

    def _phase(self, key) -> tuple[str, list, str]:
        """(pod phase, TrainJob conditions, node log) now."""
        n = self.polls[key] = self.polls.get(key, 0) + 1
        if self.behaviour == "pending":
            return "Pending", [], ""
        if self.behaviour == "run":
            proc, path = self.procs[key]
            log = open(path).read()
            rc = proc.poll()
            if rc is None:
                return "Running", [], log
            if rc == 0:
                return "Succeeded", [{"type": "Complete", "status": "True", "reason": "JobSetCompleted",
                                      "message": "jobset completed", "lastTransitionTime": _now()}], log
            return "Failed", [{"type": "Failed", "status": "True", "reason": "JobSetFailed",
                               "message": f"node-0 exited {rc}", "lastTransitionTime": _now()}], log
        if n <= 1:
            return "Pending", [], ""
        if n <= 3:
            return "Running", [], "step 1\nstep 2\n"
        if self.behaviour == "fail":
            return "Failed", [{"type": "Failed", "status": "True", "reason": "JobSetFailed",
                               "message": "jobset failed: node-0 exited 1",
                               "lastTransitionTime": _now()}], \
                'step 1\nTraceback: boom\nLLMOPS_ERROR "training: transformers rejects these settings"\n'
        return "Succeeded", [{"type": "Complete", "status": "True", "reason": "JobSetCompleted",
                              "message": "jobset completed", "lastTransitionTime": _now()}], \
            f"step 1\nstep 2\n{self.result_line}\n"

    def _view(self, key) -> dict:
        job = copy.deepcopy(self.trainjobs[key])
        phase, conds, log = self._phase(key)
        self.trainjobs[key]["_state"] = (phase, log)
        if conds:
            job["status"] = {"conditions": conds}
        return job

    def pod(self, key) -> dict:
        ns, name = key
        phase, _ = self.trainjobs[key].get("_state", ("Pending", ""))
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{name}-node-0-0-abcde", "namespace": ns, "creationTimestamp": _now(),
            "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                       "jobset.sigs.k8s.io/replicatedjob-name": "node",
                       "batch.kubernetes.io/job-completion-index": "0"}},
            "spec": {"containers": [{"name": "node", "image": IMAGE}]},
            "status": {"phase": phase}}

    # ----------------------------------------------------------------------------------- http
    def _handler(self):
        standin = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body, ctype="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _404(self, what):
                self._send(404, status_body(404, "NotFound", f"{what} not found"))

            def _parts(self):
                u = urlparse(self.path)
                return u.path.strip("/").split("/"), {k: v[0] for k, v in parse_qs(u.query).items()}

            def do_GET(self):
                p, q = self._parts()
                with standin.lock:
                    if p[:3] == ["api", "v1", "namespaces"] and len(p) == 4:
                        return self._send(200, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": p[3]}}) \
                            if p[3] in standin.namespaces else self._404(f'namespaces "{p[3]}"')
                    if p[:3] == ["api", "v1", "namespaces"] and len(p) == 5 and p[4] == "pods":
                        m = re.search(r"jobset-name=([^,]+)", q.get("labelSelector", ""))
                        key = (p[3], m.group(1)) if m else None
                        items = [standin.pod(key)] if key in standin.trainjobs else []
                        return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                    if p[:3] == ["api", "v1", "namespaces"] and len(p) == 7 and p[4] == "pods" and p[6] == "log":
                        name = re.sub(r"-node-0-0-abcde$", "", p[5])
                        state = standin.trainjobs.get((p[3], name), {}).get("_state")
                        return self._send(200, state[1], "text/plain") if state else self._404(f'pods "{p[5]}"')
                    if p[:2] == ["apis", "kueue.x-k8s.io"] and len(p) == 7:
                        return self._send(200, {"kind": "LocalQueue", "metadata": {"name": p[6]}}) \
                            if (p[4], p[6]) in standin.queues else self._404(f'localqueues "{p[6]}"')
                    if p[:3] == ["apis", *TRAINER] and len(p) == 5 and p[3] == "clustertrainingruntimes":
                        rt = standin.cluster_runtimes.get(p[4])
                        return self._send(200, rt) if rt else self._404(f'clustertrainingruntimes "{p[4]}"')
                    if p[:3] == ["apis", *TRAINER] and len(p) == 7 and p[5] == "trainingruntimes":
                        rt = standin.runtimes.get((p[4], p[6]))
                        return self._send(200, rt) if rt else self._404(f'trainingruntimes "{p[6]}"')
                    if p[:3] == ["apis", *TRAINER] and len(p) == 7 and p[5] == "trainjobs":
                        key = (p[4], p[6])
                        if key not in standin.trainjobs:
                            return self._404(f'trainjobs "{p[6]}"')
                        view = standin._view(key)
                        view.pop("_state", None)
                        return self._send(200, view)
                    if p[:3] == ["apis", *TRAINER] and len(p) == 6 and p[5] == "trainingruntimes":
                        return self._send(200, {"apiVersion": "/".join(TRAINER), "kind": "TrainingRuntimeList",
                                                "metadata": {}, "items": []})
                    return self._404("/".join(p))

            def do_POST(self):
                p, q = self._parts()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                obj = json.loads(raw)
                if not (p[:3] == ["apis", *TRAINER] and len(p) == 6 and p[5] == "trainjobs"):
                    return self._404("/".join(p))
                ns, name = p[4], obj["metadata"]["name"]
                if ns not in standin.namespaces:
                    return self._404(f'namespaces "{ns}"')
                if standin.strict_validator:
                    probs = standin.strict_validator(obj)
                    if probs:
                        return self._send(400, status_body(400, "BadRequest", "; ".join(probs)))
                with standin.lock:
                    if (ns, name) in standin.trainjobs:
                        return self._send(409, status_body(409, "AlreadyExists",
                                                           f'trainjobs.trainer.kubeflow.org "{name}" already exists'))
                    standin.created.append(copy.deepcopy(obj))
                    obj["metadata"].update({"namespace": ns, "uid": f"uid-{len(standin.created)}",
                                            "creationTimestamp": _now(), "generation": 1})
                    standin.trainjobs[(ns, name)] = obj
                    if standin.behaviour == "run":
                        standin._launch((ns, name), obj)
                self._send(201, obj)

            def do_DELETE(self):
                p, q = self._parts()
                if p[:3] == ["apis", *TRAINER] and len(p) == 7 and p[5] == "trainjobs":
                    key = (p[4], p[6])
                    with standin.lock:
                        if standin.trainjobs.pop(key, None) is None:
                            return self._404(f'trainjobs "{p[6]}"')
                        standin.deleted.append(key)
                        if key in standin.procs:
                            standin._end(standin.procs[key][0])
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                return self._404("/".join(p))

        return H


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
