"""A shared recipe is data: nothing it (or an override) names is imported and called unless it is
on llmops' allow-list, which only the person running llmops widens (issue 14, point 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops import cli

HEAD = """\
defaults:
  - config
  - override dataset: stdlib_docs
  - override model: gpt2_tiny
  - _self_
stages: [prepare_data]
dataset:
  block_size: 128   # the tiny model has 256 positions
"""


def _recipe(tmp_path: Path, body: str, name: str = "team") -> Path:
    r = tmp_path / f"{name}.yaml"
    r.write_text(HEAD + body)
    return r


def callback(marker: Path) -> str:
    return f"hydra:\n  callbacks:\n    evil:\n      _target_: pathlib.Path.touch\n      _args_: ['{marker}']\n"


def logging_handler(marker: Path, key: str) -> str:
    # dictConfig calls a handler's `()` factory, or its `class` with the other keys as kwargs
    return (f"hydra:\n  job_logging:\n    handlers:\n      evil:\n        '{key}': pathlib.Path.touch\n"
            f"        self: '{marker}'\n    root:\n      handlers: [evil]\n")


def _run(tmp_path, monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    rc = cli.main(list(args))
    return rc, capsys.readouterr().err


def test_recipe_callback_target_is_refused_and_never_called(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"
    r = _recipe(tmp_path, callback(marker))
    rc, err = _run(tmp_path, monkeypatch, capsys, "run", str(r), f"hydra.run.dir={tmp_path / 'run'}")
    assert rc == 1
    assert "hydra.callbacks.evil._target_ = 'pathlib.Path.touch'" in err and "allow-list" in err
    assert "--allow-target pathlib.Path.touch" in err
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["()", "class"])
def test_logging_handler_factory_or_class_is_refused(tmp_path, monkeypatch, capsys, key):
    marker = tmp_path / "marker"
    r = _recipe(tmp_path, logging_handler(marker, key))
    rc, err = _run(tmp_path, monkeypatch, capsys, "run", str(r), f"hydra.run.dir={tmp_path / 'run'}")
    assert rc == 1 and f"hydra.job_logging.handlers.evil.{key} = 'pathlib.Path.touch'" in err
    assert not marker.exists()


def test_logging_option_file_picked_by_override_is_refused(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"
    r = _recipe(tmp_path, "")
    (tmp_path / "hydra" / "job_logging").mkdir(parents=True)
    (tmp_path / "hydra" / "job_logging" / "team.yaml").write_text(
        f"version: 1\nhandlers:\n  evil:\n    (): pathlib.Path.touch\n    self: '{marker}'\n"
        "root:\n  handlers: [evil]\n")
    rc, err = _run(tmp_path, monkeypatch, capsys, "run", str(r), "hydra/job_logging=team",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert rc == 1 and "hydra.job_logging.handlers.evil.() = 'pathlib.Path.touch'" in err
    assert not marker.exists()


def test_override_and_sweep_cannot_add_a_target(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"
    r = _recipe(tmp_path, "")
    rc, err = _run(tmp_path, monkeypatch, capsys, "run", str(r), "+hydra.callbacks.x._target_=pathlib.Path.touch",
                   f"+hydra.callbacks.x._args_=['{marker}']", f"hydra.run.dir={tmp_path / 'run'}")
    assert rc == 1 and "hydra.callbacks.x._target_ = 'pathlib.Path.touch'" in err
    r2 = _recipe(tmp_path, callback(marker), name="team2")
    rc, err = _run(tmp_path, monkeypatch, capsys, "run", str(r2), "-m", "training.lr=1e-3,2e-3",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert rc == 1 and "hydra.callbacks.evil._target_" in err
    assert not marker.exists() and not (tmp_path / "sweep").exists()


def test_a_recipe_cannot_widen_the_list_but_the_command_line_can(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"
    # a recipe setting the environment variable for its job does not count
    r = _recipe(tmp_path, callback(marker) + "  job:\n    env_set:\n      LLMOPS_ALLOW_TARGETS: pathlib.Path.touch\n")
    monkeypatch.delenv("LLMOPS_ALLOW_TARGETS", raising=False)
    rc, err = _run(tmp_path, monkeypatch, capsys, "validate", str(r))
    assert rc == 1 and "hydra.callbacks.evil._target_" in err
    rc = cli.main(["validate", str(r), "--allow-target", "pathlib.Path.touch"])
    out = capsys.readouterr().out
    assert rc == 0 and "instantiates hydra.callbacks.evil._target_ = pathlib.Path.touch" in out
    assert cli.main(["validate", str(r)]) == 1  # the flag widened that command only
    capsys.readouterr()
    monkeypatch.setenv("LLMOPS_ALLOW_TARGETS", "pathlib.Path.touch")
    assert cli.main(["validate", str(r)]) == 0
    assert not marker.exists()  # validate never calls it


def test_builtin_recipes_sweeps_and_launchers_use_only_allowed_targets():
    from llmops.config import compose as c
    from llmops.config import targets

    c.check_targets(c.find_recipe("quickstart"), ["sweep=optuna_lr", "hydra/launcher=ray",
                                                  "training.epochs=1,2"])
    cfg, _ = c.compose("quickstart", ["sweep=optuna_lr", "hydra/launcher=ray"], check=False)
    found = {t.key: t.name for t in targets.find(cfg)}
    assert all(t.allowed for t in targets.find(cfg))
    assert found["hydra.launcher._target_"].endswith("llmops_ray_launcher.ray_launcher.RayLauncher")
    assert found["hydra.sweeper._target_"].endswith("ResumableOptunaSweeper")
    assert not any(k.startswith("hydra.sweeper.sampler") for k in found)  # a sampler is picked by name
    assert found["hydra.callbacks.llmops_sweep._target_"] == "llmops.hydra_app.SweepCallback"


def test_show_and_validate_list_the_hydra_section_and_every_target(tmp_path, capsys):
    marker = tmp_path / "marker"
    r = _recipe(tmp_path, callback(marker))
    assert cli.main(["recipes", "show", str(r)]) == 0
    out = capsys.readouterr().out
    assert "\nhydra:\n" in out and "_target_: pathlib.Path.touch" in out
    assert "#   hydra.callbacks.evil._target_ = pathlib.Path.touch  (NOT ALLOWED)" in out
    assert "#   hydra.job_logging.handlers.file.class = logging.FileHandler" in out
    assert cli.main(["validate", "--all"]) == 0
    out = capsys.readouterr().out
    assert "quickstart: ok\n  instantiates hydra.launcher._target_" in out
    assert "instantiates hydra.callbacks.llmops_sweep._target_ = llmops.hydra_app.SweepCallback" in out
    assert not marker.exists()


def test_a_recipe_cannot_add_a_package_to_the_search_path(tmp_path, monkeypatch, capsys):
    """Hydra imports a pkg:// search-path entry while composing: a recipe may not name one."""
    marker = tmp_path / "imported"
    mod = tmp_path / "evil_recipes"
    mod.mkdir()
    (mod / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = _recipe(tmp_path, "hydra:\n  searchpath: [pkg://evil_recipes]\n")
    rc, err = _run(tmp_path, monkeypatch, capsys, "validate", str(r))
    assert rc == 1 and "hydra.searchpath entry 'pkg://evil_recipes'" in err
    rc, err = _run(tmp_path, monkeypatch, capsys, "run", str(r))
    assert rc == 1 and "pkg://evil_recipes" in err
    assert not marker.exists()
    folder = tmp_path / "more"
    folder.mkdir()
    r2 = _recipe(tmp_path, f"hydra:\n  searchpath: [file://{folder}]\n", name="ok")
    rc, err = _run(tmp_path, monkeypatch, capsys, "validate", str(r2))
    assert rc == 0, err
