"""cluster=ray: the train stage as one Ray job on an existing cluster, through the Jobs API.

The job's runtime env ships the llmops package (``py_modules``) and a working dir holding
``payload.json``: the resolved config and the run (id, directory, prepare_data outputs). Secrets
never enter the payload: a value from ``${oc.env:NAME}`` stays a reference, and a secret-looking
literal becomes ``${oc.env:LLMOPS_SECRET_<KEY>}``; the values travel in the job's ``env_vars``
only when ``cluster.pass_secrets`` is true. The entrypoint (``llmops.clusters.job_entry``) connects
to the cluster, calls the training function and prints ``LLMOPS_RESULT {json}`` as its last log
line; the submitter follows status and logs and parses that line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from llmops.core import secrets
from llmops.clusters.job_entry import RESULT_MARK
from llmops.core.errors import LLMOpsError
from llmops.core.tree import child_nodes
from llmops.run import TrainingTask, TrainOutputs

log = logging.getLogger("llmops.clusters")

DEFAULT_CALLABLE = "llmops.training.loop:fit"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_ENV_NAME = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")
TAIL_LINES = 25
# ---------------------------------------------------------------------------------------- payload
def job_config(cfg, *, pass_secrets: bool) -> tuple[dict, dict]:
    """(config as a plain container safe to ship, env_vars for the job).

    Interpolations are resolved except environment references, which stay references so the
    job reads them from its own environment; secret-looking literals become references too.
    """
    from omegaconf import DictConfig, ListConfig

    from llmops.config.paths import absolute_paths

    # a relative local path means "here" to the user: absolute before it travels (the engine
    # does this before any stage; the same mechanism serves a payload built outside a run)
    absolute_paths(cfg)
    env: dict[str, str] = {}

    def leaf(child, path: str, key: str) -> Any:
        raw = child._value() if child is not None else None
        if isinstance(raw, str) and secrets.ENV_INTERP.search(raw):
            for name in _ENV_NAME.findall(raw):
                if pass_secrets and name in os.environ:
                    secrets.remember(os.environ[name])
                    env[name] = os.environ[name]
            return raw
        value = raw
        if child is not None and child._is_interpolation():
            value = child._dereference_node()._value()
        if hasattr(value, "value") and not isinstance(value, (str, bytes)):
            value = value.value
        if isinstance(value, str) and value and secrets.is_secret_key(key):
            var = "LLMOPS_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", path).upper().strip("_")
            secrets.remember(value)
            if pass_secrets:
                env[var] = value
            return "${oc.env:" + var + "}"
        return value

    def walk(node, path: str) -> Any:
        if isinstance(node, DictConfig):
            out = {}
            for k, child in child_nodes(node, root=path == ""):
                p = f"{path}.{k}" if path else str(k)
                out[k] = walk(child, p) if isinstance(child, (DictConfig, ListConfig)) \
                    else leaf(child, p, str(k))
            return out
        if isinstance(node, ListConfig):
            key = path.rsplit(".", 1)[-1]  # a list's items go by the last part of its path
            return [walk(child, f"{path}.{i}") if isinstance(child, (DictConfig, ListConfig))
                    else leaf(child, f"{path}.{i}", key) for i, child in child_nodes(node)]
        return node

    out = walk(cfg, "")
    return out, env


def default_python(cfg) -> str:
    if cfg.cluster.python:
        return str(cfg.cluster.python)
    host = urlparse(str(cfg.cluster.address or "")).hostname or ""
    # the entrypoint runs with the raylet's PATH: on a head on this machine, name this interpreter
    return sys.executable if host in LOOPBACK else "python"


def package_dir() -> Path:
    import llmops

    return Path(llmops.__file__).resolve().parent


def task_payload(task: TrainingTask) -> dict:
    """The training task as JSON for the job (its run directory made absolute)."""
    d = task.to_dict()
    d["run_dir"] = str(Path(d["run_dir"]).resolve())
    return json.loads(json.dumps(d, default=str))


def write_payload(job_dir: Path, cfg, task: TrainingTask, *, train_callable: str) -> tuple[Path, dict]:
    """payload.json in `job_dir` (atomic); returns (path, env_vars)."""
    from llmops.core.io import atomic_write_json

    config, env = job_config(cfg, pass_secrets=bool(cfg.cluster.pass_secrets))
    payload = {"config": config, "run": task_payload(task), "callable": train_callable}
    path = Path(job_dir) / "payload.json"
    atomic_write_json(path, payload)
    return path, env


def runtime_env(cfg, job_dir: Path, env_vars: dict, extra_py_modules: list[str] = ()) -> dict:
    rt: dict = {
        "working_dir": str(job_dir),
        "py_modules": [str(package_dir()), *map(str, extra_py_modules)],
        "excludes": ["__pycache__", "*.pyc", ".git", "outputs"],
        "env_vars": {"PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **env_vars},
    }
    if cfg.cluster.pip:
        rt["pip"] = [str(p) for p in cfg.cluster.pip]
    return rt


def parse_result(logs: str) -> Optional[dict]:
    for line in reversed(logs.splitlines()):
        i = line.find(RESULT_MARK)
        if i >= 0:
            try:
                return json.loads(line[i + len(RESULT_MARK):])
            except json.JSONDecodeError:
                return None
    return None


def tail(logs: str, n: int = TAIL_LINES) -> str:
    lines = [ln for ln in logs.splitlines() if not ln.startswith(RESULT_MARK)]
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------------------------------- client
def connect(address: str, headers: Optional[dict] = None, *, key: str = "cluster.address"):
    """A JobSubmissionClient for `address`, with errors that say what to do."""
    from ray.job_submission import JobSubmissionClient

    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    for v in headers.values():
        secrets.remember(v.split(" ", 1)[-1])
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except ConnectionError as e:
        raise LLMOpsError(f"{key} = {address}: no Ray dashboard answers there ({e}). Is the "
                          "cluster up, and is this its dashboard URL (port 8265 by default)?") from None
    except Exception as e:
        raise _client_error(e, address, key) from None


def _client_error(e: Exception, address: str, key: str) -> LLMOpsError:
    text = secrets.scrub(str(e))
    if type(e).__name__ == "AuthenticationError" or " 401" in text or "401:" in text:
        first = text.strip().splitlines()[0] if text.strip() else ""
        return LLMOpsError(
            f"{key} = {address}: the Ray dashboard refused the request (HTTP 401/403 "
            f"unauthorized: {first[:200]}). Give a valid bearer token in cluster.headers, e.g. "
            "cluster.headers.Authorization='Bearer ${oc.env:RAY_TOKEN}' (codeflare: the kube "
            "credentials' token is used; log in again if it expired)")
    return LLMOpsError(f"{key} = {address}: the Ray Jobs API failed: {type(e).__name__}: {text}")


class JobFailed(LLMOpsError):
    pass


def _ask_stop(job_id: str) -> bool:
    try:
        ans = input(f"\nStop Ray job {job_id}? [Y/n] ")
    except (EOFError, KeyboardInterrupt):
        return True
    return ans.strip().lower() not in ("n", "no")


def submit_and_follow(client, cfg, *, address: str, entrypoint: str, runtime_env: dict,
                      submission_id: str, echo: Callable[[str], None] = None,
                      ask: Callable[[str], bool] = _ask_stop, on_event: Callable = None,
                      key: str = "cluster.address") -> dict:
    """Submit, follow status and logs to a final state, return the job's result dict."""
    c = cfg.cluster
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    on_event = on_event or (lambda name, t: None)
    try:
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   submission_id=submission_id)
    except Exception as e:
        raise _client_error(e, address, key) from None
    on_event("submitted", time.time())
    log.info("ray job %s submitted to %s", job_id, address)
    t0 = time.time()
    last_status, offset, logs = None, 0, ""
    try:
        while True:
            try:
                status = str(getattr(client.get_job_status(job_id), "value", ""))
                logs = client.get_job_logs(job_id)
            except Exception as e:  # the cluster went away or refused us mid-run
                raise _client_error(e, address, key) from None
            if status != last_status:
                log.info("ray job %s: %s", job_id, status)
                echo(f"[llmops] ray job {job_id}: {status} ({time.time() - t0:.1f} s)")
                on_event(status, time.time())
                last_status = status
            if len(logs) > offset:
                if c.follow_logs:
                    for line in logs[offset:].splitlines():
                        if not line.startswith(RESULT_MARK):
                            echo(secrets.scrub(line))
                offset = len(logs)
            if status in TERMINAL:
                break
            if c.job_timeout_s and time.time() - t0 > c.job_timeout_s:
                _stop(client, job_id)
                raise JobFailed(
                    f"ray job {job_id} ran longer than cluster.job_timeout_s = {c.job_timeout_s} s "
                    f"and was stopped. Last log lines:\n{secrets.scrub(tail(logs))}")
            time.sleep(float(c.poll_interval_s))
    except KeyboardInterrupt:
        if c.confirm_stop and not ask(job_id):
            echo(f"[llmops] ray job {job_id} keeps running on {address}; follow it with "
                 f"`ray job logs --address {address} --follow {job_id}`")
            raise
        echo(f"[llmops] stopping ray job {job_id} ...")
        _stop(client, job_id)
        raise
    if status != "SUCCEEDED":
        info = None
        try:
            info = client.get_job_info(job_id)
        except Exception:
            pass
        reason = getattr(info, "message", None) or status
        raise JobFailed(f"ray job {job_id} on {address} ended {status}: {secrets.scrub(str(reason))}\n"
                        f"Last log lines:\n{secrets.scrub(tail(logs))}")
    result = parse_result(logs)
    if result is None:
        raise JobFailed(f"ray job {job_id} succeeded but printed no '{RESULT_MARK.strip()}' line; "
                        f"last log lines:\n{secrets.scrub(tail(logs))}")
    return result


