"""cluster=kubeflow: the train stage as one Kubeflow Trainer v2 TrainJob, through the Kubeflow SDK.

The job is a ``CustomTrainer`` whose function (``trainjob_entry.train_func``) runs under torchrun
training process and calls ``llmops.training.loop.fit_torchrun``: the same training function
Ray Train runs, behind the TrainContext seam (checkpoints and metrics.jsonl written the same way,
resume from the latest checkpoint). Its only argument is the payload (resolved config with
secrets as ``${oc.env:...}`` references, and the run), base64-encoded so the SDK's shell
here-document leaves it alone. Rank 0 prints ``LLMOPS_RESULT {json}``; the submitter follows the
job's status and logs and reads that line.

mode=cluster: ``TrainerClient(KubernetesBackendConfig)`` against the cluster of the kube
credentials (the same credentials path as cluster=codeflare). Before submitting: the namespace,
the Kueue LocalQueue and the runtime are checked (it must exist and be a torch runtime). The
TrainJob is deleted at the end unless ``cluster.keep``, and on failure, timeout and Ctrl-C.
Credentials reach the pods only as Secret references (``cluster.env_from``: a RuntimePatch
with ``valueFrom.secretKeyRef``); the TrainJob holds no secret value.

mode=local: ``TrainerClient(LocalProcessBackendConfig)``, the SDK's local process backend: one
node, native processes on this machine. That backend makes a fresh venv, runs ``pip install``
of the runtime's packages (``torch``) and then ``<venv>/bin/torchrun``. llmops keeps it offline
and does not download a second torch: it overrides the ``torch`` requirement with one whose
marker never matches, and installs a small local wheel made here that links the venv to this
Python's environment (a ``.pth``) and provides the ``torchrun`` command (pip runs with
``PIP_NO_INDEX`` and no config file). The SDK's job thread changes the process's working
directory while the job runs; llmops waits until it is back before returning.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from llmops.clusters.job_entry import RESULT_MARK
from llmops.clusters.trainjob_entry import ERROR_MARK, train_func
from llmops.clusters.ray_jobs import JobFailed, job_config, parse_result, tail, task_payload
from llmops.core import secrets
from llmops.core.errors import ConfigError, LLMOpsError
from llmops.run import TrainingTask, TrainOutputs

log = logging.getLogger("llmops.clusters")

GROUP, VERSION = "trainer.kubeflow.org", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "llmops"}
TRAINJOB_MAX = 40  # the TrainJob name: DNS-1035; JobSet appends "-node-0-0-<hash>" for its pods
JOB_MARK_ENV = "LLMOPS_TRAINJOB"  # every local process of a job carries it: found and ended by it
PLAN_PAYLOAD = "<payload: resolved config and run, base64, set at submit>"
ENTRY_WHEEL = "llmops_kubeflow_local-0.0.0-py3-none-any.whl"
FINAL = {"Complete", "Failed"}


def _v(x) -> str:
    return str(getattr(x, "value", x))


def require_sdk() -> None:
    """The Kubeflow SDK is an optional dependency: say how to get it."""
    try:
        import kubeflow.trainer  # noqa: F401
    except ImportError as e:
        raise LLMOpsError(f"cluster=kubeflow needs the Kubeflow SDK ({e}): pip install "
                          "'llmops[kubeflow]' (PyPI kubeflow 0.5)") from None


def encode_payload(cfg, task: TrainingTask) -> str:
    config, _ = job_config(cfg, pass_secrets=False)  # references only: the TrainJob is not a secret
    payload = {"config": config, "run": task_payload(task)}
    return base64.b64encode(json.dumps(payload, default=str).encode()).decode()


# ------------------------------------------------------------------------------------ the body
def mode(cfg) -> str:
    return _v(cfg.cluster.mode)


def job_name(cfg) -> str:
    """cluster.name when set (checked), else derived from the run id: DNS-1035, <= 40 characters."""
    from llmops.core.names import dns1035_problem, k8s_name

    given = cfg.cluster.name
    if not given:
        return k8s_name(str(cfg.run_id), TRAINJOB_MAX, dns1035=True)
    problem = dns1035_problem(str(given), TRAINJOB_MAX)
    if problem is not None:
        raise ConfigError([f"cluster.name: {problem} (a TrainJob name)"])
    return str(given)


def resources_per_node(cfg) -> dict:
    c = cfg.cluster
    res = {"cpu": str(int(c.node_cpus)), "memory": f"{int(c.node_memory_gb)}Gi"}
    if int(c.node_gpus):
        res["gpu"] = str(int(c.node_gpus))
    return res


def custom_trainer(cfg, payload: str, *, local: Optional[dict] = None):
    """The SDK's CustomTrainer for this run. `local`: the extra settings of mode=local
    (packages, index URLs, environment)."""
    from kubeflow.trainer import CustomTrainer

    c = cfg.cluster
    if local is not None:
        return CustomTrainer(func=train_func, func_args={"payload": payload}, **local)
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           **{str(k): str(v) for k, v in (c.envs or {}).items()}}
    return CustomTrainer(
        func=train_func, func_args={"payload": payload}, num_nodes=int(c.nodes),
        resources_per_node=resources_per_node(cfg), image=str(c.image) if c.image else None,
        packages_to_install=[str(p) for p in c.pip] or None, env=env)


def labels(cfg) -> dict:
    out = {**MANAGED_BY, **{str(k): str(v) for k, v in (cfg.cluster.labels or {}).items()}}
    if cfg.cluster.local_queue:
        out[QUEUE_LABEL] = str(cfg.cluster.local_queue)
    return out


def secret_env(cfg) -> list[dict]:
    """cluster.env_from ["ENV=secret-name/key"] as container env entries with secretKeyRef."""
    out = []
    for item in cfg.cluster.env_from or []:
        env, _, ref = str(item).partition("=")
        secret, _, key = ref.partition("/")
        out.append({"name": str(env), "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return out


def job_options(cfg, name: str) -> list:
    """SDK options for mode=cluster: name, labels (Kueue queue), deadline, Secret-backed env."""
    from kubeflow.trainer.options import ActiveDeadlineSeconds, Labels, Name, RuntimePatch
    from kubeflow.trainer.options.kubernetes import (ContainerPatch, JobSetSpecPatch,
                                                     JobSetTemplatePatch, JobSpecPatch,
                                                     JobTemplatePatch, PodSpecPatch,
                                                     PodTemplatePatch, ReplicatedJobPatch,
                                                     TrainingRuntimeSpecPatch)

    c = cfg.cluster
    options = [Name(name), Labels(labels(cfg))]
    if int(c.job_timeout_s):
        options.append(ActiveDeadlineSeconds(int(c.job_timeout_s)))
    env = secret_env(cfg)
    if env:
        pod = PodSpecPatch(containers=[ContainerPatch(name="node", env=env)])
        job = JobTemplatePatch(spec=JobSpecPatch(template=PodTemplatePatch(spec=pod)))
        options.append(RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(
            template=JobSetTemplatePatch(spec=JobSetSpecPatch(
                replicated_jobs=[ReplicatedJobPatch(name="node", template=job)])))))
    return options


def stock_runtime(cfg):
    """The runtime as the SDK describes it, for a plan made without the cluster: the stock
    ``torch-distributed`` ClusterTrainingRuntime (torchrun; kubeflow/trainer v2.3.0)."""
    from kubeflow.trainer import Runtime, RuntimeKind, RuntimeTrainer, TrainerType
    from kubeflow.trainer.constants import constants

    trainer = RuntimeTrainer(trainer_type=TrainerType.CUSTOM_TRAINER, framework="torch",
                             image="pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime")
    trainer.set_command(constants.TORCH_COMMAND)
    return Runtime(name=str(cfg.cluster.runtime), trainer=trainer,
                   kind=RuntimeKind.CLUSTER_TRAINING_RUNTIME)


def trainjob_body(cfg, payload: str, name: str, runtime=None) -> dict:
    """The TrainJob the SDK's ``train()`` creates for these inputs, built here without an API
    call from the SDK's own public pieces (its trainer builder and its options)."""
    require_sdk()
    from kubeflow.trainer.backends.kubernetes import utils
    from kubeflow.trainer.backends.kubernetes.backend import KubernetesBackend
    from kubeflow_trainer_api import models

    runtime = runtime or stock_runtime(cfg)
    trainer = custom_trainer(cfg, payload)
    spec: dict = {}
    # the options check they are given a Kubernetes backend; they read nothing from it
    offline = KubernetesBackend.__new__(KubernetesBackend)
    for option in job_options(cfg, name):
        option(spec, trainer, offline)
    trainer_cr = utils.get_trainer_cr_from_custom_trainer(runtime, trainer)
    job_spec = models.TrainerV1alpha1TrainJobSpec(
        runtimeRef=models.TrainerV1alpha1RuntimeRef(name=runtime.name, kind=runtime.kind.value),
        trainer=trainer_cr,
        runtimePatches=[models.TrainerV1alpha1RuntimePatch.from_dict(p)
                        for p in spec.get("spec", {}).get("runtimePatches", [])] or None,
        activeDeadlineSeconds=spec.get("spec", {}).get("activeDeadlineSeconds"))
    body = models.TrainerV1alpha1TrainJob(
        apiVersion=API_VERSION, kind="TrainJob",
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, labels=spec["metadata"].get("labels")),
        spec=job_spec).to_dict()
    body["metadata"]["namespace"] = str(cfg.cluster.namespace)
    return body


