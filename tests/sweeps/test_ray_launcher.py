"""`hydra/launcher=ray` through the real CLI: parallel jobs, data prepared once, failures, promote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.recipes.conftest import run_cli
from tests.sweeps.helpers import compose_and_check


def _base(tmp_path: Path, cache: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={cache}",
            f"storage.root={tmp_path / 'models'}"]


def _sweep_dir(out: Path) -> Path:
    (d,) = sorted((out / "multirun").iterdir())
    return d


def _rows(sd: Path) -> list[dict]:
    with open(sd / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ray_launcher_runs_jobs_in_parallel_on_data_prepared_once(tmp_path):
    # an empty cache of its own: the sweep's dataset is prepared once, before the jobs
    r = run_cli("run", "quickstart", "-m", "hydra/launcher=ray", "training.lr=1e-3,3e-3",
                "dataset.max_train_blocks=64", "dataset.max_eval_blocks=8", "training.eval_steps=4",
                "stages=[prepare_data,train,export]", *_base(tmp_path, tmp_path / "cache"), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sd = _sweep_dir(tmp_path / "out")
    rows = _rows(sd)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert all(float(row["perplexity"]) > 1 and float(row["tokens_per_s"]) > 0 for row in rows)
    assert sorted(row["best"] for row in rows) == ["", "*"]
    best = min(rows, key=lambda row: float(row["perplexity"]))
    assert best["best"] == "*"
    assert "2 completed, 0 failed" in r.stdout and "best (*): job" in r.stdout

    # the dataset was tokenized once, before the jobs; both jobs found it in the cache
    assert len(list((sd / ".prepare").iterdir())) == 1
    recs = [json.loads((sd / str(n) / "sweep_job.json").read_text()) for n in (0, 1)]
    states = [json.loads((sd / str(n) / "state.json").read_text()) for n in (0, 1)]
    assert all(s["stages"]["prepare_data"]["outputs"]["cache_hit"] for s in states)
    # the two jobs ran at the same time, each on its own CPU
    assert recs[0]["started"] < recs[1]["ended"] and recs[1]["started"] < recs[0]["ended"]
    assert [rec["cpus"] for rec in recs] == [1, 1]
    # each job stored its model under its own prefix
    uris = {s["stages"]["export"]["outputs"]["model_uri"] for s in states}
    assert len(uris) == 2

    # a second sweep on the same cache prepares nothing: the launcher finds the data there
    again = run_cli("run", "quickstart", "-m", "hydra/launcher=ray", "training.lr=1e-3,3e-3",
                    "dataset.max_train_blocks=64", "dataset.max_eval_blocks=8", "stages=[prepare_data]",
                    *_base(tmp_path / "again", tmp_path / "cache"), timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "is prepared already" in again.stdout + again.stderr
    assert not (_sweep_dir(tmp_path / "again" / "out") / ".prepare").exists()

    rep = run_cli("sweep", "report", str(sd))
    assert rep.returncode == 0 and "2 completed, 0 failed" in rep.stdout

    # promote: deploy the best job's model with the recipe's serving config (vllm, rendered)
    best_dir = sd / best["job"]
    train_before = states[int(best["job"])]["stages"]["train"]
    pro = run_cli("promote", str(sd), timeout=600)
    assert pro.returncode == 0, pro.stdout[-2000:] + pro.stderr[-2000:]
    promoted = json.loads((sd / "promoted.json").read_text())
    assert promoted["job"] == int(best["job"]) and promoted["run_dir"] == str(best_dir)
    after = json.loads((best_dir / "state.json").read_text())["stages"]
    assert after["deploy"]["status"] == "done" and after["smoke_test"]["status"] == "done"
    assert after["train"] == train_before  # not retrained
    isvc = next(Path(m) for m in after["deploy"]["outputs"]["manifests"] if "inferenceservice" in m)
    import yaml

    labels = yaml.safe_load(isvc.read_text())["metadata"]["labels"]
    prov = json.loads((best_dir / "provenance.json").read_text())
    assert labels["llmops.io/recipe-hash"] == prov["recipe_hash"]
    assert labels["llmops.io/recipe"] == "quickstart"


@pytest.mark.slow
def test_ray_launcher_failure_with_fail_fast_leaves_the_rest_not_run(tmp_path, shared_cache):
    r = run_cli("run", "quickstart", "-m", "hydra/launcher=ray", "dataset.max_train_blocks=-1,16",
                "sweep.fail_fast=true", "stages=[prepare_data]", *_base(tmp_path, shared_cache),
                timeout=600)
    assert r.returncode == 1
    sd = _sweep_dir(tmp_path / "out")
    rows = _rows(sd)
    assert [row["status"] for row in rows] == ["failed", "not run"]
    assert "dataset.max_train_blocks" in rows[0]["error"]
    assert "sweep.fail_fast=true and job 0 failed" in rows[1]["error"]
    assert not (sd / "1" / "state.json").exists()


def test_composing_with_the_ray_launcher_imports_neither_ray_nor_torch():
    # Hydra imports every plugin module when it starts; the launcher's work is loaded at launch
    r = compose_and_check(["hydra/launcher=ray", "hydra.launcher.max_parallel=3"], (
        "assert cfg.hydra.launcher._target_.endswith('ray_launcher.RayLauncher'), cfg.hydra.launcher\n"
        "assert cfg.hydra.launcher.max_parallel == 3 and cfg.hydra.launcher.job_timeout_s == 0\n"
        "heavy = sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"))
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_ray_launcher_forks_warm_jobs_for_trainer_process_that_train_as_the_basic_launcher(tmp_path, shared_cache):
    common = ["training.lr=1e-3,3e-3", "dataset.max_train_blocks=64", "dataset.max_eval_blocks=8",
              "training.eval_steps=4", "stages=[prepare_data,train]", "cluster.trainer=process",
              f"paths.cache_dir={shared_cache}", f"storage.root={tmp_path / 'models'}"]
    results = {}
    for name, extra in (("basic", []), ("ray", ["hydra/launcher=ray"])):
        r = run_cli("run", "quickstart", "-m", *common, *extra, f"paths.output_root={tmp_path / name}",
                    timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        sd = _sweep_dir(tmp_path / name)
        results[name] = [float(row["perplexity"]) for row in _rows(sd)]
    recs = [json.loads((sd / str(n) / "sweep_job.json").read_text()) for n in (0, 1)]
    assert [rec["process"] for rec in recs] == ["fork", "fork"]
    assert recs[0]["started"] < recs[1]["ended"] and recs[1]["started"] < recs[0]["ended"]
    assert results["ray"] == pytest.approx(results["basic"], rel=1e-5)
    assert len(set(results["ray"])) == 2  # two learning rates, two models