def _stop(client, job_id: str, wait_s: float = 30.0) -> None:
    try:
        client.stop_job(job_id)
    except Exception as e:  # already finished, or the cluster went away
        log.warning("could not stop ray job %s: %s", job_id, e)
        return
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            if str(getattr(client.get_job_status(job_id), "value", "")) in TERMINAL:
                return
        except Exception:
            return
        time.sleep(0.5)


def submission_id(cfg) -> str:
    from llmops.core.names import k8s_name

    return f"llmops-{k8s_name(str(cfg.run_id), 40)}-{int(time.time() * 1000) % 10**8:08d}"


# ---------------------------------------------------------------------------------------- backend
class RayJobsBackend:
    """Submit training to an existing Ray cluster's Jobs API."""

    def __init__(self, cfg, *, train_callable: str = DEFAULT_CALLABLE,
                 extra_py_modules: list[str] = (), echo: Callable[[str], None] = None,
                 on_event: Callable = None, ask: Callable[[str], bool] = _ask_stop):
        self.cfg = cfg
        self.ask = ask
        self.train_callable = train_callable
        self.extra_py_modules = list(extra_py_modules)
        self.echo = echo
        self.on_event = on_event
        self.client = None

    @property
    def address(self) -> str:
        return str(self.cfg.cluster.address).rstrip("/")

    def plan(self, cfg, ctx) -> dict:
        return {
            "address": self.address,
            "submits": f"{default_python(cfg)} -m llmops.clusters.job_entry payload.json",
            "ships": ["llmops package (py_modules)", "payload.json: resolved config, secrets as "
                      "${oc.env:...} references" + (" with values in env_vars"
                                                    if cfg.cluster.pass_secrets else "")],
            "num_workers": int(cfg.cluster.num_workers),
        }

    def __enter__(self) -> "RayJobsBackend":
        self.client = connect(self.address, self.cfg.cluster.headers)
        return self

    def run_training(self, cfg, task: TrainingTask) -> TrainOutputs:
        if self.client is None:
            self.__enter__()
        job_dir = Path(task.run_dir) / "train" / "job"
        job_dir.mkdir(parents=True, exist_ok=True)
        _, env = write_payload(job_dir, cfg, task, train_callable=self.train_callable)
        rt = runtime_env(cfg, job_dir, env, self.extra_py_modules)
        entrypoint = f"{default_python(cfg)} -m llmops.clusters.job_entry payload.json"
        return TrainOutputs.from_dict(submit_and_follow(
            self.client, cfg, address=self.address, entrypoint=entrypoint, runtime_env=rt,
            submission_id=submission_id(cfg), echo=self.echo, ask=self.ask, on_event=self.on_event))

    def __exit__(self, *exc) -> None:
        self.client = None  # nothing was brought up: the cluster is the user's
