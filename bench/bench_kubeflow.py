"""Overhead of `cluster=kubeflow cluster.mode=local` (the Kubeflow SDK's local process backend: a
fresh venv, pip, torchrun) against `cluster=local` (embedded Ray) for the same tiny training job:
submission to the first logged training step, and end to end. The baseline (cluster=local) is
measured in the same run, on the same prepared data.

    python bench/bench_kubeflow.py [--steps 6] [--repeat 1]

Both run the real training function through their backends. The first training step is the first
`loss` record in the run's metrics.jsonl (training.logging_steps=1). Prints `figure` lines
(seconds, medians over --repeat) and `ratio kubeflow_local_over_local_*` lines.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _util import figure, ratio, run_once


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    from llmops.config.compose import strip_hydra
    from llmops.pipeline import engine
    from llmops.pipeline.checks import compose

    work = Path(tempfile.mkdtemp(prefix="bench-kubeflow-"))
    common = [f"paths.output_root={work / 'outputs'}", f"paths.cache_dir={work / 'cache'}",
              f"storage.root={work / 'models'}", "dataset.max_train_blocks=64",
              "dataset.max_eval_blocks=8", "dataset.block_size=64",
              "training.per_device_train_batch_size=8", "training.per_device_eval_batch_size=8",
              f"training.max_steps={args.steps}", f"training.eval_steps={args.steps}",
              "training.logging_steps=1"]

    def cfg_for(run_id: str, *extra: str):
        cfg, _ = compose("quickstart", [*common, f"run_id={run_id}", *extra])
        return strip_hydra(cfg)

    prep = cfg_for("prep", "stages=[prepare_data]")
    prep_state = engine.run(prep, work / "prep").state.data["stages"]["prepare_data"]
    results: dict = {"local": [], "kubeflow_local": []}
    for i in range(args.repeat):
        for name, extra in [("local", ["cluster=local"]),
                            ("kubeflow_local", ["cluster=kubeflow", "cluster.mode=local",
                                                "cluster.poll_interval_s=0.2",
                                                "cluster.follow_logs=false"])]:
            r = run_once(cfg_for(f"{name}-{i}".replace("_", "-"), *extra), work / f"{name}-{i}", prep_state)
            print(f"# {name} run {i}: {r}", flush=True)
            results[name].append(r)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("first_step_s", "end_to_end_s")}
           for n, rs in results.items()}
    for n, m in med.items():
        figure(f"{n}_first_step", m["first_step_s"], "s")
        figure(f"{n}_end_to_end", m["end_to_end_s"], "s")
    figure("kubeflow_local_extra_first_step", med["kubeflow_local"]["first_step_s"] - med["local"]["first_step_s"], "s")
    ratio("kubeflow_local_over_local_first_step",
          med["kubeflow_local"]["first_step_s"] / med["local"]["first_step_s"])
    ratio("kubeflow_local_over_local_end_to_end",
          med["kubeflow_local"]["end_to_end_s"] / med["local"]["end_to_end_s"])
    losses = {n: rs[0]["eval_loss"] for n, rs in results.items()}
    print(f"# final eval loss: {losses}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
