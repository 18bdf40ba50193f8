"""Input bounds (issue 14, point 6): a YAML file that expands too far, nests too deep or is too
large, and an override too long or too nested, are refused at once with the file or override
named, before Hydra reads them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmops import cli
from llmops.core.errors import LLMOpsError

HEAD = "defaults:\n  - config\n  - override dataset: stdlib_docs\n  - override model: gpt2_tiny\n  - _self_\n"


def billion_laughs(levels: int = 9) -> str:
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _validate(capsys, *args) -> tuple[int, str, float]:
    t0 = time.time()
    rc = cli.main(["validate", *args])
    return rc, capsys.readouterr().err, time.time() - t0


def test_billion_laughs_recipe_is_refused_in_seconds(tmp_path, capsys):
    r = tmp_path / "laughs.yaml"
    # under hydra: (which Hydra reads with its own YAML loader and OmegaConf expands)
    r.write_text(HEAD + "seed: 1\nhydra:\n" +
                 "".join(f"  {l}\n" for l in billion_laughs().splitlines()))
    rc, err, seconds = _validate(capsys, str(r))
    assert rc == 1 and str(r) in err and "billion laughs" in err and "at most 100,000" in err
    assert seconds < 5


def test_billion_laughs_option_file_on_the_recipe_path_is_refused(tmp_path, capsys, monkeypatch):
    team = tmp_path / "team"
    (team / "model").mkdir(parents=True)
    opt = team / "model" / "laughs.yaml"
    opt.write_text("defaults:\n  - _schema\n  - _self_\n" + billion_laughs())
    monkeypatch.setenv("LLMOPS_RECIPE_PATH", str(team))
    rc, err, seconds = _validate(capsys, "quickstart", "model=laughs")
    assert rc == 1 and str(opt) in err and "billion laughs" in err and seconds < 5
    # reached through a recipe's defaults list too
    r = team / "uses-laughs.yaml"
    r.write_text("defaults:\n  - config\n  - override model: laughs\n  - _self_\n")
    rc, err, seconds = _validate(capsys, "uses-laughs")
    assert rc == 1 and str(opt) in err and seconds < 5


def test_deep_nesting_large_file_and_recursive_alias_are_refused(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text(HEAD + "x: " + "[" * 200 + "]" * 200 + "\n")
    rc, err, _ = _validate(capsys, str(deep))
    assert rc == 1 and str(deep) in err and "nested more than 64 levels" in err
    big = tmp_path / "big.yaml"
    big.write_text(HEAD + "# " + "x" * (2 << 20) + "\n")
    rc, err, _ = _validate(capsys, str(big))
    assert rc == 1 and str(big) in err and "larger than 1,048,576 bytes" in err
    rec = tmp_path / "rec.yaml"
    rec.write_text(HEAD + "x: &a [1, *a]\n")
    rc, err, _ = _validate(capsys, str(rec))
    assert rc == 1 and str(rec) in err and "recursive" in err


@pytest.mark.parametrize("override,expected", [
    ("training.lr=" + "1" * 5000, "5,012 characters; an override is at most 4,096"),
    ("+training.x=" + "[" * 40 + "]" * 40, "nests brackets 40 deep; at most 16"),
    ("training.epochs=range(0,100000000)", "sweeps over more than 10,000 values"),
])
def test_override_bounds(capsys, override, expected):
    t0 = time.time()
    rc, err, _ = _validate(capsys, "quickstart", override)
    assert rc == 1 and "command line" in err and expected in err
    assert time.time() - t0 < 10


def test_bounded_loader_reads_ordinary_yaml_and_names_bad_files(tmp_path):
    from llmops.core.yamlio import load_yaml_file

    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {lr: 1.0e-3, epochs: 2}\ntraining:\n  <<: *b\n  epochs: 3\n")
    assert load_yaml_file(ok)["training"] == {"lr": 1e-3, "epochs": 3}
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(LLMOpsError, match=f"{bad}: not UTF-8"):
        load_yaml_file(bad)
