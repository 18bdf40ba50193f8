"""Overhead of `cluster=ray` (a Ray job on an existing head) against `cluster=local` (embedded Ray)
for the same tiny training job: submission to the first logged training step, and end to end.

    python bench/bench_cluster_overhead.py [--steps 6]

Both run the real `llmops.training.fit` through their backends on the same prepared data. The
head is a real `ray start --head` on free loopback ports, started here (its start-up is reported
separately: `cluster=ray` means a cluster that is already up) and ended here. The first training
step is the first `loss` record in the run's metrics.jsonl (training.logging_steps=1).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _util import ROOT, figure, ratio, run_once


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()

    from llmops.pipeline import engine
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose
    from tests.fixtures.ray_head import start_head, stop_head

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    common = [f"paths.output_root={work / 'outputs'}", f"paths.cache_dir={work / 'cache'}",
              f"storage.root={work / 'models'}",
              "dataset.max_train_blocks=64", "dataset.max_eval_blocks=8",
              f"training.max_steps={args.steps}", f"training.eval_steps={args.steps}",
              "training.logging_steps=1", "cluster.num_workers=1",
              "cluster.trainer=ray"]  # Ray Train in both: the cost of the cluster, not of the trainer

    def cfg_for(run_id: str, *extra: str):
        cfg, _ = compose("quickstart", [*common, f"run_id={run_id}", *extra])
        return strip_hydra(cfg)

    prep = cfg_for("prep", "stages=[prepare_data]")
    engine.run(prep, work / "prep")
    prep_state = json.loads((work / "prep" / "state.json").read_text())["stages"]["prepare_data"]

    local = run_once(cfg_for("local-1", "stages=[prepare_data,train]"), work / "local-1", prep_state)

    t0 = time.time()
    head = start_head(num_cpus=2)
    head_start = time.time() - t0
    try:
        ray = run_once(cfg_for("ray-1", "stages=[prepare_data,train]", "cluster=ray",
                               f"cluster.address={head.address}", "cluster.poll_interval_s=0.25",
                               "cluster.follow_logs=false"),
                       work / "ray-1", prep_state)
    finally:
        stop_head(head)
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    figure("local_first_step_s", local["first_step_s"], "s")
    figure("local_end_to_end_s", local["end_to_end_s"], "s")
    figure("ray_job_first_step_s", ray["first_step_s"], "s")
    figure("ray_job_end_to_end_s", ray["end_to_end_s"], "s")
    figure("ray_head_start_s", head_start, "s")
    figure("steps", local["global_step"], "steps")
    ratio("ray_vs_local_first_step", ray["first_step_s"] / local["first_step_s"])
    ratio("ray_vs_local_end_to_end", ray["end_to_end_s"] / local["end_to_end_s"])


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    main()
