"""Serving benchmarks: manifest render + strict validation, and `llmops serve` latency/throughput.

    PYTHONPATH=. python bench/bench_serving.py [--repeat N] [--requests N] [--part render|serve]

1. Render + validate the manifests of every runtime: vllm, caikit_tgis http and grpc, tgis, hf
   (S3 storage: Secret + ServiceAccount + ServingRuntime + InferenceService each) and llmisvc on
   S3, on a PVC and from a pinned oci:// modelcar (an LLMInferenceService, with the Secret and
   ServiceAccount on S3), after composing the configs (composition is not timed). Per runtime
   and in total: render, schema-only validation (`validate_objects(objs, cel=False)`: CRD schema
   closed as fieldValidation=Strict, core kinds, metadata) and schema + the CRDs' CEL rules (the
   default); `ratio serving_validate_cel_vs_schema_only` is what the CEL rules add (baseline:
   schema-only, same objects, same run). One-off costs: the first schema-only pass (loads every
   schema) and the first pass with CEL after it (builds the CEL environment, compiles the rules
   that apply) against the steady state. `render_validate_over_validate_only`: render + full
   validation against full validation alone (what any tool that validates must pay).
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

from _util import random_gpt2

RUN_ID = "bench-20260101-000000"
S3 = ["storage.kind=s3", "storage.bucket=models", "storage.endpoint_url=http://minio:9000"]
PVC = ["storage=pvc", "storage.pvc_name=models", "storage.mount_path=/mnt/models"]
OCI = "serving.model_uri=oci://quay.io/team/gpt2-modelcar@sha256:" + "0" * 64  # pinned: no registry asked
CASES = [  # (name printed, serving=..., overrides)
    ("vllm", "vllm", S3), ("caikit_tgis_http", "caikit_tgis", S3),
    ("caikit_tgis_grpc", "caikit_tgis", [*S3, "serving.protocol=grpc"]), ("tgis", "tgis", S3),
    ("hf", "hf", S3), ("llmisvc_s3", "llmisvc", S3), ("llmisvc_pvc", "llmisvc", PVC),
    ("llmisvc_oci", "llmisvc", [*S3, OCI]),
]


def figure(name, value, unit):
    print(f"figure {name}={value:.4g} {unit}")


def ratio(name, value):
    print(f"ratio {name}={value:.3g}")


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rules_evaluated(objs: list[dict]) -> int:
    from llmops.k8s import cel, validate

    n = 0
    for o in objs:
        rel = validate.CRDS.get((o["apiVersion"], o["kind"]))
        if rel:
            schema = cel.crd_schema(validate.schemas_dir() / rel, o["apiVersion"].rpartition("/")[2])
            n += cel.cel_report(o, schema).evaluated
    return n


def bench_render(repeat: int, tmp: Path) -> None:
    import os

    os.environ.setdefault("LLMOPS_SCHEMA_CACHE", str(tmp / "crd-cache"))
    from llmops import storage
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose
    from llmops.k8s import validate
    from llmops.serving import render

    cases = []
    for name, kind, extra in CASES:
        cfg, _ = compose("quickstart", [f"serving={kind}", f"run_id={RUN_ID}", f"paths.output_root={tmp}/o",
                                        f"paths.cache_dir={tmp}/cache", *extra])
        cfg = strip_hydra(cfg)
        uris = {k: storage.serving_uri(cfg, v) for k, v in storage.model_uris(cfg, RUN_ID).items()}
        cases.append((name, cfg, uris))

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

    def render_one(cfg, uris):
        return render.render(cfg, RUN_ID, "bench", uris)

    objs = {name: render_one(cfg, uris) for name, cfg, uris in cases}
    # one-off costs: every schema loaded by a schema-only pass, then the first pass with CEL
    # (the CEL environment is built and each rule that applies is compiled), then steady state
    t = time.perf_counter()
    for o in objs.values():
        validate.validate_objects(o, cel=False)
    schema_first = time.perf_counter() - t
    t = time.perf_counter()
    for o in objs.values():
        validate.validate_objects(o)
    cel_first = time.perf_counter() - t

    totals = {"render": 0.0, "schema": 0.0, "cel": 0.0}
    print(f"# {len(CASES)} runtime variants, median of {repeat} per variant")
    for name, cfg, uris in cases:
        o = objs[name]
        r = _median_s(lambda: render_one(cfg, uris), repeat)
        v = _median_s(lambda: validate.validate_objects(o, cel=False), repeat)
        c = _median_s(lambda: validate.validate_objects(o), repeat)
        print(f"# {name}: {', '.join(x['kind'] for x in o)}; CEL rules evaluated: {_rules_evaluated(o)}")
        figure(f"render_{name}", r * 1000, "ms")
        figure(f"validate_schema_only_{name}", v * 1000, "ms")
        figure(f"validate_schema_cel_{name}", c * 1000, "ms")
        totals["render"] += r
        totals["schema"] += v
        totals["cel"] += c
    steady = _median_s(lambda: [validate.validate_objects(o) for o in objs.values()], repeat)
    both = _median_s(lambda: [validate.validate_objects(render_one(c, u)) for _, c, u in cases], repeat)
    n_objects = sum(len(o) for o in objs.values())
    print(f"# all: {n_objects} objects")
    figure("render_all_runtimes", totals["render"] * 1000, "ms")
    figure("validate_schema_only_all_runtimes", totals["schema"] * 1000, "ms")
    figure("validate_schema_cel_all_runtimes", totals["cel"] * 1000, "ms")
    figure("render_validate_all_runtimes", both * 1000, "ms")
    figure("validate_first_pass_schema_load", schema_first * 1000, "ms")
    figure("validate_first_pass_with_cel_compile", cel_first * 1000, "ms")
    figure("validate_steady_pass_with_cel", steady * 1000, "ms")
    ratio("serving_validate_cel_vs_schema_only", totals["cel"] / totals["schema"])
    ratio("cel_first_pass_vs_steady_state", cel_first / steady)
    ratio("render_validate_over_validate_only", both / totals["cel"])


def bench_serve(requests: int, max_tokens: int, tmp: Path) -> None:
    import torch

    from llmops.serving import client, server

    folder = random_gpt2(tmp / "tiny-gpt2")  # 2 layers, 64 wide
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
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--part", choices=("all", "render", "serve"), default="all")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        if a.part in ("all", "render"):
            bench_render(a.repeat, Path(tmp))
        if a.part in ("all", "serve"):
            bench_serve(a.requests, a.max_tokens, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
