"""Sweeps: bad input, failures and fail_fast, the summary and report, the Optuna overlay.

The resumable Optuna sweeper itself: test_optuna_sweeper.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llmops import cli


def _sweep_dir(out: Path) -> Path:
    dirs = sorted((out / "multirun").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def _base(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"storage.root={tmp_path / 'models'}"]


# ---------------------------------------------------------------------------------- bad input
def test_sweep_over_a_key_that_does_not_exist_stops_before_any_job(tmp_path, capsys):
    rc = cli.main(["run", "quickstart", "-m", "training.lrr=1e-3,2e-3", *_base(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "unknown key 'training.lrr'" in err and "did you mean 'training.lr'" in err
    assert not (tmp_path / "out").exists()


def test_sweep_over_a_choice_that_is_not_an_option_stops_before_any_job(tmp_path, capsys):
    rc = cli.main(["run", "quickstart", "-m", "model=gpt2_tiny,gpt2_tinyy", *_base(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "model has no option 'gpt2_tinyy'" in err and "did you mean 'gpt2_tiny'" in err
    assert not (tmp_path / "out").exists()


def test_unknown_sweep_overlay_is_named(tmp_path, capsys):
    rc = cli.main(["run", "quickstart", "-m", "sweep=optuna_lrr", *_base(tmp_path)])
    assert rc == 1
    assert "sweep has no option 'optuna_lrr'" in capsys.readouterr().err


# --------------------------------------------------------------------- failures, summary, report
@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others_and_the_summary_says_why(tmp_path, capsys):
    # job 0 fails validation (max_train_blocks must be positive); job 1 runs prepare_data
    rc = cli.main(["run", "quickstart", "-m", "dataset.max_train_blocks=-1,16",
                   "stages=[prepare_data]", *_base(tmp_path)])
    assert rc == 1  # a sweep with a failed job exits non-zero
    out = capsys.readouterr().out
    sd = _sweep_dir(tmp_path / "out")
    rows = _rows(sd)
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert "dataset.max_train_blocks" in rows[0]["error"] and "positive integer" in rows[0]["error"]
    assert rows[1]["dataset.max_train_blocks"] == "16" and rows[1]["error"] == ""
    state = json.loads((sd / "1" / "state.json").read_text())
    assert state["stages"]["prepare_data"]["status"] == "done"
    assert "1 completed, 1 failed" in out and (sd / "sweep.png").stat().st_size > 1000
    # each job has its own run id (and so its own storage prefix)
    ids = {json.loads((sd / n / "provenance.json").read_text())["run_id"] for n in ("1",)}
    assert all(i.endswith("-j1") for i in ids)

    # `llmops sweep report` prints the same table again
    assert cli.main(["sweep", "report", str(sd)]) == 0
    again = capsys.readouterr().out
    assert "1 completed, 1 failed" in again and "positive integer" in again


@pytest.mark.slow
def test_fail_fast_leaves_later_jobs_not_run(tmp_path, capsys):
    rc = cli.main(["run", "quickstart", "-m", "dataset.max_train_blocks=-1,16,32", "sweep.fail_fast=true",
                   "stages=[prepare_data]", *_base(tmp_path)])
    assert rc == 1
    sd = _sweep_dir(tmp_path / "out")
    rows = _rows(sd)
    assert [r["status"] for r in rows] == ["failed", "not run", "not run"]
    assert "sweep.fail_fast=true and job 0 failed" in rows[1]["error"]
    assert not (sd / "1" / "state.json").exists()  # nothing ran there


def test_report_on_a_folder_that_is_not_a_sweep_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["sweep", "report", str(tmp_path)]) == 1
    assert "no job directories" in capsys.readouterr().err
    assert cli.main(["sweep", "report", str(tmp_path / "nope")]) == 1
    assert "no such sweep directory" in capsys.readouterr().err


def test_promote_without_a_completed_job_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "sweep_job.json").write_text(json.dumps(
        {"num": 0, "overrides": ["training.lr=1"], "status": "failed", "error": "boom"}))
    assert cli.main(["promote", str(tmp_path)]) == 1
    assert "no completed job with a perplexity" in capsys.readouterr().err


# -------------------------------------------------------------------------------- optuna overlay
def test_optuna_overlay_composes_with_a_persistent_study_in_the_sweep_dir(tmp_path, capsys):
    rc = cli.main(["run", "quickstart", "sweep=optuna_lr", "--cfg", "hydra", *_base(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "hydra_plugins.llmops_optuna.resumable_optuna.ResumableOptunaSweeper" in out
    assert "storage: sqlite:///${hydra.sweep.dir}/optuna.db" in out  # persistent, in the sweep dir
    assert "dir: ${paths.output_root}/multirun/${run_name}-optuna_lr" in out  # fixed: reruns resume
    assert "training.lr: tag(log, interval(1e-4, 3e-3))" in out
    assert "direction: ${sweep.direction}" in out  # stated once: the summary ranks by the same
