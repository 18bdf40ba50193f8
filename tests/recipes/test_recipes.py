"""`llmops recipes ls|show|cp|diff`, the recipe path (folders, search path, packages, S3), validate --all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops import cli
from tests.recipes.conftest import TEAM_PKG, run_cli

TEAM_RECIPE = """\
# A team's recipe: the quickstart with a different learning rate and the team's model option.
defaults:
  - config
  - override dataset: stdlib_docs
  - override model: team_small
  - _self_

dataset:
  block_size: 128   # the team's small model has a short context
training:
  lr: 3.0e-04       # the team's choice
"""

TEAM_MODEL = """\
defaults:
  - _schema
  - _self_

name_or_path: null
train_tokenizer_vocab: 512
n_layer: 1
n_head: 2
n_embd: 32
n_positions: 128
"""


def _team_folder(root: Path, name: str = "team-lr") -> Path:
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / f"{name}.yaml").write_text(TEAM_RECIPE)
    (root / "model" / "team_small.yaml").write_text(TEAM_MODEL)
    return root


def test_ls_lists_builtin_and_folder_recipes_with_their_source(recipe_env, tmp_path, monkeypatch, capsys):
    team = _team_folder(tmp_path / "team")
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", str(team))
    assert cli.main(["recipes", "ls"]) == 0
    out = capsys.readouterr().out
    rows = {l.split()[0]: l for l in out.splitlines()[1:]}
    assert "LLMOPS_RECIPE_PATH" in rows["team-lr"] and str(team / "team-lr.yaml") in rows["team-lr"]
    assert "built-in" in rows["quickstart"] and "built-in" in rows["gpt2-wikitext"]


def test_show_composes_a_folder_recipe_with_its_own_option_and_masks_secrets(recipe_env, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", str(_team_folder(tmp_path / "team")))
    rc = cli.main(["recipes", "show", "team-lr", "+cluster.headers.Authorization=Bearer-s3cr3t-value"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "model=team_small" in out  # the option from the team folder
    assert "lr: 0.0003" in out and "n_embd: 32" in out
    assert "s3cr3t" not in out and "Authorization: '***'" in out


def test_same_name_in_two_sources_reports_the_clash_and_the_first_wins(recipe_env, tmp_path, monkeypatch,
                                                                        capsys):
    team = _team_folder(tmp_path / "team", name="quickstart")  # shadows the built-in quickstart
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", str(team))
    assert cli.main(["recipes", "ls"]) == 0
    cap = capsys.readouterr()
    assert "recipe 'quickstart' is defined by 2 sources" in cap.err
    assert f"{team / 'quickstart.yaml'} (LLMOPS_RECIPE_PATH) wins over" in cap.err
    assert cli.main(["recipes", "show", "quickstart"]) == 0
    assert "lr: 0.0003" in capsys.readouterr().out  # the team's, not the built-in 1e-3


def test_hydra_searchpath_folder_is_a_recipe_source(recipe_env, tmp_path, capsys):
    team = _team_folder(tmp_path / "team")
    rc = cli.main(["validate", "team-lr", f"hydra.searchpath=[file://{team}]"])
    assert rc == 0, capsys.readouterr().err
    assert "team-lr: ok" in capsys.readouterr().out


def test_cp_copies_for_editing_and_never_overwrites(recipe_env, tmp_path, capsys):
    dest = tmp_path / "mine"
    dest.mkdir()
    assert cli.main(["recipes", "cp", "quickstart", str(dest)]) == 0
    copied = dest / "quickstart.yaml"
    from llmops.core.resources import recipes_dir

    assert copied.read_text() == (recipes_dir() / "quickstart.yaml").read_text()
    copied.write_text(copied.read_text() + "\n# edited\n")
    assert cli.main(["recipes", "cp", "quickstart", str(dest)]) == 1
    assert "exists; not overwriting" in capsys.readouterr().err
    assert copied.read_text().endswith("# edited\n")
    assert cli.main(["recipes", "cp", "quickstart", str(tmp_path / "x.txt")]) == 1
    assert "must end in .yaml" in capsys.readouterr().err


def test_diff_shows_every_changed_key_and_option(recipe_env, capsys):
    assert cli.main(["recipes", "diff", "quickstart", "gpt2-wikitext"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "quickstart", "->", "gpt2-wikitext"]
    table = {l.split()[0]: l.split(None, 1)[1] for l in lines[1:] if "(option)" not in l}
    assert table["training.lr"].split() == ["0.001", "->", "5e-05"]
    assert table["dataset.block_size"].split() == ["128", "->", "1024"]
    assert "training.method" not in table  # equal keys are not listed
    assert any(l.startswith("serving (option)") and '"vllm"' in l and '"caikit_tgis"' in l for l in lines)


def test_validate_all_checks_every_recipe_on_the_path(recipe_env, tmp_path, monkeypatch, capsys):
    team = _team_folder(tmp_path / "team")
    (team / "broken.yaml").write_text("defaults:\n  - config\n  - _self_\ntraining:\n  lrr: 1\n")
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", str(team))
    assert cli.main(["validate", "--all"]) == 1
    cap = capsys.readouterr()
    assert "team-lr: ok" in cap.out and "quickstart: ok" in cap.out
    assert "broken:" in cap.err and "unknown key 'training.lrr'" in cap.err


def test_recipes_command_imports_nothing_heavy(recipe_env):
    code = ("import sys; from llmops import cli; cli.main(['recipes','ls']); "
            "heavy=[m for m in ('torch','ray','transformers','datasets','boto3') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    import subprocess
    import sys

    from tests.recipes.conftest import ROOT

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


# ------------------------------------------------------------------------------- team package
def test_installed_team_package_exposes_recipes_and_options_automatically(recipe_env, tmp_path):
    """The package's SearchPathPlugin is found in the hydra_plugins namespace: no configuration."""
    env = {"PYTHONPATH": str(TEAM_PKG)}
    ls = run_cli("recipes", "ls", env=env)
    assert ls.returncode == 0, ls.stderr
    row = next(l for l in ls.stdout.splitlines() if l.startswith("team-demo"))
    assert "package llmops-team-demo" in row
    show = run_cli("recipes", "show", "team-demo", env=env)
    assert show.returncode == 0, show.stderr
    assert "model=team_tiny" in show.stdout and "n_embd: 32" in show.stdout
    # the package's option works from any recipe too
    val = run_cli("validate", "quickstart", "model=team_tiny", "dataset.block_size=64", env=env)
    assert val.returncode == 0, val.stderr
    # and without the package it is gone
    gone = run_cli("validate", "quickstart", "model=team_tiny")
    assert gone.returncode == 1 and "model has no option 'team_tiny'" in gone.stderr


