"""Entrypoint of the training job on a Ray cluster: ``python -m llmops.clusters.job_entry PAYLOAD``.

PAYLOAD is a JSON file (``payload.json`` in the job's working dir) or, when the argument is
absent, the environment variable ``LLMOPS_PAYLOAD`` holding the JSON itself (RayJob mode, where
no local working dir travels). It holds ``config`` (the resolved config; secrets as
``${oc.env:...}`` references resolved here from the job's environment), ``run`` (the training
function's second argument: the TrainingTask as JSON) and ``callable`` (``module:function``, default
llmops.training.loop:fit).
The result is printed as the last log line: ``LLMOPS_RESULT {json}``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

RESULT_MARK = "LLMOPS_RESULT "


def typed_config(container: dict):
    """The shipped container as a typed, struct-mode config (enums and schema back in place)."""
    from llmops.config.schema import typed

    return typed(container)


def load_payload(argv: list[str]) -> dict:
    if len(argv) > 1:
        with open(argv[1]) as f:
            return json.load(f)
    raw = os.environ.get("LLMOPS_PAYLOAD")
    if not raw:
        raise SystemExit("usage: python -m llmops.clusters.job_entry PAYLOAD.json "
                         "(or LLMOPS_PAYLOAD in the environment)")
    return json.loads(raw)


def resolve_callable(ref: str):
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn or "fit")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    payload = load_payload(argv)
    cfg = typed_config(payload["config"])
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=True)
    print(f"LLMOPS_EVENT fit_start {time.time():.3f}", flush=True)
    fn = resolve_callable(payload.get("callable") or "llmops.training.loop:fit")
    result = fn(cfg, payload["run"])
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    print(f"LLMOPS_EVENT fit_end {time.time():.3f}", flush=True)
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
