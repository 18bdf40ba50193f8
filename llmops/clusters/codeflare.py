"""cluster=codeflare: KubeRay on Kubernetes/OpenShift, with the CodeFlare SDK's cluster spec.

raycluster mode: build the RayCluster body (``kuberay.raycluster_body``: the SDK's pure builder),
check it against the CRD, server-side apply it, wait until KubeRay reports it ready, submit the
training job to its dashboard with the kube credentials' ``Authorization`` header, follow it like
``cluster=ray``, and delete the RayCluster on success, failure and Ctrl-C unless
``cluster.keep``. A RayCluster that already existed under ``cluster.name`` is used and left as
found.

rayjob mode: one RayJob with the cluster inline (``shutdownAfterJobFinishes``, TTL, Kueue
``suspend``), followed to a final ``jobDeploymentStatus``; the result is read from the job's logs
through ``status.dashboardURL`` while the TTL keeps the finished cluster.

The Kubernetes calls go through :class:`KubeApi` (CoreV1Api + CustomObjectsApi) rather than
``codeflare_sdk.Cluster``: ``Cluster(...)`` calls the API while it is constructed, and its
``apply()``/``down()`` print API errors and return instead of raising, so a failed apply or
delete could not be told apart from a good one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Callable, Optional

from llmops.clusters import kuberay
from llmops.clusters.job_entry import RESULT_MARK
from llmops.clusters.ray_jobs import (DEFAULT_CALLABLE, JobFailed, connect,
                                      parse_result, submission_id, submit_and_follow, tail,
                                      write_payload)
from llmops.core import secrets
from llmops.core.errors import LLMOpsError
from llmops.run import TrainingTask, TrainOutputs

log = logging.getLogger("llmops.clusters")

RAY = ("ray.io", "v1")
KUEUE = ("kueue.x-k8s.io", "v1beta1")
RAYJOB_FINAL = {"Complete", "Failed"}


# ------------------------------------------------------------------------------------ kubernetes
class KubeApi:
    """The few Kubernetes calls llmops makes, with errors a user can act on."""

    def __init__(self, core, custom, api_client=None, server: str = "the Kubernetes API server"):
        self.core = core
        self.custom = custom
        self.api_client = api_client
        self.server = server

    # -- credentials
    @classmethod
    def from_config(cls, cfg) -> "KubeApi":
        """kubeconfig, in-cluster service account, or a token and server from the environment."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        c = cfg.cluster
        method = str(c.auth)
        if method == "auto":
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                method = "incluster"
            elif os.environ.get(str(c.bearer_env)) and os.environ.get(str(c.server_env)):
                method = "token"
            else:
                method = "kubeconfig"
        conf = client.Configuration()
        try:
            if method == "token":
                token, server = os.environ.get(str(c.bearer_env)), os.environ.get(str(c.server_env))
                if not token or not server:
                    raise LLMOpsError(
                        f"cluster.auth = token: set {c.bearer_env} (a bearer token) and "
                        f"{c.server_env} (the API server URL) in the environment")
                secrets.remember(token)
                conf.host = server
                conf.api_key = {"authorization": token}
                conf.api_key_prefix = {"authorization": "Bearer"}
            elif method == "incluster":
                config.load_incluster_config(client_configuration=conf)
            else:
                # $KUBECONFIG now, not as the client read it when it was imported
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                        client_configuration=conf)
        except ConfigException as e:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            if method == "incluster":
                raise LLMOpsError(f"cluster.auth = incluster: no service account here ({e})") from None
            raise LLMOpsError(
                f"cluster.auth = {c.auth}: no usable kubeconfig ({where}: {e}). Log in first "
                f"(`oc login ...` or `kubectl config use-context ...`), or set cluster.auth=token "
                f"with {c.bearer_env} and {c.server_env} in the environment") from None
        api_client = client.ApiClient(conf)
        return cls(client.CoreV1Api(api_client), client.CustomObjectsApi(api_client), api_client,
                   server=conf.host)

    def auth_header(self) -> dict:
        """The Authorization header of these credentials (for the Ray dashboard), if any."""
        if self.api_client is None:
            return {}
        value = self.api_client.configuration.get_api_key_with_prefix("authorization")
        if value:
            secrets.remember(value.split(" ", 1)[-1])
            return {"Authorization": value}
        return {}

    # -- errors
    def _error(self, e: Exception, doing: str) -> LLMOpsError:
        status = getattr(e, "status", None)
        if status == 401:
            return LLMOpsError(
                f"{doing}: {self.server} answered 401 Unauthorized: the token has expired or is "
                "not valid. Log in again (`oc login` / refresh the kubeconfig) or renew the token")
        if status == 403:
            reason = _reason(e)
            return LLMOpsError(f"{doing}: forbidden (403) by {self.server}: {reason}")
        if status is None or status == 0:
            return LLMOpsError(
                f"{doing}: the Kubernetes API server at {self.server} is unreachable "
                f"({type(e).__name__}: {str(e)[:300]}). Check the kubeconfig's server, the VPN, "
                "or that the cluster is up")
        return LLMOpsError(f"{doing}: HTTP {status} from {self.server}: {_reason(e)}")

    def _call(self, doing: str, fn: Callable, *args, **kw):
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kw)
        except (KeyboardInterrupt, LLMOpsError):
            raise
        except ApiException as e:
            raise self._error(e, doing) from None
        except Exception as e:  # urllib3 connection errors, timeouts, TLS
            raise self._error(e, doing) from None

    @staticmethod
    def _is_404(e: Exception) -> bool:
        return getattr(e, "status", None) == 404

    def _get_or_none(self, doing: str, fn: Callable, **kw) -> Optional[dict]:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(**kw)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._error(e, doing) from None
        except KeyboardInterrupt:
            raise
        except Exception as e:
            raise self._error(e, doing) from None

    # -- checks
    def check_namespace(self, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespace(namespace)
        except ApiException as e:
            if e.status == 404:
                raise LLMOpsError(f"cluster.namespace = {namespace!r}: no such namespace on "
                                  f"{self.server}; create it or pick another") from None
            if e.status == 403:  # may not read namespaces at cluster scope: the apply will tell
                return
            raise self._error(e, f"reading namespace {namespace}") from None
        except KeyboardInterrupt:
            raise
        except Exception as e:
            raise self._error(e, f"reading namespace {namespace}") from None

    def check_local_queue(self, namespace: str, queue: str) -> None:
        found = self._get_or_none(
            f"reading Kueue LocalQueue {queue}", self.custom.get_namespaced_custom_object,
            group=KUEUE[0], version=KUEUE[1], namespace=namespace, plural="localqueues", name=queue)
        if found is None:
            raise LLMOpsError(f"cluster.local_queue = {queue!r}: no Kueue LocalQueue of that name in "
                              f"namespace {namespace!r} (kubectl get localqueues -n {namespace})")

    # -- RayCluster / RayJob
    def get(self, plural: str, namespace: str, name: str) -> Optional[dict]:
        return self._get_or_none(f"reading {plural}/{name}", self.custom.get_namespaced_custom_object,
                                 group=RAY[0], version=RAY[1], namespace=namespace, plural=plural,
                                 name=name)

    def apply(self, plural: str, body: dict, timeout_s: int) -> dict:
        md = body["metadata"]
        return self._call(
            f"applying {body['kind']} {md['name']} in {md['namespace']}",
            self.custom.patch_namespaced_custom_object, RAY[0], RAY[1], md["namespace"], plural,
            md["name"], body, field_manager="llmops", force=True, field_validation="Strict",
            _content_type="application/apply-patch+yaml", _request_timeout=timeout_s)

    def delete(self, plural: str, namespace: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(RAY[0], RAY[1], namespace, plural, name,
                                                        propagation_policy="Foreground")
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise self._error(e, f"deleting {plural}/{name}") from None
        except Exception as e:
            raise self._error(e, f"deleting {plural}/{name}") from None


def _reason(e: Exception) -> str:
    body = getattr(e, "body", None)
    try:
        msg = json.loads(body).get("message") if body else None
    except (ValueError, TypeError, AttributeError):
        msg = None
    return msg or getattr(e, "reason", None) or str(e)[:300]


# --------------------------------------------------------------------------------------- backend
class CodeflareBackend:
    """Bring up a KubeRay cluster (or one RayJob), train there, take it down."""

    def __init__(self, cfg, *, kube: Optional[KubeApi] = None,
                 train_callable: str = DEFAULT_CALLABLE, extra_py_modules: list[str] = (),
                 echo: Callable[[str], None] = None, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.kube = kube
        self.train_callable = train_callable
        self.extra_py_modules = list(extra_py_modules)
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.sleep = sleep
        self.mode = str(getattr(cfg.cluster.mode, "value", cfg.cluster.mode))
        self.name: Optional[str] = None
        self.created = False  # llmops made the object: llmops deletes it
        self.reused = False
        self.client = None
        self.dashboard: Optional[str] = None

    @property
    def namespace(self) -> str:
        return str(self.cfg.cluster.namespace)

    @property
    def plural(self) -> str:
        return "rayjobs" if self.mode == "rayjob" else "rayclusters"

    # -- plan
    def plan(self, cfg, ctx) -> dict:
        if self.mode == "rayjob":
            body = kuberay.rayjob_body(cfg, self._entrypoint(), self._rayjob_runtime_env_plan(cfg))
        else:
            body = kuberay.raycluster_body(cfg)
        kuberay.check_body(body)
        return {"mode": self.mode, "namespace": self.namespace,
                "name": body["metadata"]["name"],
                "deletes_after_run": not cfg.cluster.keep,
                "dashboard": self._dashboard_url(body["metadata"]["name"])
                if self.mode != "rayjob" else "status.dashboardURL of the RayJob",
                "objects": [body]}

    def _entrypoint(self) -> str:
        return f"{self.cfg.cluster.python or 'python'} -m llmops.clusters.job_entry"

    def _rayjob_runtime_env_plan(self, cfg) -> dict:
        rt = {"env_vars": {"LLMOPS_PAYLOAD": "<payload: resolved config and run, set at submit>"}}
        if cfg.cluster.pip:
            rt["pip"] = [str(p) for p in cfg.cluster.pip]
        return rt

    def _dashboard_url(self, name: str) -> str:
        if self.cfg.cluster.dashboard_url:
            return str(self.cfg.cluster.dashboard_url).rstrip("/")
        return f"http://{name}-head-svc.{self.namespace}.svc:8265"

    def _headers(self) -> dict:
        headers = dict(self.kube.auth_header())
        headers.update({str(k): str(v) for k, v in (self.cfg.cluster.headers or {}).items()})
        return headers

    # -- bring up
    def __enter__(self) -> "CodeflareBackend":
        c = self.cfg.cluster
        if self.kube is None:
            self.kube = KubeApi.from_config(self.cfg)
        self.kube.check_namespace(self.namespace)
        if c.local_queue:
            self.kube.check_local_queue(self.namespace, str(c.local_queue))
        if self.mode == "rayjob":
            self.name = kuberay.rayjob_name(self.cfg)
            return self
        self.name = kuberay.cluster_name(self.cfg)
        try:
            existing = self.kube.get("rayclusters", self.namespace, self.name)
            if existing is not None:
                self.reused = True
                self.echo(f"[llmops] using the existing RayCluster {self.name} in {self.namespace} "
                          "(it is left running afterwards)")
            else:
                body = kuberay.check_body(kuberay.raycluster_body(self.cfg, self.name))
                self.created = True  # from here on, a failure still deletes
                self.kube.apply("rayclusters", body, int(c.apply_timeout_s))
                self.echo(f"[llmops] applied RayCluster {self.name} in {self.namespace}")
            self._wait_ready()
            self.dashboard = self._dashboard_url(self.name)
            self.client = connect(self.dashboard, self._headers(),
                                  key="cluster.dashboard_url (the RayCluster's dashboard)")
        except BaseException:
            self._down()
            raise
        return self

    def _wait_ready(self) -> None:
        c = self.cfg.cluster
        t0, last = time.time(), None
        while True:
            obj = self.kube.get("rayclusters", self.namespace, self.name) or {}
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

    # -- train
    def run_training(self, cfg, task: TrainingTask) -> TrainOutputs:
        if self.mode == "rayjob":
            return TrainOutputs.from_dict(self._run_rayjob(cfg, task))
        job_dir = Path(task.run_dir) / "train" / "job"
        job_dir.mkdir(parents=True, exist_ok=True)
        _, env = write_payload(job_dir, cfg, task, train_callable=self.train_callable)
        from llmops.clusters.ray_jobs import runtime_env

        rt = runtime_env(cfg, job_dir, env, self.extra_py_modules)
        return TrainOutputs.from_dict(submit_and_follow(
            self.client, cfg, address=self.dashboard, entrypoint=f"{self._entrypoint()} payload.json",
            runtime_env=rt, submission_id=submission_id(cfg), echo=self.echo,
            key="cluster.dashboard_url (the RayCluster's dashboard)"))

    def _run_rayjob(self, cfg, task: TrainingTask) -> dict:
        from llmops.clusters.ray_jobs import job_config, task_payload

        c = cfg.cluster
        config, _ = job_config(cfg, pass_secrets=False)
        payload = {"config": config, "run": task_payload(task), "callable": self.train_callable}
        rt = {"env_vars": {"LLMOPS_PAYLOAD": json.dumps(payload, default=str),
                           "PYTHONUNBUFFERED": "1"}}
        if c.pip:
            rt["pip"] = [str(p) for p in c.pip]
        body = kuberay.check_body(kuberay.rayjob_body(cfg, self._entrypoint(), rt, self.name))
        self.created = True
        self.kube.apply("rayjobs", body, int(c.apply_timeout_s))
        self.echo(f"[llmops] applied RayJob {self.name} in {self.namespace}")
        t0, last, started = time.time(), None, None
        while True:
            st = (self.kube.get("rayjobs", self.namespace, self.name) or {}).get("status") or {}
            dep, job = st.get("jobDeploymentStatus") or "", st.get("jobStatus") or ""
            if (dep, job) != last:
                self.echo(f"[llmops] RayJob {self.name}: {dep or 'pending'} {job}".rstrip())
                last = (dep, job)
            if job in ("RUNNING", "SUCCEEDED", "FAILED", "STOPPED") and started is None:
                started = time.time()
            if dep in RAYJOB_FINAL:
                break
            if started is None and time.time() - t0 > c.ready_timeout_s:
                raise LLMOpsError(
                    f"RayJob {self.name}: its cluster did not start the job within "
                    f"cluster.ready_timeout_s = {c.ready_timeout_s} s (deployment status: "
                    f"{dep or 'pending'}{'; Kueue has not admitted it' if dep == 'Suspended' else ''})")
            if c.job_timeout_s and started and time.time() - started > c.job_timeout_s + 60:
                raise LLMOpsError(f"RayJob {self.name} ran longer than cluster.job_timeout_s = "
                                  f"{c.job_timeout_s} s")
            self.sleep(float(c.poll_interval_s))
        logs = self._rayjob_logs(st)
        if dep == "Failed" or job != "SUCCEEDED":
            reason = st.get("message") or st.get("reason") or job or dep
            raise JobFailed(f"RayJob {self.name} ended {dep}/{job or '-'}: {secrets.scrub(str(reason))}"
                            + (f"\nLast log lines:\n{secrets.scrub(tail(logs))}" if logs else ""))
        result = parse_result(logs or "")
        if result is None:
            raise JobFailed(f"RayJob {self.name} succeeded but its logs (via "
                            f"{st.get('dashboardURL') or 'no dashboardURL'}) hold no "
                            f"'{RESULT_MARK.strip()}' line")
        return result

    def _rayjob_logs(self, st: dict) -> Optional[str]:
        url, job_id = st.get("dashboardURL"), st.get("jobId")
        if not url or not job_id:
            return None
        url = str(url) if str(url).startswith("http") else f"http://{url}"
        try:
            client = connect(url, self._headers(), key="status.dashboardURL of the RayJob")
            logs = client.get_job_logs(job_id)
        except LLMOpsError as e:
            log.warning("%s", e)
            return None
        if self.cfg.cluster.follow_logs:
            for line in logs.splitlines():
                if not line.startswith(RESULT_MARK):
                    self.echo(secrets.scrub(line))
        return logs

    # -- take down
    def _down(self) -> None:
        if not self.name:
            return
        if self.reused:
            return
        if not self.created:
            return
        if self.cfg.cluster.keep:
            self.echo(f"[llmops] cluster.keep=true: {self.plural}/{self.name} stays in "
                      f"{self.namespace}; delete it with `kubectl delete {self.plural} {self.name} "
                      f"-n {self.namespace}`")
            return
        try:
            if self.kube.delete(self.plural, self.namespace, self.name):
                self.echo(f"[llmops] deleted {self.plural}/{self.name} in {self.namespace}")
        except LLMOpsError as e:
            self.echo(f"[llmops] could not delete {self.plural}/{self.name}: {e}")
        self.created = False

    def __exit__(self, *exc) -> None:
        self.client = None
        self._down()
