"""The README's main job end to end against a bare transformers script doing the same work.

    python bench/bench_quickstart.py

Measured in the same run of this script:
  bare   one Python process: read the same corpus rows, train the same 2,048-token byte-level
         BPE, tokenize into 128-token blocks (2,048 train / 64 eval), train the same tiny GPT-2
         for the same steps with a transformers Trainer (same batch, lr, schedule, evaluation
         every 64 steps), save safetensors, generate 16 tokens;
  cold   `llmops run quickstart cluster.trainer=ray` (Ray Train) with no Ray running (it starts
         the warm head) and an empty cache;
  warm   the same again with the head up (new run dir, empty cache again: the same work);
  process  `llmops run quickstart` as it is (`cluster.trainer=auto`: its one worker trains in
         the llmops process, no Ray at all).
Prints `ratio quickstart_time_vs_bare_script` (the quickstart as it is; goal <= 1.5),
`..._ray_train_warm` and `..._ray_train_cold`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the warm Ray head (cluster=local, opt-in: cluster.ray_idle_timeout_s > 0); cold runs override it with 0
WARM = "cluster.ray_idle_timeout_s=600"

from _util import ROOT, figure, ratio

BARE = r'''
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
out = sys.argv[2]
import numpy as np, torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
from transformers import (GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer,
                          TrainingArguments)
from llmops.config.compose import compose
from llmops.data.build import load_rows
cfg, _ = compose("quickstart", [])
rows = load_rows(cfg)                              # the corpus text: same rows, same split
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(rows["train"], trainers.BpeTrainer(vocab_size=2048, special_tokens=["<|endoftext|>"]))
tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
def blocks(texts, n):
    ids = [i for e in bpe.encode_batch(texts) for i in e.ids + [0]]
    b = np.array(ids[: len(ids) // 128 * 128], dtype=np.int64).reshape(-1, 128)
    return b[:n]
class DS(torch.utils.data.Dataset):
    def __init__(self, b): self.b = b
    def __len__(self): return len(self.b)
    def __getitem__(self, i):
        x = torch.as_tensor(self.b[i]); return {"input_ids": x, "labels": x}
train, ev = DS(blocks(rows["train"], 2048)), DS(blocks(rows["validation"], 64))
torch.manual_seed(42)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2))
args = TrainingArguments(output_dir=out + "/hf", num_train_epochs=1, per_device_train_batch_size=16,
                         per_device_eval_batch_size=16, learning_rate=1e-3, warmup_steps=0.05,
                         logging_steps=20, eval_strategy="steps", eval_steps=64, save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True, seed=42)
Trainer(model=model, args=args, train_dataset=train, eval_dataset=ev).train()
model.save_pretrained(out + "/model", safe_serialization=True); tok.save_pretrained(out + "/model")
ids = tok("The module provides", return_tensors="pt").input_ids
torch.manual_seed(0)
print("BARE", tok.decode(model.generate(ids, max_new_tokens=16, do_sample=True, temperature=0.8)[0]))
'''


def llmops_run(tmp: Path, name: str, env: dict, *extra: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "llmops.cli", "run", "quickstart", WARM, f"hydra.run.dir={tmp / name}",
           f"paths.cache_dir={tmp / ('cache-' + name)}", f"storage.root={tmp / 'models'}", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name}: {p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return wall, json.loads((tmp / name / "state.json").read_text())["stages"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RAY_HOME=str(tmp / "ray-home"))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", BARE, str(ROOT), str(tmp / "bare")], env=env,
                           capture_output=True, text=True, cwd=tmp)
        bare = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"bare script failed:\n{p.stderr[-3000:]}")
        cold, st_cold = llmops_run(tmp, "cold", env, "cluster.trainer=ray")
        warm, st_warm = llmops_run(tmp, "warm", env, "cluster.trainer=ray")
        process, st_process = llmops_run(tmp, "process", env)  # the default: cluster.trainer=auto
        subprocess.run([sys.executable, "-m", "llmops.cli", "ray", "stop"], env=env, cwd=tmp,
                       capture_output=True)
    print(f"# 1/5/15-min load average at the end: {os.getloadavg()} on {os.cpu_count()} CPUs")
    figure("quickstart_bare_script_s", bare, "s")
    figure("quickstart_cold_s", cold, "s")
    figure("quickstart_warm_s", warm, "s")
    figure("quickstart_trainer_process_s", process, "s")
    for label, st in (("cold", st_cold), ("warm", st_warm), ("process", st_process)):
        for name, s in st.items():
            figure(f"quickstart_{label}_stage_{name}_s", s.get("seconds") or 0.0, "s")
    ratio("quickstart_time_vs_bare_script", process / bare)
    ratio("quickstart_time_vs_bare_script_ray_train_warm", warm / bare)
    ratio("quickstart_time_vs_bare_script_ray_train_cold", cold / bare)


if __name__ == "__main__":
    main()
