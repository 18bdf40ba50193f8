"""`llmops serve RUN_DIR [--port N] [--host H]`: serve a run's exported model on 127.0.0.1 with the
OpenAI completions API (as vLLM does), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.core.io import atomic_write_json
from llmops.run import RunDir

log = logging.getLogger("llmops")

SERVE_FILE = "serve.json"  # written by `llmops serve` while it runs; `llmops call RUN_DIR` reads it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops serve", description=(
        "Serve a run's exported model on 127.0.0.1 with the OpenAI completions API (as vLLM)."))
    p.add_argument("run_dir", type=Path)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--threads", type=int, default=1, help=(
        "torch threads for generation (default 1: one request decodes at a time, token by token, "
        "and on CPU one thread decodes a small model fastest; more help a larger model)"))
    return p


def served_name(rd: RunDir) -> str:
    """The model name a run answers to: its InferenceService's (or the one it would have)."""
    from llmops.serving import render

    state = rd.state()
    if state.status("deploy") == "done" and state.outputs("deploy").isvc:
        return str(state.outputs("deploy").isvc)
    cfg = rd.config()
    name = cfg.get("serving", {}).get("name") if cfg is not None else None
    return str(name) if name else render.derived_isvc_name(state.run_id)


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    from llmops.serving import server

    if a.threads < 1:
        raise LLMOpsError(f"--threads {a.threads}: expected a positive number of threads")

    rd = RunDir(a.run_dir)
    model_uri = rd.outputs("export").model_uri
    if not model_uri:
        raise LLMOpsError(f"{rd}: the export stage recorded no model_uri")
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serve: listening on %s: anyone who reaches this address can use the model", a.host)
    name = served_name(rd)
    with tempfile.TemporaryDirectory(prefix="llmops-serve-") as tmp:
        model = server.LocalModel(server.local_model_dir(rd.config(), str(model_uri), Path(tmp)),
                                  threads=a.threads)
        srv = server.make_server(model, name, a.host, a.port)
        h, p = srv.server_address[:2]
        print(f"llmops serve: model '{name}' from {model_uri}\n"
              f"  OpenAI completions API at http://{h}:{p}/v1/completions (Ctrl-C stops)", flush=True)

        def _stop(*_):  # SIGTERM ends the server like Ctrl-C (and removes the marker)
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        marker = rd.path / SERVE_FILE  # lets `llmops call RUN_DIR` find this server
        atomic_write_json(marker, {"url": f"http://{h}:{p}", "model": name, "pid": os.getpid()})
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()
            marker.unlink(missing_ok=True)
    return 0
