"""`llmops call RUN_DIR|URL PROMPT`: send a prompt to a run's deployed model (or its `llmops serve`),
or to a URL, and print the reply."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from llmops.commands.serve import SERVE_FILE, served_name
from llmops.core.errors import LLMOpsError
from llmops.run import RunDir
from llmops.serving.client import APIS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops call", description=(
        "Send a prompt to a run's deployed model (or to a URL) and print the reply."))
    p.add_argument("target", help="a run directory or an http(s) URL")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--model", default=None, help="model name to send (URL targets)")
    p.add_argument("--api", default=None, choices=APIS, help=(
        "the API a URL target speaks (default openai; a run directory knows its own). A URL may "
        "end in /v1, as the OpenAI client's base URL does"))
    return p


def target_of(run_dir: Path) -> dict:
    """Where a run's model answers: its deploy outputs (url, runtime, protocol, isvc), or the
    `llmops serve` running for it."""
    from llmops.serving.client import api_for

    rd = RunDir(run_dir)
    state = rd.state()
    if state.status("deploy") == "done":
        out = state.outputs("deploy")
        if out.applied and out.url and not out.deleted:
            return {"url": out.url, "api": api_for(str(out.runtime or "vllm"), str(out.protocol or "http")),
                    "model": out.isvc}
    local = rd.path / SERVE_FILE
    if local.is_file():
        try:
            info = json.loads(local.read_text())
            os.kill(int(info["pid"]), 0)  # the `llmops serve` that wrote it is still running
            return {"url": info["url"], "api": "openai", "model": info.get("model")}
        except (ValueError, KeyError, OSError):
            pass
    raise LLMOpsError(
        f"{run_dir}: the run has no deployed endpoint (deploy not applied); serve it locally with "
        f"`llmops serve {run_dir}` and call that URL, e.g. "
        f"`llmops call http://127.0.0.1:8000 PROMPT --model {served_name(rd)}`")


def call(target: str, prompt: str, max_tokens: int = 32, model: Optional[str] = None,
         api: Optional[str] = None, retries: int = 3) -> int:
    from llmops.serving.client import complete, shown

    try:
        if target.startswith(("http://", "https://", "grpc://", "grpcs://")):
            t = {"url": target, "api": api or "openai", "model": model}
        else:
            p = Path(target)
            if not p.is_dir():
                raise LLMOpsError(f"{target}: neither a URL (http://...) nor a run directory")
            t = target_of(p)
            if model:
                t["model"] = model
        r = complete(t["url"], prompt, api=t["api"], max_tokens=max_tokens, model=t["model"],
                     retries=retries)
    except LLMOpsError as e:
        print(f"llmops call: error: {e}", file=sys.stderr)
        return 1
    print(shown(prompt, r["reply"]))  # a server that echoes the prompt: printed once
    print(f"# {r['tokens']} tokens in {r['latency_s']:.3f} s from {r['url']} ({r['api']})",
          file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    if a.api and not a.target.startswith(("http://", "https://", "grpc://", "grpcs://")):
        print("llmops call: error: --api is for URL targets; a run directory's deploy outputs "
              "name the API of its runtime", file=sys.stderr)
        return 2
    return call(a.target, a.prompt, max_tokens=a.max_tokens, model=a.model, api=a.api)
