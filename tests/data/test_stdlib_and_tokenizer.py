"""The offline quickstart corpus (stdlib docstrings) and the byte-level BPE trained on it."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import pytest

from llmops import data


@pytest.fixture(scope="module")
def stdlib_docs():
    return data.stdlib_documents()


def test_stdlib_corpus_is_deterministic_and_imports_nothing(stdlib_docs):
    before = set(sys.modules)
    files = data.stdlib_files()
    assert data.stdlib_files() == files and len(set(files)) == len(files)  # a fixed order
    # other processes, the same documents in the same order (on a share of the files: parsing is slow)
    some = files[:: max(1, len(files) // 120)]
    assert data.stdlib_documents(num_proc=2, files=some) == data.stdlib_documents(num_proc=1, files=some)
    assert len(stdlib_docs) > 300 and sum(map(len, stdlib_docs)) > 500_000
    new = set(sys.modules) - before
    assert not {"antigravity", "turtle", "tkinter", "this", "idlelib"} & new, sorted(new)
    # module docstrings come first in each document, read from the source with ast
    import json as json_module

    # each docstring paragraph becomes one line (whitespace collapsed)
    first_paragraph = " ".join(json_module.__doc__.strip().split("\n\n")[0].split())
    assert any(d.startswith(first_paragraph + "\n") for d in stdlib_docs)
    assert all(d.strip() for d in stdlib_docs)


def test_held_out_documents_are_fixed_by_the_seed(stdlib_docs):
    train, val = data.holdout(stdlib_docs, 0.05, 42)
    assert len(val) == math.ceil(0.05 * len(stdlib_docs)) and len(train) + len(val) == len(stdlib_docs)
    assert not set(val) & set(train) or len(set(stdlib_docs)) < len(stdlib_docs)
    assert data.holdout(stdlib_docs, 0.05, 42) == (train, val)
    other_train, other_val = data.holdout(stdlib_docs, 0.05, 7)
    assert other_val != val and sorted(other_train + other_val) == sorted(stdlib_docs)
    # order within each split follows the corpus order
    pos = {id(d): i for i, d in enumerate(stdlib_docs)}
    assert [pos[id(d)] for d in val] == sorted(pos[id(d)] for d in val)


def test_trained_tokenizer_is_deterministic_and_loads_as_gpt2tokenizer(stdlib_docs, tmp_path):
    rows = stdlib_docs[:60]
    data.train_tokenizer(rows, 400, tmp_path / "a", 256)
    data.train_tokenizer(rows, 400, tmp_path / "b", 256)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    config = json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer"
    assert config["bos_token"] == config["eos_token"] == config["unk_token"] == "<|endoftext|>"
    assert config["model_max_length"] == 256

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert type(tok).__name__ == "GPT2Tokenizer" and len(tok) == 400
    assert tok.eos_token == "<|endoftext|>" and tok.convert_ids_to_tokens(tok.eos_token_id) == "<|endoftext|>"
    text = "The module provides functions for working with\n    indented text."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: lossless round trip
    # what a transformers 4.x image reads: vocab.json + merges.txt + tokenizer_config.json alone
    slow = tmp_path / "slow"
    slow.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tmp_path / "a" / name, slow / name)
    assert AutoTokenizer.from_pretrained(slow)(text)["input_ids"] == ids


@pytest.fixture(scope="module")
def quickstart_prepared(_base_cfgs, tmp_path_factory):
    import copy

    cfg = copy.deepcopy(_base_cfgs["quickstart"])
    cfg.paths.cache_dir = str(tmp_path_factory.mktemp("qs-cache"))
    return cfg, data.prepare(cfg)


def test_quickstart_prepare_trains_a_tokenizer_and_caps_blocks(quickstart_prepared, stdlib_docs):
    cfg, out = quickstart_prepared
    assert out.cache_hit is False
    assert out.blocks == {"train": 2048, "validation": 64}  # recipes/quickstart.yaml caps
    assert out.tokens == {"train": 2048 * 128, "validation": 64 * 128}
    train, val = data.holdout(stdlib_docs, 0.05, 42)
    assert out.rows == {"train": len(train), "validation": len(val)}
    assert out.vocab_size == 2048
    blocks = data.load_blocks(out.data_dir, "train")
    assert blocks.shape == (2048, 128) and int(blocks.max()) < 2048

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out.tokenizer_dir)
    assert json.loads((Path(out.tokenizer_dir) / "tokenizer_config.json").read_text())[
        "tokenizer_class"] == "GPT2Tokenizer"
    assert len(tok) == 2048 and tok.model_max_length == cfg.model.n_positions
    # the blocks are the training documents as AutoTokenizer(tokenizer_dir) encodes them
    ids = [i for doc in train[:20] for i in tok(doc)["input_ids"]]
    assert blocks[:8].ravel().tolist() == ids[:8 * 128]
    val_ids = [i for doc in val[:10] for i in tok(doc)["input_ids"]]
    assert data.load_blocks(out.data_dir, "validation")[:2].ravel().tolist() == val_ids[:256]

    # the trained tokenizer is cached by corpus + vocabulary
    trained = list((Path(cfg.paths.cache_dir) / "tokenizers").iterdir())
    assert len(trained) == 1


def test_quickstart_warm_rerun_is_fast(quickstart_prepared):
    import copy

    cfg, out = quickstart_prepared
    t0 = time.perf_counter()
    again = data.prepare(copy.deepcopy(cfg))
    assert time.perf_counter() - t0 < 1.0
    assert again.cache_hit is True and again.data_dir == out.data_dir
    # another seed holds out other documents: a different corpus, a different entry
    other = copy.deepcopy(cfg)
    other.seed = 7
    key_other, _ = data.fingerprint(other)
    assert key_other != out.fingerprint