def check_body(body: dict) -> dict:
    from llmops.k8s.validate import problems

    probs = problems(body)
    if probs:
        raise LLMOpsError("the TrainJob does not match the Kubeflow Trainer CRD:\n"
                          + "\n".join(f"  - {p}" for p in probs))
    return body


# ------------------------------------------------------------------------------ mode=local
def entry_wheel(folder: Path) -> Path:
    """A wheel linking a fresh venv to this Python's environment and providing `torchrun`:
    what the SDK's local backend would otherwise download (torch) into its venv."""
    import hashlib
    import site
    import zipfile

    import llmops

    root = str(Path(llmops.__file__).resolve().parent.parent)
    paths = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    lines = [*paths, *[f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]]
    dist = "llmops_kubeflow_local-0.0.0.dist-info"
    files = {
        "llmops_kubeflow_local.pth": "\n".join(lines) + "\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: llmops-kubeflow-local\nVersion: 0.0.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: llmops\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\ntorchrun = torch.distributed.run:main\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ENTRY_WHEEL
    record = []
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            data = text.encode()
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        z.writestr(f"{dist}/RECORD", "\n".join(record + [f"{dist}/RECORD,,"]) + "\n")
    return path


def check_local_python() -> None:
    """The SDK makes its venv with the `python` on PATH: it must be this Python's version, or
    the linked environment would not import there."""
    import subprocess

    exe = shutil.which("python") or shutil.which("python3")
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    got = None
    if exe:
        r = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=30)
        got = r.stdout.strip() or None
    if got != want:
        raise LLMOpsError(
            f"cluster.mode = local: the Kubeflow SDK makes its venv with the `python` on PATH "
            f"({exe or 'none found'}, Python {got or '?'}), not this Python {want} "
            f"({sys.executable}); put this environment's bin folder first on PATH")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_settings(cfg, job_dir: Path, marker: str) -> dict:
    """CustomTrainer settings of mode=local: offline pip, the linking wheel, the environment
    (this one, minus PYTHONPATH, which the wheel carries; plus a free torchrun port and the
    marker that finds the job's processes)."""
    wheel = entry_wheel(job_dir)
    index = job_dir / "no-index"
    index.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false", "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(free_port()), JOB_MARK_ENV: marker,
                **{str(k): str(v) for k, v in (cfg.cluster.envs or {}).items()}})
    return {"packages_to_install": ["torch; python_version < '3'",
                                    f"llmops-kubeflow-local @ {wheel.as_uri()}"],
            "pip_index_urls": [index.as_uri()], "env": env}


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries JOB_MARK_ENV=marker (only a job llmops started has it)."""
    want = f"{JOB_MARK_ENV}={marker}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if want in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def end_marked(marker: str, grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, every process of the local job; returns how many there were."""
    pids = marked_pids(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and marked_pids(marker):
            time.sleep(0.2)
        if not marked_pids(marker):
            break
    return len(pids)


# ----------------------------------------------------------------------------- API errors
def api_error(e: BaseException, doing: str, server: str) -> LLMOpsError:
    """What the SDK raised (RuntimeError/TimeoutError around an ApiException), in a user's words."""
    cur, status, body = e, None, None
    while cur is not None and status is None:
        status = getattr(cur, "status", None)
        body = getattr(cur, "body", None)
        cur = cur.__cause__ or cur.__context__
    msg = ""
    try:
        msg = json.loads(body).get("message", "") if body else ""
    except (ValueError, TypeError, AttributeError):
        msg = str(body)[:300]
    if status in (401, 403):
        return LLMOpsError(f"{doing}: {server} answered {status} ({msg or 'unauthorized'}); log in "
                           "again or check RBAC for TrainJobs in cluster.namespace")
    if status:
        return LLMOpsError(f"{doing}: HTTP {status} from {server}: {msg or e}")
    if isinstance(e, TimeoutError):
        return LLMOpsError(f"{doing}: {server} did not answer in time ({e})")
    return LLMOpsError(f"{doing}: the Kubernetes API server at {server} is unreachable or failed "
                       f"({type(e).__name__}: {str(e)[:300]})")


def _status_of(e: BaseException) -> Optional[int]:
    cur = e
    while cur is not None:
        if getattr(cur, "status", None) is not None:
            return int(cur.status)
        cur = cur.__cause__ or cur.__context__
    return None


# --------------------------------------------------------------------------------- backend
class KubeflowBackend:
    """Run the train stage as a TrainJob (mode=cluster) or the SDK's local processes (mode=local)."""

    def __init__(self, cfg, *, kube=None, echo: Callable[[str], None] = None,
                 sleep: Callable[[float], None] = time.sleep, on_event: Callable = None):
        self.cfg = cfg
        self.mode = mode(cfg)
        self.kube = kube
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.sleep = sleep
        self.on_event = on_event or (lambda name, t: None)
        self.client = None
        self.runtime = None
        self.name: Optional[str] = None
        self.created = False
        self.marker: Optional[str] = None
        self.cwd = os.getcwd()

    @property
    def namespace(self) -> str:
        return str(self.cfg.cluster.namespace)

    @property
    def server(self) -> str:
        return getattr(self.kube, "server", "the Kubernetes API server")

    # -- plan
    def plan(self, cfg, ctx) -> dict:
        c = cfg.cluster
        if self.mode == "local":
            return {"mode": "local", "where": "this machine, through the Kubeflow SDK's local "
                    "process backend (one node; a venv linked to this Python, then torchrun)",
                    "runtime": str(c.runtime), "nodes": 1,
                    "trainer": "llmops.training.loop.fit_torchrun under torchrun", "objects": []}
        body = check_body(trainjob_body(cfg, PLAN_PAYLOAD, job_name(cfg)))
        return {"mode": "cluster", "namespace": self.namespace, "name": body["metadata"]["name"],
                "runtime": f"{c.runtime} (must exist: a TrainingRuntime in the namespace or a "
                           "ClusterTrainingRuntime, with mlPolicy.torch)",
                "nodes": int(c.nodes), "resources_per_node": resources_per_node(cfg),
                "deletes_after_run": not c.keep, "objects": [body]}

    # -- connect
    def __enter__(self) -> "KubeflowBackend":
        require_sdk()
        if self.mode == "local":
            if int(self.cfg.cluster.nodes) != 1:
                raise ConfigError([f"cluster.nodes = {self.cfg.cluster.nodes}: cluster.mode=local "
                                   "runs one node (the SDK's local process backend); set "
                                   "cluster.nodes=1 or cluster.mode=cluster"])
            check_local_python()
            from kubeflow.trainer import LocalProcessBackendConfig, TrainerClient

            self.client = TrainerClient(backend_config=LocalProcessBackendConfig(cleanup_venv=True))
            self.runtime = self.client.get_runtime(str(self.cfg.cluster.runtime)) \
                if str(self.cfg.cluster.runtime) == "torch-distributed" else self._no_local_runtime()
            return self
        from llmops.clusters.kuberay import KUEUE_API
        from llmops.k8s.client import connect

        self.kube = self.kube or connect(self.cfg)  # cluster.auth: one credentials path
        self.kube.check_namespace(self.namespace, "cluster.namespace")
        queue = self.cfg.cluster.local_queue
        if queue and self.kube.get(KUEUE_API, "LocalQueue", self.namespace, str(queue)) is None:
            raise LLMOpsError(f"cluster.local_queue = {str(queue)!r}: no Kueue LocalQueue of that "
                              f"name in namespace {self.namespace!r}")
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient

        quiet = logging.getLogger("kubeflow.trainer.backends.kubernetes.backend")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its control-plane version probe warns on every connect
        try:
            self.client = TrainerClient(backend_config=KubernetesBackendConfig(
                namespace=self.namespace, client_configuration=self.kube.api_client.configuration))
        except Exception as e:
            raise api_error(e, "connecting the Kubeflow Trainer client", self.server) from None
        finally:
            quiet.setLevel(level)
        self.runtime = self._runtime()
        return self

    def _no_local_runtime(self):
        raise ConfigError([f"cluster.runtime = {self.cfg.cluster.runtime!r}: cluster.mode=local has "
                           "one runtime, torch-distributed (the SDK's local process backend)"])

    def _runtime(self):
        name = str(self.cfg.cluster.runtime)
        try:
            rt = self.client.get_runtime(name)
        except Exception as e:
            if _status_of(e) == 404:
                raise LLMOpsError(
                    f"cluster.runtime = {name!r}: no TrainingRuntime of that name in namespace "
                    f"{self.namespace!r} and no ClusterTrainingRuntime on {self.server} (`kubectl "
                    "get clustertrainingruntimes`; the stock torch one is torch-distributed)") from None
            if _status_of(e) is None and "label" in str(e):
                raise LLMOpsError(f"cluster.runtime = {name!r}: {e}") from None
            raise api_error(e, f"reading runtime {name}", self.server) from None
        command = " ".join(rt.trainer.command or ())
        if rt.trainer.framework not in ("torch", "deepspeed") or "torchrun" not in command:
            raise LLMOpsError(
                f"cluster.runtime = {name!r}: not a torch runtime (framework "
                f"{rt.trainer.framework!r}, its trainer runs {command.split()[0] if command else '?'!r}); "
                "llmops trains with torchrun: pick a runtime with mlPolicy.torch, e.g. torch-distributed")
        return rt

    # -- train
    def run_training(self, cfg, task: TrainingTask) -> TrainOutputs:
        from llmops.training.loop import with_metrics_path

        if self.client is None:
            self.__enter__()
        task = with_metrics_path(task)
        payload = encode_payload(cfg, task)
        self.name = job_name(cfg)
        if self.mode == "local":
            self.marker = f"{self.name}-{uuid.uuid4().hex[:8]}"
            self.name = k_local_name(self.name)
            job_dir = Path(task.run_dir) / "train" / "kubeflow"
            trainer = custom_trainer(cfg, payload, local=local_settings(cfg, job_dir, self.marker))
            from kubeflow.trainer.options import Name

            options = [Name(self.name)]
        else:
            trainer = custom_trainer(cfg, payload)
            options = job_options(cfg, self.name)
        self.on_event("submit", time.time())
        try:
            self.created = True  # from here on, a failure deletes what may exist
            self.client.train(runtime=self.runtime, trainer=trainer, options=options)
        except Exception as e:
            if self.mode == "local":
                raise LLMOpsError(f"cluster.mode=local: the Kubeflow SDK could not start the job: {e}") from None
            if _status_of(e) == 409:
                self.created = False  # someone else's: never delete it
                raise LLMOpsError(f"TrainJob {self.name} already exists in {self.namespace}: set "
                                  f"cluster.name to another name, or delete it") from None
            raise api_error(e, f"creating TrainJob {self.name} in {self.namespace}", self.server) from None
        self.echo(f"[llmops] TrainJob {self.name} submitted ({self.mode}"
                  f"{', namespace ' + self.namespace if self.mode == 'cluster' else ''})")
        logs = self._follow()
        return self._outputs(task, logs)

    def _get(self, what: Callable, doing: str):
        try:
            return what()
        except (KeyboardInterrupt, LLMOpsError):
            raise
        except Exception as e:
            raise api_error(e, doing, self.server) from None

    def _logs(self) -> list[str]:
        try:
            return list(self.client.get_job_logs(self.name))
        except Exception as e:  # a pod that is gone or not started: no logs yet
            log.debug("logs of %s: %s", self.name, e)
            return []

    def _follow(self) -> str:
        c = self.cfg.cluster
        t0, started, last, seen, lines = time.time(), None, None, 0, []
        while True:
            job = self._get(lambda: self.client.get_job(self.name), f"reading TrainJob {self.name}")
            status = str(job.status)
            if status != last:
                self.echo(f"[llmops] TrainJob {self.name}: {status} ({time.time() - t0:.1f} s)")
                self.on_event(status, time.time())
                last = status
            if started is None and status != "Created":
                started = time.time()
            lines = self._logs() or lines
            if c.follow_logs:
                for line in lines[seen:]:
                    if not line.startswith(RESULT_MARK):
                        self.echo(secrets.scrub(line))
            seen = max(seen, len(lines))
            if status in FINAL:
                break
            now = time.time()
            if started is None and int(c.ready_timeout_s) and now - t0 > int(c.ready_timeout_s):
                raise LLMOpsError(
                    f"TrainJob {self.name} did not start within cluster.ready_timeout_s = "
                    f"{c.ready_timeout_s} s (still {status}: pods pending, an image that does not "
                    f"pull, or a Kueue queue without quota). `kubectl describe trainjob {self.name} "
                    f"-n {self.namespace}` tells why; llmops deletes it now")
            if int(c.job_timeout_s) and started and now - started > int(c.job_timeout_s):
                raise LLMOpsError(f"TrainJob {self.name} ran longer than cluster.job_timeout_s = "
                                  f"{c.job_timeout_s} s and is deleted")
            self.sleep(float(c.poll_interval_s))
        self._settle()
        text = "\n".join(self._logs() or lines)
        if status == "Failed":
            raise JobFailed(f"TrainJob {self.name} failed: {self._reason(text)}\n"
                            f"Last log lines:\n{secrets.scrub(tail(text))}")
        return text

    def _settle(self) -> None:
        """mode=local: the SDK's job thread chdirs into its venv while the job runs and back
        after it; wait until it is back, so relative paths mean what they meant."""
        if self.mode != "local":
            return
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if os.getcwd() == self.cwd:
                    return
            except FileNotFoundError:  # the venv it is in was removed
                pass
            time.sleep(0.05)
        os.chdir(self.cwd)

    def _reason(self, text: str) -> str:
        for line in reversed(text.splitlines()):
            if line.startswith(ERROR_MARK):
                try:
                    return secrets.scrub(json.loads(line[len(ERROR_MARK):]))
                except ValueError:
                    break
        if self.mode == "cluster" and self.kube is not None:
            obj = self._raw()
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "Failed" and cond.get("status") == "True":
                    return secrets.scrub(f"{cond.get('reason', '')}: {cond.get('message', '')}")
        return "the training process exited with an error"

    def _raw(self) -> dict:
        try:
            return self.kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "trainjobs", self.name)
        except Exception:
            return {}

    def _outputs(self, task: TrainingTask, logs: str) -> TrainOutputs:
        from llmops.training.loop import finish_files

        result = parse_result(logs)
        if result is None:
            raise JobFailed(f"TrainJob {self.name} completed but printed no "
                            f"'{RESULT_MARK.strip()}' line; last log lines:\n{secrets.scrub(tail(logs))}")
        out = TrainOutputs.from_dict(result.get("outputs"))
        if not (out.loss_plot and Path(out.loss_plot).is_file()):
            out.metrics_file = task.metrics_path
            finish_files(task, out, result.get("history") or [])
        return out

    # -- take down
    def __exit__(self, *exc) -> None:
        if not (self.created and self.name and self.client):
            return
        interrupted = bool(exc) and exc[0] is KeyboardInterrupt
        if self.mode == "local":
            try:
                self.client.delete_job(self.name)
            except Exception:
                pass
            n = end_marked(self.marker) if self.marker else 0
            if n:
                self.echo(f"[llmops] ended {n} process(es) of the local TrainJob {self.name}")
            self._settle()
            self._remove_venvs()
        elif self.cfg.cluster.keep and not interrupted:
            self.echo(f"[llmops] cluster.keep=true: TrainJob {self.name} stays in {self.namespace}; "
                      f"delete it with `kubectl delete trainjob {self.name} -n {self.namespace}`")
        else:
            try:
                self.client.delete_job(self.name)
                self.echo(f"[llmops] deleted TrainJob {self.name} in {self.namespace}")
            except Exception as e:
                if _status_of(e) != 404:
                    self.echo(f"[llmops] could not delete TrainJob {self.name}: "
                              f"{api_error(e, 'deleting', self.server)}")
        self.created = False

    def _remove_venvs(self) -> None:
        """The SDK's venv of this job (tempdir/<name>*): it removes it only after a success."""
        import tempfile

        for d in Path(tempfile.gettempdir()).glob(f"{self.name}*"):
            if d.is_dir() and (d / "pyvenv.cfg").is_file():
                shutil.rmtree(d, ignore_errors=True)


def k_local_name(name: str) -> str:
    """A local job's name: unique per submission (its venv folder is found by it)."""
    return f"{name[:TRAINJOB_MAX - 9]}-{uuid.uuid4().hex[:8]}"
