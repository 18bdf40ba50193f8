"""cluster=codeflare cluster.mode=raycluster: a RayCluster for the run.

Build the RayCluster body (``kuberay.raycluster_body``: the CodeFlare SDK's pure builder), check it
against the CRD, server-side apply it (after its env Secret, if any), wait until KubeRay reports it
ready, submit the training job to its dashboard with the kube credentials' ``Authorization``
header, follow it like ``cluster=ray``, and delete the RayCluster (and its env Secret) on success,
failure and Ctrl-C unless ``cluster.keep``. A RayCluster that already existed under
``cluster.name`` is used and left as found.

The Kubernetes calls go through ``llmops.k8s.client.Kube`` rather than ``codeflare_sdk.Cluster``:
``Cluster(...)`` calls the API while it is constructed, and its ``apply()``/``down()`` print API
errors and return instead of raising, so a failed apply or delete could not be told apart from a
good one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from llmops.clusters import kuberay
from llmops.clusters.ray_jobs import connect, runtime_env, submission_id, submit_and_follow, write_payload
from llmops.core.errors import LLMOpsError
from llmops.run import TrainingTask, TrainOutputs

DASHBOARD_KEY = "cluster.dashboard_url (the RayCluster's dashboard)"


class RayClusterBackend(kuberay.KubeRayBackend):
    """Bring up a KubeRay RayCluster, train on it through its dashboard, take it down."""

    KIND = "RayCluster"
    LABEL = "ray.io/cluster"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.reused = False
        self.client = None
        self.dashboard: Optional[str] = None

    def plan(self, cfg, ctx) -> dict:
        body = kuberay.raycluster_body(cfg)
        return {**self.plan_objects(cfg, body),
                "dashboard": self._dashboard_url(body["metadata"]["name"])}

    def _dashboard_url(self, name: str) -> str:
        if self.cfg.cluster.dashboard_url:
            return str(self.cfg.cluster.dashboard_url).rstrip("/")
        return f"http://{name}-head-svc.{self.namespace}.svc:8265"

    def __enter__(self) -> "RayClusterBackend":
        self.name = kuberay.cluster_name(self.cfg)
        self.connect()
        try:
            if self.kube.get(kuberay.RAY_API, self.KIND, self.namespace, self.name) is not None:
                self.reused = True
                self.echo(f"[llmops] using the existing RayCluster {self.name} in {self.namespace} "
                          "(it is left running afterwards)")
            else:
                self.apply(kuberay.raycluster_body(self.cfg, self.name))
            self._wait_ready()
            self.dashboard = self._dashboard_url(self.name)
            self.client = connect(self.dashboard, self.headers(), key=DASHBOARD_KEY)
        except BaseException:
            self.down()
            raise
        return self

    def _wait_ready(self) -> None:
        c = self.cfg.cluster
        t0, last = time.time(), None
        while True:
            obj = self.kube.get(kuberay.RAY_API, self.KIND, self.namespace, self.name) or {}
            st = obj.get("status") or {}
            state = st.get("state") or ""
            if state != last:
                self.echo(f"[llmops] RayCluster {self.name}: {state or 'pending'}")
                last = state
            if state == "ready":
                return
            if state == "failed":
                raise LLMOpsError(f"RayCluster {self.name} failed: {st.get('reason') or st}")
            if time.time() - t0 > c.ready_timeout_s:
                hint = " Kueue has not admitted it (quota?)." if state == "suspended" else ""
                raise LLMOpsError(
                    f"RayCluster {self.name} in {self.namespace} was not ready within "
                    f"cluster.ready_timeout_s = {c.ready_timeout_s} s (state: {state or 'pending'}"
                    f"{', reason: ' + str(st.get('reason')) if st.get('reason') else ''}).{hint} "
                    "Check `kubectl get pods -l ray.io/cluster=" + self.name + "` for pending pods "
                    "or image pull errors")
            self.sleep(float(c.poll_interval_s))

    def run_training(self, cfg, task: TrainingTask) -> TrainOutputs:
        job_dir = Path(task.run_dir) / "train" / "job"
        job_dir.mkdir(parents=True, exist_ok=True)
        _, env = write_payload(job_dir, cfg, task, train_callable=self.train_callable)
        rt = runtime_env(cfg, job_dir, env, self.extra_py_modules)
        return TrainOutputs.from_dict(submit_and_follow(
            self.client, cfg, address=self.dashboard, entrypoint=f"{self.entrypoint()} payload.json",
            runtime_env=rt, submission_id=submission_id(cfg), echo=self.echo, key=DASHBOARD_KEY))

    def __exit__(self, *exc) -> None:
        self.client = None
        self.down()
