"""Shared helpers for bench/ scripts: timing and the `figure`/`ratio` output lines."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def figure(name: str, value: float, unit: str = "") -> None:
    print(f"figure {name}={value:.4g} {unit}".rstrip())


def ratio(name: str, value: float) -> None:
    print(f"ratio {name}={value:.3g}")


def time_cmd(cmd: list[str], repeat: int = 5, env: dict | None = None) -> float:
    """Median wall time of a command (seconds); fails loudly when the command fails."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return statistics.median(times)


# ------------------------------------------------- a train stage through a backend, timed
def _watch_first_step(metrics: Path, out: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if '"loss"' in metrics.read_text():
                out["t"] = time.time()
                return
        except OSError:
            pass
        time.sleep(0.05)


def run_once(cfg, run_dir: Path, prep_state: dict) -> dict:
    """Train through the configured backend; seconds to the first step and end to end."""
    from llmops.clusters import get_backend
    from llmops.pipeline.engine import open_run

    ctx = open_run(cfg, run_dir)
    ctx.state.data["stages"]["prepare_data"] = prep_state
    ctx.state.save()
    first: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_first_step,
                               args=(run_dir / "metrics.jsonl", first, stop), daemon=True)
    watcher.start()
    t0 = time.time()
    with get_backend(cfg) as backend:
        out = backend.run_training(cfg, ctx.training_task())
    t1 = time.time()
    stop.set()
    assert out.metrics["global_step"], out
    return {"first_step_s": first.get("t", t1) - t0, "end_to_end_s": t1 - t0,
            "global_step": out.metrics["global_step"], "eval_loss": out.metrics["eval_loss"]}


# ------------------------------------------------------------- a random GPT-2, saved as an export
TOKENIZER = ROOT.parent / "shared" / "data" / "gpt2-tokenizer"


def random_gpt2(out: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2,
                n_positions: int = 256, seed: int = 0) -> Path:
    """A GPT-2 with random weights (seeded: the same bytes every run) and the real GPT-2 tokenizer
    (../shared/data/gpt2-tokenizer, no hub download), saved by llmops' export code (safetensors)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from llmops.training.export import save_hf

    if not TOKENIZER.is_dir():
        raise SystemExit(f"{TOKENIZER} is absent: the GPT-2 tokenizer is needed")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions))
    save_hf(model, AutoTokenizer.from_pretrained(str(TOKENIZER)), out)
    return out


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
