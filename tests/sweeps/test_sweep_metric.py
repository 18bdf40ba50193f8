"""The configured metric and direction: each job returns the train metric `sweep.metric` names,
and the summary, `sweep report` and the Optuna study rank by it in `sweep.direction`.

Two quickstart jobs that differ in the training batch size (so in throughput), ranked by
`tokens_per_s`, maximised: with Hydra's basic launcher, with the Ray launcher, and as an Optuna
(grid) search."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.recipes.conftest import run_cli

BATCHES = ("4", "32")
SHORT = ["dataset.max_train_blocks=128", "dataset.max_eval_blocks=8", "training.eval_steps=1000",
         "stages=[prepare_data,train]"]
BY_THROUGHPUT = ["sweep.metric=tokens_per_s", "sweep.direction=maximize"]


def _base(tmp_path: Path, cache: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={cache}",
            f"storage.root={tmp_path / 'models'}"]


def _rows(sd: Path) -> list[dict]:
    with open(sd / "summary.csv") as f:
        return list(csv.DictReader(f))


def _train_metrics(job_dir: Path) -> dict:
    state = json.loads((job_dir / "state.json").read_text())
    return state["stages"]["train"]["outputs"]["metrics"]


def _check_ranked_by_throughput(sd: Path) -> dict:
    """Both jobs completed, each returned its tokens_per_s, the fastest is the best: returns it."""
    rows = _rows(sd)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    speeds = {r["job"]: _train_metrics(Path(r["run_dir"]))["tokens_per_s"] for r in rows}
    assert len(set(speeds.values())) == 2, speeds  # the batch size changed the throughput
    for r in rows:
        rec = json.loads((Path(r["run_dir"]) / "sweep_job.json").read_text())
        assert rec["result"] == speeds[r["job"]]  # the job's return value is sweep.metric
        assert float(r["metric"]) == pytest.approx(speeds[r["job"]], rel=1e-5)
    fastest = max(speeds, key=speeds.get)
    assert [r["job"] for r in rows if r["best"] == "*"] == [fastest]
    best = json.loads((sd / "best.json").read_text())
    assert (best["metric"], best["direction"]) == ("tokens_per_s", "maximize")
    assert str(best["best"]["job"]) == fastest and best["best"]["metric"] == speeds[fastest]
    return best


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=ray"]], ids=["basic", "ray"])
def test_a_sweep_ranked_by_tokens_per_s_maximised_picks_the_fastest_job(tmp_path, shared_cache,
                                                                         launcher):
    r = run_cli("run", "quickstart", "-m", *launcher,
                f"training.per_device_train_batch_size={','.join(BATCHES)}", *SHORT, *BY_THROUGHPUT,
                *_base(tmp_path, shared_cache), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (sd,) = sorted((tmp_path / "out" / "multirun").iterdir())
    best = _check_ranked_by_throughput(sd)
    assert f"best (*): job {best['best']['job']} " in r.stdout and "(tokens_per_s " in r.stdout

    # an interrupted sweep has no best.json: `sweep report` ranks by the jobs' own sweep section
    (sd / "best.json").unlink()
    rep = run_cli("sweep", "report", str(sd))
    assert rep.returncode == 0, rep.stderr
    assert json.loads((sd / "best.json").read_text()) == best


@pytest.mark.slow
def test_an_optuna_search_maximises_tokens_per_s(tmp_path, shared_cache):
    optuna = pytest.importorskip("optuna", minversion="4")

    r = run_cli("run", "quickstart", "-m", "sweep=optuna_lr", *BY_THROUGHPUT,
                "hydra.sweeper.sampler.name=grid", "hydra.sweeper.n_trials=2",
                f"training.per_device_train_batch_size=choice({','.join(BATCHES)})",
                "training.lr=1e-3", "training.warmup_ratio=0.05",  # fixed: not searched here
                *SHORT, *_base(tmp_path, shared_cache), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sd = tmp_path / "out" / "multirun" / "quickstart-optuna_lr"
    study = optuna.load_study(study_name="quickstart-optuna_lr", storage=f"sqlite:///{sd}/optuna.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert sorted(str(t.params["training.per_device_train_batch_size"]) for t in study.trials) == \
        sorted(BATCHES)
    # each trial's value is its job's tokens_per_s; the best trial is the fastest job
    for t in study.trials:
        assert t.value == _train_metrics(sd / str(t.number))["tokens_per_s"]
    assert study.best_trial.value == max(t.value for t in study.trials)
    best = _check_ranked_by_throughput(sd)
    assert best["best"]["job"] == study.best_trial.number
