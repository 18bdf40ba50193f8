"""cluster=codeflare cluster.mode=rayjob: one KubeRay RayJob with its cluster inline.

The RayJob (``kuberay.rayjob_body``: ``shutdownAfterJobFinishes``, TTL, Kueue ``suspend``) carries
the payload (resolved, masked config and the run) in its runtime env; it is applied (after its env
Secret, if any), followed to a final ``jobDeploymentStatus`` (Complete or Failed), and the result
is read from the job's logs through ``status.dashboardURL`` while the TTL keeps the finished
cluster. The RayJob (and its env Secret) is deleted at the end unless ``cluster.keep``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

from llmops.clusters import kuberay
from llmops.clusters.job_entry import RESULT_MARK
from llmops.clusters.ray_jobs import JobFailed, connect, job_config, parse_result, tail, task_payload
from llmops.core import secrets
from llmops.core.errors import LLMOpsError
from llmops.run import TrainingTask, TrainOutputs

log = logging.getLogger("llmops.clusters")

FINAL = {"Complete", "Failed"}  # the only final jobDeploymentStatus values
STARTED = {"RUNNING", "SUCCEEDED", "FAILED", "STOPPED"}


class RayJobBackend(kuberay.KubeRayBackend):
    """Run the training as one RayJob; delete it afterwards."""

    KIND = "RayJob"
    LABEL = "ray.io/job-name"

    def plan(self, cfg, ctx) -> dict:
        rt = {"env_vars": {"LLMOPS_PAYLOAD": "<payload: resolved config and run, set at submit>"}}
        if cfg.cluster.pip:
            rt["pip"] = [str(p) for p in cfg.cluster.pip]
        return {**self.plan_objects(cfg, kuberay.rayjob_body(cfg, self.entrypoint(), rt)),
                "dashboard": "status.dashboardURL of the RayJob"}

    def __enter__(self) -> "RayJobBackend":
        self.name = kuberay.rayjob_name(self.cfg)
        self.connect()
        return self

    def run_training(self, cfg, task: TrainingTask) -> TrainOutputs:
        c = cfg.cluster
        config, _ = job_config(cfg, pass_secrets=False)
        payload = {"config": config, "run": task_payload(task), "callable": self.train_callable}
        rt = {"env_vars": {"LLMOPS_PAYLOAD": json.dumps(payload, default=str),
                           "PYTHONUNBUFFERED": "1"}}
        if c.pip:
            rt["pip"] = [str(p) for p in c.pip]
        self.apply(kuberay.rayjob_body(cfg, self.entrypoint(), rt, self.name))
        st = self._follow()
        dep, job = st.get("jobDeploymentStatus") or "", st.get("jobStatus") or ""
        logs = self._logs(st)
        if dep == "Failed" or job != "SUCCEEDED":
            reason = st.get("message") or st.get("reason") or job or dep
            raise JobFailed(f"RayJob {self.name} ended {dep}/{job or '-'}: {secrets.scrub(str(reason))}"
                            + (f"\nLast log lines:\n{secrets.scrub(tail(logs))}" if logs else ""))
        result = parse_result(logs or "")
        if result is None:
            raise JobFailed(f"RayJob {self.name} succeeded but its logs (via "
                            f"{st.get('dashboardURL') or 'no dashboardURL'}) hold no "
                            f"'{RESULT_MARK.strip()}' line")
        return TrainOutputs.from_dict(result)

    def _follow(self) -> dict:
        """Poll the RayJob until its deployment status is final; returns its status."""
        c = self.cfg.cluster
        t0, last, started = time.time(), None, None
        while True:
            obj = self.kube.get(kuberay.RAY_API, self.KIND, self.namespace, self.name) or {}
            st = obj.get("status") or {}
            dep, job = st.get("jobDeploymentStatus") or "", st.get("jobStatus") or ""
            if (dep, job) != last:
                self.echo(f"[llmops] RayJob {self.name}: {dep or 'pending'} {job}".rstrip())
                last = (dep, job)
            if job in STARTED and started is None:
                started = time.time()
            if dep in FINAL:
                return st
            if started is None and time.time() - t0 > c.ready_timeout_s:
                raise LLMOpsError(
                    f"RayJob {self.name}: its cluster did not start the job within "
                    f"cluster.ready_timeout_s = {c.ready_timeout_s} s (deployment status: "
                    f"{dep or 'pending'}{'; Kueue has not admitted it' if dep == 'Suspended' else ''})")
            if c.job_timeout_s and started and time.time() - started > c.job_timeout_s + 60:
                raise LLMOpsError(f"RayJob {self.name} ran longer than cluster.job_timeout_s = "
                                  f"{c.job_timeout_s} s")
            self.sleep(float(c.poll_interval_s))

    def _logs(self, st: dict) -> Optional[str]:
        url, job_id = st.get("dashboardURL"), st.get("jobId")
        if not url or not job_id:
            return None
        url = str(url) if str(url).startswith("http") else f"http://{url}"
        try:
            client = connect(url, self.headers(), key="status.dashboardURL of the RayJob")
            logs = client.get_job_logs(job_id)
        except LLMOpsError as e:
            log.warning("%s", e)
            return None
        if self.cfg.cluster.follow_logs:
            for line in logs.splitlines():
                if not line.startswith(RESULT_MARK):
                    self.echo(secrets.scrub(line))
        return logs
