"""Each bad dataset input ends in one clear error naming the key, before any tokenizing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops import data
from llmops.pipeline.checks import validate
from llmops.core.errors import ConfigError, LLMOpsError


@pytest.fixture
def no_tokenizing(monkeypatch):
    """Fail the test if anything gets as far as tokenizing."""
    def _tokenize(*a, **k):
        raise AssertionError("tokenized although the input was bad")

    monkeypatch.setattr(data, "tokenize", _tokenize)


def _gpt2(shared_data: Path) -> dict:
    return {"model.tokenizer": str(shared_data / "gpt2-tokenizer"), "model.train_tokenizer_vocab": 0}


def test_missing_dataset_dir_named_by_validate_and_prepare(cfg_of, tmp_path, shared_data, no_tokenizing):
    cfg = cfg_of("wikitext", **{"dataset.dir": str(tmp_path / "nope")})
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "dataset.dir" in str(e.value) and "wiki.<split>.raw" in str(e.value)
    with pytest.raises(LLMOpsError, match=r"dataset\.dir=.*nope.*does not exist"):
        data.prepare(cfg)


def test_compose_rejects_a_missing_dataset_dir(compose, tmp_path, shared_data):
    with pytest.raises(ConfigError, match="dataset.dir"):
        compose("gpt2-wikitext", "dataset=wikitext2_files", f"dataset.dir={tmp_path / 'nope'}")


def test_missing_split_file(cfg_of, shared_data, no_tokenizing):
    cfg = cfg_of("wikitext", **{"dataset.dir": str(shared_data / "wikitext-2-raw"),
                                "dataset.train_split": "train"})
    with pytest.raises(ConfigError, match="dataset.train_split"):
        validate(cfg)
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert "dataset.train_split='train'" in msg and "wiki.train.raw does not exist" in msg
    assert "['test', 'valid']" in msg  # the splits that are there


def test_missing_text_file(cfg_of, tmp_path, shared_data, no_tokenizing):
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files",
                                  "dataset.train_files": [str(tmp_path / "x.txt")]})
    with pytest.raises(ConfigError, match="dataset.train_files"):
        validate(cfg)
    with pytest.raises(LLMOpsError, match=r"dataset.train_files: file .*x\.txt.* does not exist"):
        data.prepare(cfg)


def test_empty_dataset(cfg_of, tmp_path, shared_data, no_tokenizing):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n")
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(empty)],
                                  **_gpt2(shared_data)})
    with pytest.raises(LLMOpsError, match=r"dataset.train_files: the train split is empty"):
        data.prepare(cfg)


def test_fewer_tokens_than_one_block(cfg_of, tmp_path, shared_data):
    small = tmp_path / "small.txt"
    small.write_text("A few words of text.\nAnd a second line.\n" * 3)
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(small)],
                                  "dataset.eval_files": [str(small)], "dataset.block_size": 1024,
                                  "model.n_positions": 1024, **_gpt2(shared_data)})
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    from tokenizers import Tokenizer

    gpt2 = Tokenizer.from_file(str(shared_data / "gpt2-tokenizer" / "tokenizer.json"))
    n = sum(len(gpt2.encode(r, add_special_tokens=False).ids) for r in small.read_text().splitlines())
    assert str(e.value).startswith(f"dataset.block_size=1024 but the train split has only {n} tokens")
    assert not (tmp_path / "cache" / "data").exists()  # no blocks entry was written


def test_batch_grouping_that_drops_everything_says_so(cfg_of, tmp_path, shared_data):
    rows = tmp_path / "rows.txt"
    rows.write_text("one two three four five six seven eight nine ten\n" * 40)  # 400 tokens
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(rows)],
                                  "dataset.eval_files": [str(rows)], "dataset.block_size": 128,
                                  "dataset.group_by": "batch", "dataset.map_batch_size": 10,
                                  **_gpt2(shared_data)})
    with pytest.raises(LLMOpsError, match="dataset.group_by=corpus"):
        data.prepare(cfg)
    cfg.dataset.group_by = "corpus"
    assert data.prepare(cfg).blocks["train"] == 400 // 128


def test_block_size_larger_than_the_tokenizer_context(cfg_of, shared_data, no_tokenizing):
    cfg = cfg_of("wikitext", **{"dataset.block_size": 2048, "model.n_positions": 4096})
    validate(cfg)  # the fresh model allows 4096: only the tokenizer knows its limit
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    assert str(e.value).startswith("dataset.block_size=2048 is larger than the tokenizer's "
                                   "model_max_length")
    assert "1024" in str(e.value)


def test_block_size_larger_than_a_local_models_context(cfg_of, tmp_path, shared_data, no_tokenizing):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 256}))
    cfg = cfg_of("wikitext", **{"model.name_or_path": str(model), "dataset.block_size": 512})
    with pytest.raises(LLMOpsError, match=r"dataset.block_size=512 is larger than the model's n_positions"):
        data.prepare(cfg)


def test_json_rows_without_the_text_field(cfg_of, tmp_path, shared_data, no_tokenizing):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text key"}) + "\n")
    cfg = cfg_of("quickstart", **{"dataset.source": "json_files", "dataset.train_files": [str(f)],
                                  **_gpt2(shared_data)})
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert msg.startswith("dataset.text_field='text'") and "line 2" in msg and "['body']" in msg


def test_json_lines_that_are_not_json(cfg_of, tmp_path, shared_data, no_tokenizing):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"text": "fine"}\n{"text": oops}\n')
    cfg = cfg_of("quickstart", **{"dataset.source": "json_files", "dataset.train_files": [str(f)],
                                  **_gpt2(shared_data)})
    with pytest.raises(LLMOpsError, match=r"line 2 is not valid JSON"):
        data.prepare(cfg)


def test_hub_unreachable_names_the_dataset_and_the_offline_option(cfg_of, no_tokenizing, shared_data):
    # HF_DATASETS_OFFLINE=1 (tests/conftest.py): the hub cannot be reached, as on this machine
    cfg = cfg_of("wikitext", **{"dataset.source": "hub", "dataset.name": "wikitext",
                                "dataset.config_name": "wikitext-2-raw-v1", "dataset.train_split": "train",
                                "dataset.eval_split": "validation"})
    validate(cfg)
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert msg.startswith("dataset.name='wikitext'") and "wikitext-2-raw-v1" in msg
    assert "unreachable" in msg and "dataset=wikitext2_files" in msg and "dataset.dir" in msg


def test_missing_local_tokenizer_folder(cfg_of, tmp_path, shared_data, no_tokenizing):
    cfg = cfg_of("wikitext", **{"model.tokenizer": str(tmp_path / "no-tok")})
    with pytest.raises(ConfigError, match="model.tokenizer"):
        validate(cfg)
    with pytest.raises(LLMOpsError, match=r"model.tokenizer=.*does not exist"):
        data.prepare(cfg)


def test_no_tokenizer_at_all(cfg_of, shared_data, no_tokenizing):
    cfg = cfg_of("quickstart", **{"model.tokenizer": None, "model.train_tokenizer_vocab": 0})
    with pytest.raises(LLMOpsError, match=r"model.tokenizer is null.*model.train_tokenizer_vocab is 0"):
        data.prepare(cfg)


def test_unreachable_hub_tokenizer_names_the_key(cfg_of, shared_data, no_tokenizing):
    # HF_HUB_OFFLINE=1 (tests/conftest.py): a hub id that is not cached cannot be fetched
    cfg = cfg_of("wikitext", **{"model.tokenizer": None, "model.name_or_path": "llmops-tests/no-such-model"})
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert msg.startswith("model.name_or_path='llmops-tests/no-such-model' could not be loaded from the "
                          "Hugging Face hub")
    assert "../shared/data/gpt2-tokenizer" in msg