# ---------------------------------------------------------------------------------------- S3
def _s3_client(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _objects(s3, bucket):
    return sorted((o["Key"], o["ETag"]) for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_prefix_is_a_read_only_recipe_source(recipe_env, s3_env, monkeypatch, capsys):
    s3 = _s3_client(s3_env)
    s3.create_bucket(Bucket="team-recipes")
    s3.put_object(Bucket="team-recipes", Key="recipes/team-s3.yaml", Body=TEAM_RECIPE.replace(
        "team_small", "s3_small").encode())
    s3.put_object(Bucket="team-recipes", Key="recipes/model/s3_small.yaml", Body=TEAM_MODEL.encode())
    before = _objects(s3, "team-recipes")
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", "s3://team-recipes/recipes/")
    assert cli.main(["recipes", "ls"]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("team-s3"))
    assert "LLMOPS_RECIPE_PATH (s3)" in row and "s3://team-recipes/recipes/team-s3.yaml" in row
    # composed by Hydra: the model option comes through the S3 config source plugin
    assert cli.main(["recipes", "show", "team-s3"]) == 0
    out = capsys.readouterr().out
    assert "model=s3_small" in out and "n_embd: 32" in out and "lr: 0.0003" in out
    assert _objects(s3, "team-recipes") == before  # read-only: nothing written


def test_unreachable_s3_source_is_a_clear_error(recipe_env, monkeypatch, capsys):
    from tests.recipes.conftest import _free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", "s3://nowhere/recipes/")
    assert cli.main(["recipes", "ls"]) == 1
    err = capsys.readouterr().err
    assert "recipe source s3://nowhere/recipes/ is unreachable" in err
    assert "AWS_ENDPOINT_URL" in err and "Traceback" not in err


def test_s3_source_with_a_missing_bucket_names_it(recipe_env, s3_env, monkeypatch, capsys):
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", "s3://no-such-bucket/recipes/")
    assert cli.main(["recipes", "show", "quickstart"]) == 1
    err = capsys.readouterr().err
    assert "s3://no-such-bucket/recipes/ is unreachable" in err and "NoSuchBucket" in err


def test_s3_recipe_and_option_over_the_yaml_bounds_are_refused_naming_the_object(recipe_env, s3_env,
                                                                                monkeypatch, capsys):
    import time

    from tests.security.test_input_bounds import billion_laughs

    s3 = _s3_client(s3_env)
    s3.create_bucket(Bucket="team-bounds")
    laughs = "defaults:\n  - _schema\n  - _self_\n" + billion_laughs()
    s3.put_object(Bucket="team-bounds", Key="recipes/model/laughs.yaml", Body=laughs.encode())
    s3.put_object(Bucket="team-bounds", Key="recipes/uses-laughs.yaml", Body=TEAM_RECIPE.replace(
        "team_small", "laughs").encode())
    s3.put_object(Bucket="team-bounds", Key="recipes/big.yaml", Body=b"# " + b"x" * (2 << 20))
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", "s3://team-bounds/recipes/")
    t0 = time.time()
    assert cli.main(["validate", "uses-laughs"]) == 1
    err = capsys.readouterr().err
    assert "s3://team-bounds/recipes/model/laughs.yaml" in err and "billion laughs" in err
    assert cli.main(["validate", "big"]) == 1
    err = capsys.readouterr().err
    assert "s3://team-bounds/recipes/big.yaml: larger than 1,048,576 bytes" in err
    assert time.time() - t0 < 10
