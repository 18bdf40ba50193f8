"""Every recipe and every config option composes; bad input is reported with key, file and expectation."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import pytest

from llmops.config import compose as c
from llmops.config.schema import GROUPS
from llmops.core.errors import ConfigError, LLMOpsError

# extra overrides an option needs to be complete (its ??? keys)
REQUIRED = {
    ("dataset", "wikitext2_files"): ["dataset.dir={shared}/wikitext-2-raw", "dataset.train_split=test"],
    ("dataset", "text_files"): ["dataset.train_files=[{file}]"],
    ("dataset", "json_files"): ["dataset.train_files=[{jsonl}]"],
    ("storage", "s3"): ["storage.bucket=models"],
    ("storage", "pvc"): ["storage.pvc_name=models", "storage.mount_path={tmp}"],
    ("storage", "oci"): ["storage.repository=127.0.0.1:5000/models/quickstart", "storage.plain_http=true"],
    ("cluster", "codeflare"): ["cluster.image=quay.io/modh/ray:2.58.0-py311-cu121"],
    ("cluster", "ray"): ["cluster.address=http://127.0.0.1:8265"],
}


def _options():
    out = []
    for group in GROUPS:
        for name in sorted(c.group_options(group)):
            out.append((group, name))
    return out


@pytest.mark.parametrize("name", [n for n, _ in c.list_recipes()])
def test_every_recipe_composes_and_validates(compose, name):
    cfg = compose(name)
    assert cfg.recipe == name
    assert cfg.run_id.startswith(cfg.run_name)


@pytest.mark.parametrize("group,option", _options())
def test_every_option_instantiates(compose, tmp_path, group, option):
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    if group == "dataset" and option == "wikitext2_files" and not shared.is_dir():
        pytest.skip("../shared/data is absent")
    f = tmp_path / "train.txt"
    f.write_text("hello world\n" * 10)
    j = tmp_path / "train.jsonl"
    j.write_text('{"text": "hello world"}\n' * 10)
    extra = [x.format(shared=shared, file=f, jsonl=j, tmp=tmp_path)
             for x in REQUIRED.get((group, option), [])]
    cfg = compose("quickstart", f"{group}={option}", *extra)
    assert set(cfg[group].keys()) == {f.name for f in dataclasses.fields(GROUPS[group])}
    # the option extends its group's schema: closed (an unknown key is refused) and typed
    with pytest.raises(ConfigError, match=f"unknown key '{group}.no_such_key'"):
        compose("quickstart", f"{group}={option}", *extra, f"{group}.no_such_key=1")
    with pytest.raises(ConfigError, match=f"{group}.kind"):
        compose("quickstart", f"{group}={option}", *extra, f"{group}.kind=[1,2]")


def test_gpt2_wikitext_is_the_2023_job(compose):
    cfg = compose("gpt2-wikitext")
    assert cfg.model.name_or_path == "gpt2"
    assert (cfg.dataset.name, cfg.dataset.config_name) == ("wikitext", "wikitext-2-raw-v1")
    t = cfg.training
    assert (t.epochs, t.per_device_train_batch_size, t.per_device_eval_batch_size) == (3, 2, 2)
    assert (t.lr, t.lr_scheduler.value, t.warmup_ratio, t.weight_decay) == (5e-5, "linear", 0.0, 0.0)
    assert (cfg.dataset.block_size, cfg.seed, t.precision.value) == (1024, 42, "fp32")
    assert cfg.dataset.group_by.value == "batch"


def test_overrides_change_values_and_struct_mode_rejects_new_keys(compose):
    cfg = compose("quickstart", "training.lr=3e-4", "cluster.num_workers=2")
    assert cfg.training.lr == 3e-4 and cfg.cluster.num_workers == 2
    with pytest.raises(ConfigError, match=r"unknown key 'training.foo'"):
        compose("quickstart", "+training.foo=1")


def _errors(compose, *overrides, recipe="quickstart") -> str:
    with pytest.raises(LLMOpsError) as ei:
        compose(recipe, *overrides)
    return str(ei.value)


def test_unknown_key_suggests_close_match(compose):
    msg = _errors(compose, "training.lrr=1e-4")
    assert "command line" in msg and "'training.lrr'" in msg and "did you mean 'training.lr'" in msg


def test_unknown_option_lists_options(compose):
    msg = _errors(compose, "model=gpt3")
    assert "model has no option 'gpt3'" in msg and "did you mean 'gpt2'" in msg and "gpt2_tiny" in msg


def test_wrong_type_names_key(compose):
    msg = _errors(compose, "training.epochs=three")
    assert "training.epochs" in msg and "could not be converted to Float" in msg


def test_all_range_errors_at_once_with_origin(compose):
    msg = _errors(compose, "training.per_device_train_batch_size=-2", "training.lora.dropout=1.5",
                  "serving.namespace=Bad_NS")
    assert "3 configuration errors" in msg
    assert "training.per_device_train_batch_size = -2 (from command line override" in msg
    assert "expected a positive integer" in msg
    assert "training.lora.dropout" in msg and "probability" in msg
    assert "not a DNS-1123 label" in msg


def test_error_names_recipe_file_it_came_from(compose, tmp_path):
    r = tmp_path / "bad.yaml"
    r.write_text("defaults:\n  - config\n  - override model: gpt2_tiny\n  - override dataset: stdlib_docs\n"
                 "  - _self_\ntraining:\n  per_device_train_batch_size: 0\n  lrr: 1\n")
    msg = _errors(compose, recipe=str(r))
    assert str(r) in msg and "unknown key 'training.lrr'" in msg
    r.write_text(r.read_text().replace("  lrr: 1\n", ""))
    msg = _errors(compose, recipe=str(r))
    assert f"(from recipe {r})" in msg and "per_device_train_batch_size = 0" in msg


def test_missing_recipe_lists_known_ones(compose):
    msg = _errors(compose, recipe="quikstart")
    assert "no recipe named 'quikstart'" in msg and "did you mean 'quickstart'" in msg


def test_recipe_that_is_not_yaml(compose, tmp_path):
    r = tmp_path / "broken.yaml"
    r.write_text("defaults: [config\ntraining: {lr: 1\n")
    msg = _errors(compose, recipe=str(r))
    assert str(r) in msg and "not valid YAML" in msg and "line" in msg
    r.write_text("- just\n- a list\n")
    assert "expected a YAML mapping" in _errors(compose, recipe=str(r))


def test_failing_interpolation_names_key(compose):
    msg = _errors(compose, "training.lr=${training.nope}")
    assert "training.lr" in msg and "interpolation failed" in msg


def test_dataset_path_that_does_not_exist(compose, tmp_path):
    msg = _errors(compose, "dataset=wikitext2_files", f"dataset.dir={tmp_path / 'nope'}")
    assert "dataset.dir" in msg and "existing folder" in msg


def test_block_size_larger_than_fresh_model_context(compose):
    msg = _errors(compose, "dataset.block_size=512", "model.n_positions=256")
    assert "dataset.block_size = 512" in msg and "n_positions (256)" in msg


def test_kubernetes_name_checked_before_anything_runs(compose):
    msg = _errors(compose, "serving.name=My_Model")
    assert "serving.name = 'My_Model'" in msg and "not a DNS-1035 label" in msg


def test_local_model_folder_must_exist(compose, tmp_path):
    msg = _errors(compose, f"model.name_or_path={tmp_path}/missing", "model.tokenizer=gpt2")
    assert "model.name_or_path" in msg and "existing local folder" in msg


def test_lint_and_range_errors_are_reported_together(compose):
    msg = _errors(compose, "model=gpt3", "training.lrr=2", "training.lr=-1", "dataset.block_size=0")
    assert "4 configuration errors" in msg
    assert "no option 'gpt3'" in msg and "unknown key 'training.lrr'" in msg
    assert "training.lr = -1.0" in msg and "dataset.block_size = 0" in msg


def test_run_reports_every_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from llmops import cli

    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "quickstart", "training.lrr=2", "training.per_device_train_batch_size=-2"])
    err = capsys.readouterr().err
    assert rc == 1 and "2 configuration errors" in err
    assert "training.lrr" in err and "per_device_train_batch_size = -2" in err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override,key", [
    ("run_id=../../x", "run_id"), ("run_id=..", "run_id"), ("run_id=/tmp/x", "run_id"),
    ("run_name=../up", "run_name"), ("run_name=a b", "run_name"), ("recipe=../r", "recipe"),
])
def test_names_that_would_leave_their_folder_are_refused(compose, override, key):
    msg = _errors(compose, override)
    assert f"{key} = '" in msg and "names the run's folder" in msg


def test_long_run_name_is_a_clear_error_not_file_name_too_long(tmp_path, monkeypatch, capsys):
    from llmops import cli

    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "quickstart", "run_name=" + "r" * 300, "stages=[prepare_data]"])
    err = capsys.readouterr().err
    assert rc == 1 and "run_name = 'rrrr" in err and "300 bytes; a file name is at most 255" in err
    assert "File name too long" not in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("name", ["a=b", "x,y"])
def test_a_recipe_file_name_is_data_not_override_grammar(tmp_path, monkeypatch, capsys, name):
    from llmops import cli

    r = tmp_path / f"{name}.yaml"
    r.write_text((c.find_recipe("quickstart")).read_text())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", f"./{name}.yaml", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert f"recipe: {name}\n" in out
    assert cli.main(["validate", f"{name}.yaml"]) == 0  # an existing file, even without ./
    assert f"{name}.yaml: ok" in capsys.readouterr().out


def test_a_recipe_file_name_that_cannot_name_a_folder_says_why(tmp_path, capsys):
    from llmops import cli

    r = tmp_path / "my recipe.yaml"
    r.write_text((c.find_recipe("quickstart")).read_text())
    assert cli.main(["validate", str(r)]) == 1
    err = capsys.readouterr().err
    assert f"recipe file {r}: its name becomes the recipe name" in err and "rename the file" in err


def test_recipe_with_only_defaults(tmp_path, capsys):
    from llmops import cli

    r = tmp_path / "only.yaml"
    r.write_text("defaults:\n")
    assert cli.main(["validate", str(r)]) == 1
    err = capsys.readouterr().err
    assert "'defaults' is empty or missing" in err and "unknown key ''" not in err
    r.write_text("defaults:\n  - config\n  - override dataset: stdlib_docs\n")
    assert cli.main(["validate", str(r)]) == 0


def test_run_dir_with_other_files_and_no_state_is_refused_untouched(tmp_path, monkeypatch, capsys):
    from llmops import cli

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "mine"
    d.mkdir()
    (d / "config.yaml").write_text("my own file\n")
    rc = cli.main(["run", "quickstart", f"hydra.run.dir={d}", "stages=[prepare_data]"])
    err = capsys.readouterr().err
    assert rc == 1 and f"hydra.run.dir: run directory {d} is not empty (config.yaml)" in err
    assert "no state.json" in err
    assert (d / "config.yaml").read_text() == "my own file\n" and sorted(p.name for p in d.iterdir()) == ["config.yaml"]


def test_engine_refuses_a_foreign_folder_as_a_backstop(compose, tmp_path):
    from llmops.pipeline import engine

    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("x")
    (d / "llmops.log").write_text("")  # what Hydra writes there first is fine
    with pytest.raises(LLMOpsError, match=r"is not empty \(todo.txt\)"):
        engine.open_run(compose("quickstart"), d)
    assert sorted(p.name for p in d.iterdir()) == ["llmops.log", "todo.txt"]
    (d / "todo.txt").unlink()
    assert engine.open_run(compose("quickstart"), d).run_dir == d.resolve()


def test_trainer_process_is_one_local_worker_without_restarts(compose):
    compose("quickstart", "cluster.trainer=process")  # the plain case composes and validates
    msg = _errors(compose, "cluster.trainer=process", "cluster.num_workers=2", "training.max_failures=1")
    assert "cluster.num_workers = 2" in msg and "1 with cluster.trainer=process" in msg
    assert "training.max_failures = 1" in msg and "restarts of a dead worker need trainer=ray" in msg
    msg = _errors(compose, "cluster=ray", "cluster.address=http://127.0.0.1:8265", "cluster.trainer=process")
    assert "cluster.trainer" in msg and "cluster=local only, not ray" in msg
    msg = _errors(compose, "cluster.trainer=thread")
    assert "cluster.trainer" in msg and "process" in msg and "ray" in msg
