"""The smoke_test stage: complete `smoke_test.prompt` with the model the run produced.

target=local: the exported HF model is served in-process by `llmops serve`'s server on a free
loopback port and called over HTTP with the same client `llmops call` uses (greedy decoding,
`max_new_tokens`). target=endpoint: the deployed InferenceService is called with the client for
its runtime's API, retrying while it warms up. Outputs: prompt, reply, tokens (generated token
count), latency_s, target, api.

`serving.keep=false` with an applied deploy: the engine deletes what the run applied after the
last selected stage (whether the call succeeded or not).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from llmops.core.errors import LLMOpsError
from llmops.run import DeployOutputs, ExportOutputs, SmokeOutputs

log = logging.getLogger("llmops")


def _kind(cfg: DictConfig) -> str:
    return str(getattr(cfg.serving.kind, "value", cfg.serving.kind))


def plan(cfg: DictConfig) -> dict:
    st = cfg.smoke_test
    how = ("serve the exported model in-process on 127.0.0.1 (OpenAI completions API) and call it"
           if st.target == "local" else
           f"call the deployed {_kind(cfg)} InferenceService (retries: {st.retries})")
    out = {"target": str(st.target), "prompt": str(st.prompt), "max_new_tokens": int(st.max_new_tokens),
           "how": how}
    if cfg.serving.apply and not cfg.serving.keep:
        out["then"] = "delete what deploy applied (serving.keep=false), after the last stage"
    return out


def _outputs(cfg: DictConfig, r: dict) -> SmokeOutputs:
    log.info("smoke_test: %r -> %r (%s tokens, %.3f s)", r["prompt"], r["reply"], r["tokens"], r["latency_s"])
    return SmokeOutputs.from_dict({**r, "target": str(cfg.smoke_test.target)})


def call_local(cfg: DictConfig, export: ExportOutputs, run_dir: Path, run_id: str) -> SmokeOutputs:
    """Serve the exported model in-process on a free loopback port and call it over HTTP."""
    from llmops.serving import client, server
    from llmops.serving.render import isvc_name

    if not export.model_uri:
        raise LLMOpsError("smoke_test: the export stage recorded no model_uri")
    name = isvc_name(cfg, run_id)
    with tempfile.TemporaryDirectory(prefix="llmops-smoke-") as tmp:
        folder = server.local_model_dir(cfg, str(export.model_uri), Path(tmp))
        model = server.LocalModel(folder)
        with server.BackgroundServer(model, name) as url:
            return _outputs(cfg, client.complete(
                url, str(cfg.smoke_test.prompt), api="openai", max_tokens=int(cfg.smoke_test.max_new_tokens),
                temperature=float(cfg.smoke_test.temperature), seed=cfg.smoke_test.seed, model=name,
                retries=int(cfg.smoke_test.retries), retry_interval_s=0.5))


def call_endpoint(cfg: DictConfig, dep: DeployOutputs) -> SmokeOutputs:
    """Call the deployed InferenceService with the client for its runtime's API."""
    from llmops.serving import client

    if not dep.applied or not dep.url:
        raise LLMOpsError("smoke_test.target=endpoint: the deploy stage applied nothing or recorded "
                          "no url (set serving.apply=true)")
    api = client.api_for(str(dep.runtime or _kind(cfg)), str(dep.protocol or "http"))
    return _outputs(cfg, client.complete(
        str(dep.url), str(cfg.smoke_test.prompt), api=api, max_tokens=int(cfg.smoke_test.max_new_tokens),
        temperature=float(cfg.smoke_test.temperature), seed=cfg.smoke_test.seed, model=dep.isvc,
        retries=int(cfg.smoke_test.retries), retry_interval_s=5.0))
