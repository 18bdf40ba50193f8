"""The stage line: state.json contract, skip on unchanged inputs, failure handling, provenance.

The engine is real; the five stages are replaced by recording functions so that the rerun logic
is tested without training (the end-to-end tests run the real stages)."""

from __future__ import annotations

import json

import pytest

from llmops.core.errors import StageError
from llmops.pipeline import engine
from llmops.pipeline.stages import LINE, StageDef
from llmops.run import OUTPUT_TYPES, TrainOutputs


@pytest.fixture
def recorder():
    """The real line's stages (names, inputs, needs) with recording run functions."""
    calls: list[str] = []
    fail = set()

    def make(d):
        def run(cfg, ctx):
            calls.append(d.name)
            if d.name in fail:
                raise RuntimeError(f"{d.name} broke")
            for need in d.needs:
                ctx.outputs(need)  # raises when the upstream stage did not finish
            if d.name == "train":
                return TrainOutputs(metrics={"lr": cfg.training.lr, "perplexity": 10.0 + cfg.training.lr})
            return OUTPUT_TYPES[d.name]()
        return run

    line = tuple(StageDef(d.name, make(d), d.plan, d.inputs, d.needs, d.describe) for d in LINE)
    return calls, fail, line


def _state(run_dir):
    return json.loads((run_dir / "state.json").read_text())


def test_state_contract_and_skip_on_rerun(compose, tmp_path, recorder):
    calls, _, line = recorder
    cfg = compose("quickstart")
    run_dir = tmp_path / "run"
    result = engine.run(cfg, run_dir, line=line)
    assert result.metric == 10.0 + cfg.training.lr  # the job's return value: sweep.metric (perplexity)
    st = _state(run_dir)
    assert set(st) >= {"run_id", "recipe", "stages"} and st["recipe"] == "quickstart"
    assert [s for s in st["stages"]] == ["prepare_data", "train", "export", "deploy", "smoke_test"]
    for name, s in st["stages"].items():
        assert s["status"] == "done" and s["fingerprint"] and "outputs" in s
    assert calls == ["prepare_data", "train", "export", "deploy", "smoke_test"]

    calls.clear()
    engine.run(compose("quickstart"), run_dir, line=line)  # same inputs: nothing reruns, run id is kept
    assert calls == []
    assert _state(run_dir)["run_id"] == st["run_id"]

    engine.run(compose("quickstart", "training.lr=3e-4"), run_dir, line=line)  # train and downstream rerun
    assert calls == ["train", "export", "deploy", "smoke_test"]
    assert _state(run_dir)["stages"]["train"]["outputs"]["metrics"]["lr"] == 3e-4


def test_return_value_is_the_configured_sweep_metric(compose, tmp_path, recorder):
    _, _, line = recorder
    r = engine.run(compose("quickstart", "sweep.metric=lr"), tmp_path / "a", line=line)
    assert r.metric == compose("quickstart").training.lr
    r = engine.run(compose("quickstart", "sweep.metric=no_such_metric"), tmp_path / "b", line=line)
    assert r.metric is None
    r = engine.run(compose("quickstart", "stages=[prepare_data]"), tmp_path / "c", line=line)
    assert r.metric is None  # train did not run


def test_stage_selection_and_missing_upstream(compose, tmp_path, recorder):
    calls, _, line = recorder
    run_dir = tmp_path / "run"
    engine.run(compose("quickstart", "stages=[prepare_data]"), run_dir, line=line)
    st = _state(run_dir)["stages"]
    assert st["prepare_data"]["status"] == "done" and st["train"]["status"] == "skipped"
    with pytest.raises(StageError, match="stage 'export'.*'train' has not finished"):
        engine.run(compose("quickstart", "stages=[export]"), run_dir, line=line)


def test_failure_records_stage_and_keeps_earlier_outputs(compose, tmp_path, recorder):
    calls, fail, line = recorder
    fail.add("export")
    run_dir = tmp_path / "run"
    with pytest.raises(StageError, match="stage 'export' failed: RuntimeError: export broke"):
        engine.run(compose("quickstart"), run_dir, line=line)
    st = _state(run_dir)["stages"]
    assert st["train"]["status"] == "done" and st["train"]["outputs"]["metrics"]["lr"]
    assert st["export"]["status"] == "failed" and "export broke" in st["export"]["error"]
    assert st["deploy"]["status"] == "pending"
    assert (run_dir / "export.error.txt").is_file()
    fail.clear()
    calls.clear()
    engine.run(compose("quickstart"), run_dir, line=line)  # the rerun redoes only what did not finish
    assert calls == ["export", "deploy", "smoke_test"]


def test_provenance_and_saved_config_are_masked(compose, tmp_path, recorder, monkeypatch):
    monkeypatch.setenv("LLMOPS_TEST_TOKEN", "tok-SECRET-123456")
    with pytest.raises(Exception, match=r"add it with '\+cluster.headers.Authorization"):
        compose("quickstart", "cluster.headers.Authorization=Bearer x")
    cfg = compose("quickstart", "+cluster.headers.Authorization=Bearer hunter2-SECRET",
                  "+cluster.envs.HF_TOKEN=${oc.env:LLMOPS_TEST_TOKEN}")
    run_dir = tmp_path / "run"
    engine.run(cfg, run_dir, overrides=["+cluster.headers.Authorization=Bearer hunter2-SECRET"],
               line=recorder[2])
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["versions"]["python"] and prov["recipe"] == "quickstart"
    assert prov["config"]["training"]["lr"] == cfg.training.lr
    for f in run_dir.rglob("*"):
        if f.is_file():
            text = f.read_text(errors="replace")
            assert "hunter2-SECRET" not in text and "tok-SECRET-123456" not in text, f
    assert "***" in (run_dir / "config.yaml").read_text()


def test_plan_has_no_side_effects(compose, tmp_path):
    cfg = compose("quickstart")
    steps = engine.plan(cfg, tmp_path / "planned")
    assert [s["stage"] for s in steps] == ["prepare_data", "train", "export", "deploy", "smoke_test"]
    assert not (tmp_path / "planned").exists()


def test_relative_paths_become_absolute_before_anything_runs(compose, tmp_path, monkeypatch):
    """Ray workers run in Ray's session folder: a relative storage.root must not land there."""
    monkeypatch.chdir(tmp_path)
    cfg = compose("quickstart", "storage.root=models", "paths.cache_dir=./cache",
                  "model.tokenizer=./tok", check=False)
    engine.absolute_paths(cfg)
    assert cfg.storage.root == str(tmp_path / "models")
    assert cfg.paths.cache_dir == str(tmp_path / "cache")
    assert cfg.model.tokenizer == str(tmp_path / "tok")
    hub = compose("gpt2-wikitext")
    engine.absolute_paths(hub)
    assert hub.model.name_or_path == "gpt2" and hub.dataset.name == "wikitext"  # hub ids untouched
