"""Entrypoint of a Kubeflow TrainJob's training processes (cluster=kubeflow), under torchrun.

`train_func` is the CustomTrainer's function: the Kubeflow SDK ships its source into the job (a
file named after this module, run by torchrun), so it imports everything it needs itself and
its source holds no shell-special characters (the SDK writes it through a here-document). Its
argument is the payload: {"config": resolved config with secrets as ${oc.env:...} references,
"run": the TrainingTask}, as base64 JSON. Rank 0 prints ``LLMOPS_RESULT {json}`` last, or
``LLMOPS_ERROR "message"`` when training stops with an error meant for the user.
"""

from __future__ import annotations

import json
import time

from llmops.clusters.job_entry import RESULT_MARK
from llmops.core.errors import LLMOpsError

ERROR_MARK = "LLMOPS_ERROR "


def train_func(payload=None, **kwargs):
    """Runs in every training process of the TrainJob; llmops must be importable there.
    The Kubernetes backend calls it with keywords, the local process backend with one dict."""
    import base64
    import json
    import sys

    args = payload if isinstance(payload, dict) else dict(kwargs, payload=payload)
    from llmops.clusters.trainjob_entry import node_main

    sys.exit(node_main(json.loads(base64.b64decode(args["payload"]).decode())))


def node_main(payload: dict) -> int:
    """One rank: the typed config back, train with the torchrun context, rank 0 prints the result."""
    from llmops.clusters.job_entry import typed_config
    from llmops.training import loop

    cfg = typed_config(payload["config"])
    print(f"LLMOPS_EVENT fit_start {time.time():.3f}", flush=True)
    try:
        out, history = loop.fit_torchrun(cfg, payload["run"])
    except LLMOpsError as e:
        print(ERROR_MARK + json.dumps(str(e)), flush=True)
        return 1
    print(f"LLMOPS_EVENT fit_end {time.time():.3f}", flush=True)
    if out is not None:
        print(RESULT_MARK + json.dumps({"outputs": out.to_dict(), "history": history}, default=str),
              flush=True)
    return 0
