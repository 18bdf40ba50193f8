"""GPT-2 124M fine-tuning speed at the 2023 job's shapes: tokens/s, MFU, projected job time.

    python bench/bench_gpu_gpt2.py                  # wherever a GPU is: bf16, SDPA, torch.compile
    python bench/bench_gpu_gpt2.py --steps 2        # on a CPU it runs too, slowly

The model is GPT-2 124M with random weights (same shapes as HF `gpt2`), trained on packed
1,024-token blocks of WikiText-2 (../shared/data; random tokens when absent) with AdamW. Two
configurations run in the same process: the baseline (fp32, eager attention, no compile) and
llmops' fast path (bf16 autocast where supported, SDPA, torch.compile, fused AdamW). Printed:
tokens/s of each, MFU (model FLOPs per token = 6 N + 12 L T d, against the device's dense bf16
peak), and the projected time of the 2023 job (3 epochs x 2,318 blocks of 1,024 tokens), whose
figure was 45 minutes on one T4.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from _util import ROOT, figure, ratio

JOB_TOKENS = 3 * 2318 * 1024  # the 2023 job: 3 epochs of 2,318 blocks of 1,024 tokens
T4_MINUTES = 45.0
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12,
             "A10": 125e12, "L40": 181e12}


def blocks(n: int, seq: int, vocab: int):
    import torch

    data = ROOT.parent / "shared" / "data"
    tok_dir, raw = data / "gpt2-tokenizer", data / "wikitext-2-raw" / "wiki.test.raw"
    if tok_dir.is_dir() and raw.is_file():
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(tok_dir)(raw.read_text())["input_ids"]
        t = torch.tensor(ids[: (len(ids) // seq) * seq]).view(-1, seq)
        reps = math.ceil(n / t.shape[0])
        return t.repeat(reps, 1)[:n]
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (n, seq), generator=g)


def run(fast: bool, steps: int, batch: int, seq: int, device: str, warmup: int) -> float:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_positions=seq, n_ctx=seq)
    model = GPT2LMHeadModel(cfg).to(device)
    model.config._attn_implementation = "sdpa" if fast else "eager"
    bf16 = fast and (device == "cuda" and torch.cuda.is_bf16_supported())
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=(fast and device == "cuda"))
    step_fn = model
    if fast and device == "cuda":
        step_fn = torch.compile(model)
    data = blocks((steps + warmup) * batch, seq, cfg.vocab_size).to(device)

    def step(i: int) -> None:
        x = data[i * batch:(i + 1) * batch]
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = step_fn(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch * seq / (time.perf_counter() - t0)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=1024)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = a.steps or (50 if device == "cuda" else 2)
    batch = a.batch or (16 if device == "cuda" else 1)
    warmup = 5 if device == "cuda" else 1
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}; {steps} steps of {batch} x {a.seq} tokens")
    base = run(False, steps, batch, a.seq, device, warmup)
    fast = run(True, steps, batch, a.seq, device, warmup)
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
