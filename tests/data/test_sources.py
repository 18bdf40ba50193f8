"""text_files, json_files and hub (a local dataset folder, offline) sources; multi-process tokenizing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmops import data
from tests.data.conftest import made_rows, made_token_count


def _made(made_data) -> dict:
    return {"model.tokenizer": str(made_data["tokenizer"]), "model.train_tokenizer_vocab": 0}


@pytest.fixture(scope="module")
def wiki_rows():
    """3,800 WikiText-like rows (headings, blank rows, paragraphs), made here."""
    return made_rows(3800, seed=5)


def test_text_files_hold_out_eval_fraction_of_rows(cfg_of, tmp_path, made_data, wiki_rows):
    lines = [r.rstrip("\n") for r in wiki_rows[:1500]]
    f = tmp_path / "a.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(f)],
                                  "dataset.eval_fraction": 0.1, "dataset.group_by": "corpus",
                                  "dataset.block_size": 64, "dataset.max_train_blocks": None,
                                  "dataset.max_eval_blocks": None, **_made(made_data)})
    rows = data.load_rows(cfg)
    assert len(rows["validation"]) == 150 and len(rows["train"]) == 1350
    assert sorted(rows["train"] + rows["validation"]) == sorted(lines)
    out = data.prepare(cfg)
    assert out.rows == {"train": 1350, "validation": 150}
    assert out.blocks["train"] == made_token_count(made_data, rows["train"]) // 64
    assert out.blocks["validation"] == made_token_count(made_data, rows["validation"]) // 64


def test_json_files_with_eval_files_and_a_text_field(cfg_of, tmp_path, made_data, wiki_rows):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps({"body": r, "id": i}) + "\n" for i, r in enumerate(wiki_rows[:1000])))
    val.write_text(json.dumps([{"body": r} for r in wiki_rows[1000:1400]]))  # a JSON array works too
    cfg = cfg_of("quickstart", **{"dataset.source": "json_files", "dataset.train_files": [str(train)],
                                  "dataset.eval_files": [str(val)], "dataset.text_field": "body",
                                  "dataset.block_size": 128, "dataset.group_by": "batch",
                                  "dataset.map_batch_size": 1000, "dataset.max_train_blocks": None,
                                  "dataset.max_eval_blocks": None, **_made(made_data)})
    rows = data.load_rows(cfg)
    assert rows == {"train": wiki_rows[:1000], "validation": wiki_rows[1000:1400]}
    out = data.prepare(cfg)
    assert out.blocks["train"] == made_token_count(made_data, wiki_rows[:1000]) // 128  # one batch
    assert out.rows == {"train": 1000, "validation": 400}


def test_hub_source_loads_a_local_dataset_folder_with_load_dataset(cfg_of, tmp_path, made_data, wiki_rows):
    """The hub code path, offline: datasets.load_dataset(<folder>) infers splits from file names."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in wiki_rows[:900]))
    (folder / "validation.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in wiki_rows[900:1300]))
    cfg = cfg_of("wikitext", **{"dataset.source": "hub", "dataset.name": str(folder),
                                "dataset.config_name": None, "dataset.train_split": "train",
                                "dataset.eval_split": "validation", "dataset.block_size": 256,
                                **_made(made_data)})
    rows = data.load_rows(cfg)
    assert rows == {"train": wiki_rows[:900], "validation": wiki_rows[900:1300]}
    out = data.prepare(cfg)
    assert out.cache_hit is False and out.rows == {"train": 900, "validation": 400}
    assert data.prepare(cfg).cache_hit is True
    # the folder is hashed by content: a change is a new entry
    (folder / "validation.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in wiki_rows[900:1200]))
    assert data.prepare(cfg).cache_hit is False
    # no eval split in the dataset: eval_fraction of train is held out
    cfg.dataset.eval_split = "test"
    rows = data.load_rows(cfg)
    assert len(rows["validation"]) == round(0.05 * 900) and len(rows["train"]) == 900 - len(rows["validation"])


def test_num_proc_gives_the_same_tokens(made_data, wiki_rows):
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(made_data["tokenizer"])).backend_tokenizer
    splits = {"train": wiki_rows[:2500], "validation": wiki_rows[2500:]}
    one = data.tokenize(backend, splits, num_proc=1)
    import os

    env_before = os.environ.get("TOKENIZERS_PARALLELISM")
    two = data.tokenize(backend, splits, num_proc=2)
    assert os.environ.get("TOKENIZERS_PARALLELISM") == env_before  # this process keeps its threads
    for s in splits:
        np.testing.assert_array_equal(one[s][0], two[s][0])
        np.testing.assert_array_equal(one[s][1], two[s][1])
        assert len(one[s][1]) == len(splits[s])
