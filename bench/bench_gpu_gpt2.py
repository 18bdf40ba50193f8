"""GPT-2 124M fine-tuning speed at the 2023 job's shapes, through llmops' own training code.

    python bench/bench_gpu_gpt2.py                  # on a GPU: bf16, SDPA, torch.compile, fused AdamW
    python bench/bench_gpu_gpt2.py --steps 2        # on a CPU: a smoke check (fp32, no compile)

The model is built by `llmops.training.modeling.build_model` from the quickstart recipe with
GPT-2 124M shapes (12 layers, 12 heads, 768 wide, 1,024 positions, random weights, the GPT-2
tokenizer from ../shared/data when present), the arguments by
`llmops.training.loop.training_arguments` (the builder `llmops run` uses), the examples are
`llmops.training.loop.BlockDataset` over packed 1,024-token blocks of WikiText-2 (random tokens
when the data is absent), and a transformers Trainer trains them: what a Ray Train worker of
`llmops run` does, without Ray. Two configurations in the same process:
  baseline  fp32, eager attention, no compile, AdamW (torch, unfused)
  llmops    training.precision=bf16, model.attn_implementation=sdpa (PyTorch picks its
            flash-attention kernel for bf16 on the GPU), model.compile=true, fused AdamW
            (optim=adamw_torch_fused), Liger kernels when liger-kernel is installed
Printed: tokens/s of each (steps after the warm-up ones, synchronised), MFU (6 N + 12 L T d
FLOPs per token) against the device's dense bf16 peak, and the projected time of the 2023 job
(3 epochs x 2,318 blocks of 1,024 tokens; 45 minutes on one T4 then).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

from _util import ROOT, figure, ratio

JOB_TOKENS = 3 * 2318 * 1024  # the 2023 job: 3 epochs of 2,318 blocks of 1,024 tokens
T4_MINUTES = 45.0
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12,
             "A10": 125e12, "L40": 181e12}
DATA = ROOT.parent / "shared" / "data"


class _Gpt2Vocab:
    """Stands in for the GPT-2 tokenizer when ../shared/data lacks it: what build_model reads."""
    bos_token_id = eos_token_id = 50256

    def __len__(self) -> int:
        return 50257


def tokenizer():
    from llmops.training import modeling

    d = DATA / "gpt2-tokenizer"
    return modeling.load_tokenizer(str(d)) if d.is_dir() else _Gpt2Vocab()


def packed_blocks(tok, n: int, seq: int):
    """n packed blocks of seq tokens (WikiText-2 test split, repeated as needed)."""
    import numpy as np

    raw = DATA / "wikitext-2-raw" / "wiki.test.raw"
    if raw.is_file() and not isinstance(tok, _Gpt2Vocab):
        ids = np.asarray(tok(raw.read_text())["input_ids"], dtype=np.int32)
        b = ids[: len(ids) // seq * seq].reshape(-1, seq)
        return np.tile(b, (math.ceil(n / len(b)), 1))[:n]
    return np.random.default_rng(0).integers(0, len(tok), size=(n, seq), dtype=np.int32)


def run(fast: bool, steps: int, warmup: int, batch: int, seq: int, gpu: bool, tok) -> float:
    import torch
    from transformers import Trainer, TrainerCallback

    from llmops.config.compose import compose
    from llmops.training import loop, modeling

    bf16 = fast and gpu and torch.cuda.is_bf16_supported()
    cfg, _ = compose("quickstart", [
        "model.n_layer=12", "model.n_head=12", "model.n_embd=768", f"model.n_positions={seq}",
        f"model.attn_implementation={'sdpa' if fast else 'eager'}",
        f"model.compile={'true' if fast and gpu else 'false'}",
        f"training.precision={'bf16' if bf16 else 'fp32'}", f"dataset.block_size={seq}",
        f"training.per_device_train_batch_size={batch}", f"training.max_steps={warmup + steps}",
        "training.eval_steps=1000000", "training.logging_steps=1000000", "training.warmup_ratio=0",
        f"cluster.gpus_per_worker={1 if gpu else 0}"], check=False)
    model = modeling.build_model(cfg, tok)
    with tempfile.TemporaryDirectory() as out:
        args = loop.training_arguments(cfg, out, gpu)
        extra = {"disable_tqdm": True}
        if fast and gpu:
            extra["optim"] = "adamw_torch_fused"
            try:
                import liger_kernel  # noqa: F401

                extra["use_liger_kernel"] = True
            except ImportError:
                pass
        args = dataclasses.replace(args, **extra)

        class Timer(TrainerCallback):
            """From the end of the warm-up steps to the end of the last step (the final
            checkpoint save and best-model reload the Trainer does after it are not counted)."""
            t0 = t1 = None

            def on_step_end(self, a, state, control, **kw):
                if state.global_step in (warmup, warmup + steps):
                    if gpu:
                        torch.cuda.synchronize()
                    if state.global_step == warmup:
                        Timer.t0 = time.perf_counter()
                    else:
                        Timer.t1 = time.perf_counter()

        blocks = packed_blocks(tok, (warmup + steps) * batch + 1, seq)
        train, ev = loop.BlockDataset(blocks[:-1]), loop.BlockDataset(blocks[-1:])  # eval: never due
        Trainer(model=model, args=args, train_dataset=train, eval_dataset=ev, callbacks=[Timer()]).train()
        return steps * batch * seq / (Timer.t1 - Timer.t0)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=1024)
    a = ap.parse_args()
    gpu = torch.cuda.is_available()
    steps = a.steps or (50 if gpu else 2)
    batch = a.batch or (16 if gpu else 1)
    warmup = 10 if gpu else 1  # compile happens in the first steps
    name = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"device: {name}; {steps} timed steps (after {warmup}) of {batch} x {a.seq} tokens")
    tok = tokenizer()
    base = run(False, steps, warmup, batch, a.seq, gpu, tok)
    fast = run(True, steps, warmup, batch, a.seq, gpu, tok)
    n_params = 124_439_808  # GPT-2 124M with tied embeddings
    flops_per_token = 6 * n_params + 12 * 12 * a.seq * 768
    figure("gpt2_tokens_per_s_baseline_fp32_eager", base, "tokens/s")
    figure("gpt2_tokens_per_s_llmops", fast, "tokens/s")
    ratio("gpt2_speed_llmops_vs_fp32_eager", fast / base)
    figure("gpt2_projected_2023_job_min", JOB_TOKENS / fast / 60, "min")
    ratio("gpt2_2023_job_speedup_vs_t4_45min", T4_MINUTES * 60 / (JOB_TOKENS / fast))
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if peak:
        figure("gpt2_mfu", 100 * fast * flops_per_token / peak, "%")
    else:
        print(f"MFU: no bf16 peak known for {name}")


if __name__ == "__main__":
    main()
