"""The smoke_test stage: complete `smoke_test.prompt` with the model the run produced.

target=local: the exported HF model is served in-process by `llmops serve`'s server on a free
loopback port and called over HTTP with the same client `llmops call` uses (greedy decoding,
`max_new_tokens`). target=endpoint: the deployed InferenceService is called with the client for
its runtime's API, retrying while it warms up. Outputs: prompt, reply, tokens (generated token
count), latency_s, target, api.

`serving.keep=false` with an applied deploy: what the run applied is deleted here, when the
stage ends (whether the call succeeded or not).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("llmops")


def _kind(cfg: DictConfig) -> str:
    return str(getattr(cfg.serving.kind, "value", cfg.serving.kind))


def plan(cfg: DictConfig, ctx) -> dict:
    st = cfg.smoke_test
    how = ("serve the exported model in-process on 127.0.0.1 (OpenAI completions API) and call it"
           if st.target == "local" else
           f"call the deployed {_kind(cfg)} InferenceService (retries: {st.retries})")
    out = {"target": str(st.target), "prompt": str(st.prompt), "max_new_tokens": int(st.max_new_tokens),
           "how": how}
    if cfg.serving.apply and not cfg.serving.keep:
        out["then"] = "delete what deploy applied (serving.keep=false)"
    return out


def smoke(cfg: DictConfig, ctx) -> dict:
    try:
        if str(cfg.smoke_test.target) == "endpoint":
            r = _endpoint(cfg, ctx)
        else:
            r = _local(cfg, ctx)
    finally:
        _teardown(cfg, ctx)
    log.info("smoke_test: %r -> %r (%s tokens, %.3f s)", r["prompt"], r["reply"], r["tokens"], r["latency_s"])
    return {k: r.get(k) for k in ("prompt", "reply", "tokens", "prompt_tokens", "latency_s", "api",
                                  "attempts")} | {"target": str(cfg.smoke_test.target)}


def _local(cfg: DictConfig, ctx) -> dict:
    from llmops.errors import LLMOpsError
    from llmops.serving import client, server

    model_uri = ctx.outputs("export").get("model_uri")
    if not model_uri:
        raise LLMOpsError("smoke_test: the export stage recorded no model_uri")
    name = server.served_name(ctx.run_dir, ctx.state.data if ctx.state else {"run_id": ctx.run_id})
    with tempfile.TemporaryDirectory(prefix="llmops-smoke-") as tmp:
        folder = server.local_model_dir(cfg, str(model_uri), Path(tmp))
        model = server.LocalModel(folder)
        with server.BackgroundServer(model, name) as url:
            return client.complete(url, str(cfg.smoke_test.prompt), api="openai",
                                   max_tokens=int(cfg.smoke_test.max_new_tokens),
                                   temperature=float(cfg.smoke_test.temperature),
                                   seed=cfg.smoke_test.seed, model=name,
                                   retries=int(cfg.smoke_test.retries), retry_interval_s=0.5)


def _endpoint(cfg: DictConfig, ctx) -> dict:
    from llmops.errors import LLMOpsError
    from llmops.serving import client

    dep = ctx.outputs("deploy")
    if not dep.get("applied") or not dep.get("url"):
        raise LLMOpsError("smoke_test.target=endpoint: the deploy stage applied nothing or recorded "
                          "no url (set serving.apply=true)")
    api = client.api_for(str(dep.get("runtime", _kind(cfg))), str(dep.get("protocol", "http")))
    return client.complete(str(dep["url"]), str(cfg.smoke_test.prompt), api=api,
                           max_tokens=int(cfg.smoke_test.max_new_tokens),
                                   temperature=float(cfg.smoke_test.temperature),
                                   seed=cfg.smoke_test.seed, model=dep.get("isvc"),
                           retries=int(cfg.smoke_test.retries), retry_interval_s=5.0)


def _teardown(cfg: DictConfig, ctx) -> None:
    if cfg.serving.keep or not cfg.serving.apply or ctx.state is None:
        return
    dep = (ctx.state.data.get("stages", {}).get("deploy") or {}).get("outputs") or {}
    if dep.get("applied") and not dep.get("deleted"):
        from llmops.serving import kube

        kube.delete_run(str(dep["namespace"]), str(dep["selector"]))
        log.info("smoke_test: serving.keep=false, deleted what deploy applied in %s", dep["namespace"])
