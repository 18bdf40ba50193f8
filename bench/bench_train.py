"""Training throughput: `llmops run` (Ray Train + Trainer) against a bare transformers.Trainer.

    python bench/bench_train.py [--steps 60]

Same model (the quickstart's tiny GPT-2), same prepared blocks, same per-device batch, one
process each; then llmops with 2 workers against 1 on this machine. tokens/s is the Trainer's
own `train_samples_per_second` x block size for both, so start-up is excluded the same way.
Printed: `ratio train_tokens_per_s_llmops_vs_bare_trainer` (goal >= 0.9) and
`ratio train_scaling_2_workers_vs_1`, plus the end-to-end wall time of the llmops train stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# the warm Ray head (cluster=local, opt-in: cluster.ray_idle_timeout_s > 0); cold runs override it with 0
WARM = "cluster.ray_idle_timeout_s=600"

from _util import ROOT, figure, ratio

BARE = r'''
import json, sys, numpy as np, torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
sys.path.insert(0, sys.argv[1])
from llmops import data
from llmops.training.loop import BlockDataset
data_dir, tok_dir, out, steps, batch = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(1)  # a Ray worker with 1 CPU runs 1 thread: same budget
tok = AutoTokenizer.from_pretrained(tok_dir)
torch.manual_seed(42)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2))
train = BlockDataset(data.load_blocks(data_dir, "train"))
args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                         learning_rate=1e-3, logging_steps=10, save_strategy="no", eval_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True, seed=42)
m = Trainer(model=model, args=args, train_dataset=train).train().metrics
print("BARE", json.dumps({"tokens_per_s": m["train_samples_per_second"] * train.blocks.shape[1]}))
'''


def llmops_train(tmp: Path, name: str, steps: int, batch: int, workers: int) -> dict:
    run_dir = tmp / name
    env = dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RAY_HOME=str(tmp / "ray-home"))
    cmd = [sys.executable, "-m", "llmops.cli", "run", "quickstart", WARM, "stages=[prepare_data,train]",
           f"hydra.run.dir={run_dir}", f"training.max_steps={steps}", f"training.eval_steps={steps}",
           f"training.per_device_train_batch_size={batch}", f"cluster.num_workers={workers}",
           "cluster.trainer=ray",  # the per-step cost under Ray Train, 1 worker as 2
           f"paths.cache_dir={tmp / 'cache'}", f"storage.root={tmp / 'models'}"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    if p.returncode != 0:
        raise SystemExit(f"llmops run failed:\n{p.stderr[-3000:]}")
    st = json.loads((run_dir / "state.json").read_text())["stages"]
    return {"tokens_per_s": st["train"]["outputs"]["metrics"]["tokens_per_s"],
            "train_stage_s": st["train"]["seconds"], "data": st["prepare_data"]["outputs"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = llmops_train(tmp, "w1", a.steps, a.batch, 1)
        d = one["data"]
        p = subprocess.run([sys.executable, "-c", BARE, str(ROOT), d["data_dir"], d["tokenizer_dir"],
                            str(tmp / "bare"), str(a.steps), str(a.batch)],
                           capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if p.returncode != 0:
            raise SystemExit(f"bare Trainer failed:\n{p.stderr[-3000:]}")
        bare = json.loads(p.stdout.split("BARE", 1)[1])["tokens_per_s"]
        two = llmops_train(tmp, "w2", a.steps, a.batch, 2)
        subprocess.run([sys.executable, "-m", "llmops.cli", "ray", "stop"], capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RAY_HOME=str(tmp / "ray-home")))
    print(f"# 1/5/15-min load average at the end: {os.getloadavg()} on {os.cpu_count()} CPUs")
    figure("train_tokens_per_s_llmops_1_worker", one["tokens_per_s"], "tokens/s")
    figure("train_tokens_per_s_bare_trainer", bare, "tokens/s")
    figure("train_tokens_per_s_llmops_2_workers", two["tokens_per_s"], "tokens/s")
    figure("train_stage_wall_s_1_worker", one["train_stage_s"], "s")
    ratio("train_tokens_per_s_llmops_vs_bare_trainer", one["tokens_per_s"] / bare)
    ratio("train_scaling_2_workers_vs_1", two["tokens_per_s"] / one["tokens_per_s"])


if __name__ == "__main__":
    main()
