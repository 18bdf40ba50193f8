"""Serving benchmarks: manifest render + strict validation, and `llmops serve` latency/throughput.

    PYTHONPATH=. python bench/bench_serving.py [--repeat N] [--requests N]

1. Render + validate the manifests of all four runtimes (vllm, caikit_tgis http and grpc, tgis,
   hf; S3 storage, so Secret + ServiceAccount + ServingRuntime + InferenceService each), after
   composing the configs (composition is not timed). Baseline: strict validation alone of the same
   objects (what any tool that validates must pay); the ratio says what rendering adds on top.
   Also: loading the InferenceService CRD schema from its YAML file vs from llmops' JSON cache.
2. `llmops serve`'s server on a tiny random GPT-2 (2 layers, 64 wide, the GPT-2 tokenizer from
   ../shared/data/gpt2-tokenizer, saved as safetensors): first-reply latency (model load + server
   start + first request) and greedy tokens/s over HTTP, against calling model.generate directly
   in-process with the same settings (the floor the server adds to).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN_ID = "bench-20260101-000000"
CASES = [("vllm", []), ("caikit_tgis", []), ("caikit_tgis", ["serving.protocol=grpc"]), ("tgis", []), ("hf", [])]


def figure(name, value, unit):
    print(f"figure {name}={value:.4g} {unit}")


def ratio(name, value):
    print(f"ratio {name}={value:.3g}")


def bench_render(repeat: int, tmp: Path) -> None:
    import os

    os.environ.setdefault("LLMOPS_SCHEMA_CACHE", str(tmp / "crd-cache"))
    from llmops import storage
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose
    from llmops.k8s import validate
    from llmops.serving import render

    cfgs = []
    for kind, extra in CASES:
        cfg, _ = compose("quickstart", [f"serving={kind}", "storage.kind=s3", "storage.bucket=models",
                                        "storage.endpoint_url=http://minio:9000", f"run_id={RUN_ID}",
                                        f"paths.output_root={tmp}/o", *extra])
        cfgs.append(strip_hydra(cfg))
    uris = storage.model_uris(cfgs[0], RUN_ID)

    # cold: the CRD schema from YAML (first use on a machine) vs from the JSON cache
    crd = validate.schemas_dir() / validate.CRDS[("serving.kserve.io/v1beta1", "InferenceService")]
    shutil.rmtree(tmp / "crd-cache", ignore_errors=True)
    t = time.perf_counter()
    validate.crd_version_schema(crd, "v1beta1")
    cold = time.perf_counter() - t
    t = time.perf_counter()
    validate.crd_version_schema(crd, "v1beta1")
    warm = time.perf_counter() - t
    figure("isvc_crd_schema_load_yaml", cold, "s")
    figure("isvc_crd_schema_load_cached", warm, "s")
    ratio("crd_schema_cached_speedup_over_yaml_parse", cold / warm)

    def render_all():
        return [render.render(c, RUN_ID, "bench", uris) for c in cfgs]

    objs = render_all()
    for o in objs:
        validate.validate_objects(o)  # warm every validator once
    n_objects = sum(len(o) for o in objs)

    both, only_validate, only_render = [], [], []
    for _ in range(repeat):
        t = time.perf_counter()
        for o in render_all():
            validate.validate_objects(o)
        both.append(time.perf_counter() - t)
        t = time.perf_counter()
        for o in objs:
            validate.validate_objects(o)
        only_validate.append(time.perf_counter() - t)
        t = time.perf_counter()
        render_all()
        only_render.append(time.perf_counter() - t)
    b, v, r = (statistics.median(x) for x in (both, only_validate, only_render))
    print(f"# {len(CASES)} runtime variants, {n_objects} objects, median of {repeat}")
    figure("render_validate_all_runtimes", b * 1000, "ms")
    figure("render_only_all_runtimes", r * 1000, "ms")
    figure("validate_only_all_runtimes", v * 1000, "ms")
    ratio("render_validate_over_validate_only", b / v)


def tiny_model(tmp: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = ROOT.parent / "shared" / "data" / "gpt2-tokenizer"
    if not tok.is_dir():
        raise SystemExit(f"{tok} is absent: the GPT-2 tokenizer is needed")
    out = tmp / "tiny-gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=256)).save_pretrained(
        out, safe_serialization=True)
    for f in tok.iterdir():
        shutil.copy(f, out / f.name)
    return out


def bench_serve(requests: int, max_tokens: int, tmp: Path) -> None:
    import torch

    from llmops.serving import client, server

    folder = tiny_model(tmp)
    prompt = "The history of the"

    t0 = time.perf_counter()
    model = server.LocalModel(folder)
    with server.BackgroundServer(model, "tiny") as url:
        first = client.complete(url, prompt, max_tokens=max_tokens, model="tiny")
        first_s = time.perf_counter() - t0
        t = time.perf_counter()
        toks = 0
        for _ in range(requests):
            toks += client.complete(url, prompt, max_tokens=max_tokens, model="tiny")["tokens"]
        served = toks / (time.perf_counter() - t)
    figure("serve_first_reply_latency_incl_load", first_s, "s")
    figure("serve_first_request_latency", first["latency_s"], "s")
    figure("serve_tokens_per_s", served, "tokens/s")

    enc = model.tokenizer(prompt, return_tensors="pt")
    t = time.perf_counter()
    toks = 0
    with torch.inference_mode():
        for _ in range(requests):
            out = model.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                       pad_token_id=model.tokenizer.eos_token_id)
            toks += out.shape[1] - enc["input_ids"].shape[1]
    direct = toks / (time.perf_counter() - t)
    figure("generate_in_process_tokens_per_s", direct, "tokens/s")
    ratio("serve_tokens_per_s_over_generate_in_process", served / direct)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        bench_render(a.repeat, Path(tmp))
        bench_serve(a.requests, a.max_tokens, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
