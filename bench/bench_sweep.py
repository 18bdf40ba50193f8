"""A 4-job sweep of the quickstart: the Ray launcher against Hydra's basic launcher.

    python bench/bench_sweep.py [--jobs 4] [--train-blocks 512]

Same jobs in both (training.lr over 4 values, a short training: dataset.max_train_blocks
blocks, stages prepare_data,train, `cluster.trainer` as --trainer says), same machine, same run
of this script. The data cache is warmed first so that neither sweep pays the tokenizer
training; the basic launcher runs the jobs one after another in one process, the Ray launcher
runs them side by side, each job in its own process with the CPUs its training needs (1 here; a
fork of a warm Ray worker with --trainer process). Both run on the warm Ray head
(llmops.clusters.warm_ray), started before either sweep and not counted.

The Ray sweep runs twice: the first on the head starts its warm job runners (the processes that
--trainer process jobs are forked from; they stay with the head), the second finds them warm.

Prints:
  ratio sweep_speedup_ray_vs_basic      basic wall time / the second Ray sweep's (goal >= 1.5 on
                                        2 cores); `..._first_sweep` for the first
  figure sweep_outside_training_share   share of the Ray sweep's job time spent outside the
                                        training loop (process start, imports, Ray and Ray Train
                                        start-up, data loading, evaluation, checkpointing)
and the wall times of both sweeps, with each job's train-stage and training-loop seconds.
"""

from __future__ import annotations

import argparse
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

p = argparse.ArgumentParser()
p.add_argument("--jobs", type=int, default=4)
p.add_argument("--train-blocks", type=int, default=2048)  # the quickstart's own (its 128 steps)
p.add_argument("--trainer", choices=["process", "ray"], default="process",
               help="cluster.trainer of every job (process: one worker in the job's process)")
a = p.parse_args()

LOAD: dict = {}
LRS = ["1e-3", "2e-3", "3e-3", "5e-3", "7e-3", "1e-2", "2e-2", "3e-2"][: a.jobs]


def sweep(tmp: Path, name: str, extra: list[str]) -> tuple[float, Path]:
    out = tmp / name
    cmd = [sys.executable, "-m", "llmops.cli", "run", "quickstart", WARM, "-m", f"training.lr={','.join(LRS)}",
           f"dataset.max_train_blocks={a.train_blocks}", "dataset.max_eval_blocks=16",
           "training.eval_steps=1000", "stages=[prepare_data,train]", f"cluster.trainer={a.trainer}",
           f"paths.output_root={out}", f"paths.cache_dir={tmp / 'cache'}", f"storage.root={tmp / 'models'}",
           *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp)
    wall = time.perf_counter() - t0
    LOAD[name] = os.getloadavg()[1]  # 5-minute load average at the end: other work on the machine
    if r.returncode != 0:
        raise SystemExit(f"{name} sweep failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    (sd,) = list((out / "multirun").iterdir())
    return wall, sd


def job_times(sd: Path) -> list[dict]:
    rows = []
    for n in range(a.jobs):
        rec = json.loads((sd / str(n) / "sweep_job.json").read_text())
        st = json.loads((sd / str(n) / "state.json").read_text())["stages"]
        m = st["train"]["outputs"]["metrics"]
        rows.append({"job": n, "seconds": rec["seconds"], "train_stage": st["train"]["seconds"],
                     "train_loop": m.get("train_runtime_s"), "perplexity": m.get("perplexity")})
    return rows


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    ENV = dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RAY_HOME=str(tmp / "ray-home"))
    # the warm Ray head both launchers' jobs train on, up before either sweep (not measured)
    head = subprocess.run([sys.executable, "-c", "import os; from llmops.clusters import warm_ray; "
                           "print(warm_ray.ensure(os.cpu_count() or 1, 600))"],
                          capture_output=True, text=True, env=ENV, cwd=tmp)
    if head.returncode != 0:
        raise SystemExit(head.stderr[-3000:])
    warm = subprocess.run([sys.executable, "-m", "llmops.cli", "run", "quickstart", WARM,
                           f"dataset.max_train_blocks={a.train_blocks}", "dataset.max_eval_blocks=16",
                           "stages=[prepare_data]", f"hydra.run.dir={tmp / 'warm'}",
                           f"paths.cache_dir={tmp / 'cache'}"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp)
    if warm.returncode != 0:
        raise SystemExit(warm.stderr[-3000:])
    basic_wall, basic_dir = sweep(tmp, "basic", [])
    first_wall, first_dir = sweep(tmp, "ray_first", ["hydra/launcher=ray"])  # starts the job runners
    ray_wall, ray_dir = sweep(tmp, "ray", ["hydra/launcher=ray"])  # the same sweep again, warm
    basic_jobs, first_jobs, ray_jobs = job_times(basic_dir), job_times(first_dir), job_times(ray_dir)
    subprocess.run([sys.executable, "-m", "llmops.cli", "ray", "stop"], env=ENV, cwd=tmp,
                   capture_output=True)

for label, wall, jobs in (("basic", basic_wall, basic_jobs), ("ray_first", first_wall, first_jobs),
                          ("ray", ray_wall, ray_jobs)):
    print(f"# {label} launcher: {wall:.1f} s wall for {a.jobs} jobs "
          f"(5-min load average at the end {LOAD[label]:.1f} on {os.cpu_count()} CPUs)")
    for j in jobs:
        print(f"#   job {j['job']}: {j['seconds']:.1f} s (train stage {j['train_stage']:.1f} s, "
              f"training loop {j['train_loop'] or 0:.1f} s), perplexity {j['perplexity']:.4g}")

loop = sum(j["train_loop"] or 0 for j in ray_jobs)
total = sum(j["seconds"] for j in ray_jobs)
figure("sweep_basic_wall_s", basic_wall, "s")
figure("sweep_ray_wall_s", ray_wall, "s")
figure("sweep_outside_training_share", 1 - loop / total if total else 0.0)
figure("sweep_ray_outside_training_per_job_s", (total - loop) / len(ray_jobs), "s")
figure("sweep_ray_train_stage_outside_loop_per_job_s",
       sum(j["train_stage"] - (j["train_loop"] or 0) for j in ray_jobs) / len(ray_jobs), "s")
figure("sweep_basic_outside_training_share",
       1 - sum(j["train_loop"] or 0 for j in basic_jobs) / sum(j["seconds"] for j in basic_jobs))
figure("sweep_ray_first_wall_s", first_wall, "s")
figure("sweep_ray_first_outside_training_per_job_s",
       sum(j["seconds"] - (j["train_loop"] or 0) for j in first_jobs) / len(first_jobs), "s")
ratio("sweep_speedup_ray_vs_basic", basic_wall / ray_wall)
ratio("sweep_speedup_ray_first_sweep_vs_basic", basic_wall / first_wall)
