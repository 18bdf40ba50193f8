"""Where a short run's time goes: `llmops run quickstart training.max_steps=16
stages=[prepare_data,train,export]` with Ray Train (`cluster.trainer=ray`) cold (an embedded
Ray, `cluster.ray_idle_timeout_s=0`) and warm (the warm head already up), and process (`cluster.trainer=process`: no Ray, the one worker in
the llmops process), in the same run of this script.

    python bench/bench_profile.py

Each line the run prints is stamped when it arrives (time.perf_counter in this process); the
phases are the spans between marker lines the run already prints (llmops' stage log, Ray Train's
controller and worker lines, the Trainer's progress bar). Prints `figure profile_<mode>_<phase>_s`
per phase, `ratio profile_train_stage_warm_vs_cold` and `ratio profile_train_stage_process_vs_warm`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the warm Ray head (cluster=local, opt-in: cluster.ray_idle_timeout_s > 0); cold runs override it with 0
WARM = "cluster.ray_idle_timeout_s=600"

from _util import ROOT, figure, ratio

MARKERS = [  # (phase that ends at this line, regex)
    ("cli_start_and_compose", r"stage prepare_data: running"),
    ("prepare_data", r"stage prepare_data: done"),
    ("driver_imports_and_preflight_and_ray_connect", r"warm Ray head at|Started training worker group|Setting up process group"),
    ("train_controller_placement_group_worker_start", r"Setting up process group|Started training worker group"),
    ("worker_imports_model_data_trainer", r"\| 0/\d+ \["),
    ("training_loop", r"\| (\d+)/\1 \["),
    ("final_eval_checkpoint_save_and_train_stop", r"stage train: done"),
    ("export", r"stage export: done"),
]
# cluster.trainer=process: no Ray lines; the phases between the stage log and the Trainer's bar
PROCESS_MARKERS = [MARKERS[0], MARKERS[1],
                   ("imports_preflight_model_data_trainer", r"\| 0/\d+ \["), *MARKERS[-3:]]


def profile(tmp: Path, name: str, extra: list[str], env: dict, markers: list = MARKERS) -> dict:
    cmd = [sys.executable, "-m", "llmops.cli", "run", "quickstart", WARM, "training.max_steps=16",
           "stages=[prepare_data,train,export]", f"hydra.run.dir={tmp / name}",
           f"paths.cache_dir={tmp / 'cache'}", f"storage.root={tmp / 'models'}", *extra]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         cwd=tmp, bufsize=1)
    stamps, i, lines = {}, 0, []
    for line in p.stdout:
        lines.append(line)
        now = time.perf_counter() - t0
        while i < len(markers) and re.search(markers[i][1], line):
            stamps[markers[i][0]] = now
            i += 1
            break
    p.wait()
    total = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{''.join(lines[-60:])}")
    phases, prev = {}, 0.0
    for ph, _ in markers:
        if ph in stamps:
            phases[ph] = stamps[ph] - prev
            prev = stamps[ph]
    phases["process_exit"] = total - prev
    st = json.loads((tmp / name / "state.json").read_text())["stages"]
    return {"phases": phases, "total": total, "train_stage": st["train"]["seconds"],
            "train_loop": st["train"]["outputs"]["metrics"]["train_runtime_s"]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RAY_HOME=str(tmp / "ray-home"))
        ray_train = ["cluster.trainer=ray"]
        res = {"cold": profile(tmp, "cold", [*ray_train, "cluster.ray_idle_timeout_s=0"], env)}
        profile(tmp, "start_head", ray_train, env)  # starts the warm head (not measured)
        res["warm"] = profile(tmp, "warm", ray_train, env)
        res["process"] = profile(tmp, "process", ["cluster.trainer=process"], env, PROCESS_MARKERS)
        subprocess.run([sys.executable, "-m", "llmops.cli", "ray", "stop"], env=env, cwd=tmp,
                       capture_output=True)
    print(f"# 1/5/15-min load average at the end: {os.getloadavg()} on {os.cpu_count()} CPUs")
    for mode, r in res.items():
        print(f"# {mode}: {r['total']:.1f} s end to end, train stage {r['train_stage']:.1f} s, "
              f"of it the training loop {r['train_loop']:.1f} s")
        for ph, s in r["phases"].items():
            figure(f"profile_{mode}_{ph}_s", s, "s")
    ratio("profile_train_stage_warm_vs_cold", res["warm"]["train_stage"] / res["cold"]["train_stage"])
    ratio("profile_end_to_end_warm_vs_cold", res["warm"]["total"] / res["cold"]["total"])
    ratio("profile_train_stage_process_vs_warm", res["process"]["train_stage"] / res["warm"]["train_stage"])


if __name__ == "__main__":
    main()
