"""`llmops recipes lock RUN_DIR`: a frozen recipe that reproduces the run's config exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmops import cli


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared_cache) -> Path:
    out = tmp_path_factory.mktemp("lock")
    rc = cli.main(["run", "quickstart", "stages=[prepare_data]", "training.lr=2e-3",
                   f"paths.output_root={out / 'out'}", f"paths.cache_dir={shared_cache}",
                   f"storage.root={out / 'models'}", f"hydra.run.dir={out / 'run'}"])
    assert rc == 0
    return out / "run"


@pytest.mark.slow
def test_locked_recipe_reproduces_the_run_config_exactly(finished_run, tmp_path, capsys):
    lock = tmp_path / "frozen.lock.yaml"
    assert cli.main(["recipes", "lock", str(finished_run), "--out", str(lock)]) == 0
    text = lock.read_text()
    header = json.loads(next(l for l in text.splitlines() if l.startswith("# llmops-lock: "))[15:])
    assert header["hash"].startswith("sha256:") and header["recipe"] == "quickstart"
    assert header["versions"]["hydra-core"] and header["llmops_version"]
    body = yaml.safe_load(text)
    assert body["defaults"] == ["_llmops_schema", "_self_"]  # no option file can change it later
    assert body["training"]["lr"] == 0.002 and "max_grad_norm" in body["training"]  # defaults spelled out

    rerun = tmp_path / "rerun"
    assert cli.main(["run", str(lock), f"hydra.run.dir={rerun}"]) == 0
    a = yaml.safe_load((finished_run / "config.yaml").read_text())
    b = yaml.safe_load((rerun / "config.yaml").read_text())
    assert a.pop("run_id") != b.pop("run_id")  # a new run, with its own storage prefix
    assert a == b
    prov = json.loads((rerun / "provenance.json").read_text())
    assert prov["recipe"] == "quickstart" and prov["recipe_hash"] and prov["config_hash"]
    assert prov["config_hash"] == json.loads((finished_run / "provenance.json").read_text())["config_hash"]


@pytest.mark.slow
def test_edited_locked_recipe_is_refused(finished_run, tmp_path, capsys):
    lock = tmp_path / "frozen.lock.yaml"
    assert cli.main(["recipes", "lock", str(finished_run), "--out", str(lock)]) == 0
    lock.write_text(lock.read_text().replace("lr: 0.002", "lr: 0.004"))
    assert cli.main(["validate", str(lock)]) == 1
    err = capsys.readouterr().err
    assert "locked recipe content does not match its hash" in err and str(lock) in err
    assert cli.main(["run", str(lock), f"hydra.run.dir={tmp_path / 'r'}"]) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_locked_recipe_from_another_major_version_needs_consent(finished_run, tmp_path, capsys,
                                                                 monkeypatch):
    lock = tmp_path / "frozen.lock.yaml"
    assert cli.main(["recipes", "lock", str(finished_run), "--out", str(lock)]) == 0
    from llmops import __version__

    other = f"{int(__version__.split('.')[0]) + 1}.0.0"
    lock.write_text(lock.read_text().replace(f'"llmops_version": "{__version__}"',
                                             f'"llmops_version": "{other}"'))
    assert cli.main(["validate", str(lock)]) == 1
    assert f"locked with llmops {other}" in capsys.readouterr().err
    monkeypatch.setenv("LLMOPS_ALLOW_VERSION_MISMATCH", "1")
    assert cli.main(["validate", str(lock)]) == 0


def test_lock_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["recipes", "lock", str(tmp_path)]) == 1
    assert "not a run directory written by `llmops run`" in capsys.readouterr().err
