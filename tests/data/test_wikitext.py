"""WikiText-2 raw from local files: the HF rows, run_clm's block counts, state.json outputs."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from llmops import data
from tests.data.conftest import wikitext_overrides

# sizes from ../shared/data/SOURCES.md (the Hugging Face wikitext-2-raw-v1 rows)
ROWS = {"valid": 3760, "test": 4358}
GPT2_TOKENS = {"valid": 247_289, "test": 283_287}


def test_parse_recovers_the_hf_rows(shared_data):
    for split, n in ROWS.items():
        text = (shared_data / "wikitext-2-raw" / f"wiki.{split}.raw").read_text(encoding="utf-8")
        rows = data.parse_wikitext_raw(text)
        assert len(rows) == n
        assert "\n".join(rows) == text  # the file is exactly the rows joined by "\n"
        assert all(r == "" or r.endswith("\n") for r in rows)
        assert all("\n" not in r[:-1] for r in rows)  # one line per row
    valid = data.parse_wikitext_raw(
        (shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text(encoding="utf-8"))
    assert valid[:4] == ["", " = Homarus gammarus = \n", "", valid[3]]
    assert valid[3].startswith(" Homarus gammarus , known as the European lobster")
    # a line-based reader (datasets' "text" loader) gives other rows: parity needs this parse
    assert len(text.splitlines()) != ROWS["test"]


@pytest.mark.parametrize("rows", [
    [""], ["a\n"], ["", ""], ["a\n", ""], ["", "a\n", "", "", "b\n", ""], ["a\n", "b\n"],
    ["last row without newline"], ["", " = T = \n", "", " x y \n", "", "", " = = S = = \n", ""],
])
def test_parse_round_trips_the_layout(rows):
    assert data.parse_wikitext_raw("\n".join(rows)) == rows


def _group_texts_run_clm(batches, block_size):
    """run_clm.py's group_texts, applied to each map batch (lists of token lists)."""
    out = []
    for examples in batches:
        concatenated = sum(examples, [])
        total = (len(concatenated) // block_size) * block_size
        out.extend(concatenated[i:i + block_size] for i in range(0, total, block_size))
    return out


@pytest.mark.parametrize("block_size,batch", [(7, 3), (16, 1000), (5, 1), (64, 10)])
def test_group_by_batch_equals_run_clm_group_texts(block_size, batch):
    rng = random.Random(block_size * 1000 + batch)
    rows = [[rng.randrange(50_000) for _ in range(rng.choice([0, 0, 1, 3, 9, 40, 120]))]
            for _ in range(777)]
    ids = np.array([t for r in rows for t in r], dtype=np.int32)
    lens = np.array([len(r) for r in rows])
    got = data.group(ids, lens, block_size, "batch", batch)
    want = _group_texts_run_clm([rows[i:i + batch] for i in range(0, len(rows), batch)], block_size)
    assert got.shape == (len(want), block_size)
    assert got.tolist() == want
    packed = data.group(ids, lens, block_size, "corpus", batch)
    assert packed.shape == (len(ids) // block_size, block_size)
    assert packed.ravel().tolist() == ids[: packed.size].tolist()


def test_gpt2_block_counts_match_run_clm(wikitext_cache):
    """GPT-2 tokenizer, block 1024, group_by batch: validation 240 blocks, test 274."""
    cache, out = wikitext_cache
    assert out.blocks == {"train": 274, "validation": 240}
    assert out.tokens == {"train": 274 * 1024, "validation": 240 * 1024}
    assert out.cache_hit is False
    meta = json.loads((data.Path(out.data_dir) / "meta.json").read_text())
    assert meta["tokens_before_grouping"] == {"train": GPT2_TOKENS["test"], "validation": GPT2_TOKENS["valid"]}
    assert meta["rows"] == {"train": ROWS["test"], "validation": ROWS["valid"]}
    val = data.load_blocks(out.data_dir, "validation")
    assert isinstance(val, np.memmap) and val.shape == (240, 1024) and val.dtype == np.int32
    assert data.load_blocks(out.data_dir, "train").shape == (274, 1024)
    # the blocks are the tokenizer's ids: the first block decodes to the start of the split
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out.tokenizer_dir)
    assert tok.decode(val[0][:8].tolist()).startswith(" \n = Homarus gammarus =") or \
        tok.decode(val[0][:8].tolist()).startswith(" = Homarus gammarus =")
    assert tok("Hello world")["input_ids"] == [15496, 995]


def test_corpus_packing_drops_one_remainder(wikitext_cache, compose):
    cache, _ = wikitext_cache
    cfg = compose("gpt2-wikitext", *wikitext_overrides(cache, "dataset.group_by=corpus"))
    out = data.prepare(cfg)
    assert out.blocks == {"train": GPT2_TOKENS["test"] // 1024, "validation": GPT2_TOKENS["valid"] // 1024}
    assert out.blocks["validation"] > 240  # packing keeps what batch-wise dropping throws away


def test_caps_keep_the_first_blocks(wikitext_cache, compose):
    cache, full = wikitext_cache
    cfg = compose("gpt2-wikitext", *wikitext_overrides(cache, "dataset.max_train_blocks=10",
                                                       "dataset.max_eval_blocks=3"))
    out = data.prepare(cfg)
    assert out.blocks == {"train": 10, "validation": 3}
    assert out.data_dir != full.data_dir
    np.testing.assert_array_equal(data.load_blocks(out.data_dir, "train"),
                                  data.load_blocks(full.data_dir, "train")[:10])


def test_prepare_stage_writes_blocks_to_state_json(wikitext_cache, compose, tmp_path):
    from llmops.pipeline import engine

    cache, _ = wikitext_cache
    cfg = compose("gpt2-wikitext", *wikitext_overrides(cache, "stages=[prepare_data]"))
    result = engine.run(cfg, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    st = state["stages"]["prepare_data"]
    assert st["status"] == "done"
    assert st["outputs"]["blocks"] == {"train": 274, "validation": 240}
    assert st["outputs"]["cache_hit"] is True  # the session fixture prepared the same fingerprint
    assert result.state.outputs("prepare_data").tokens["validation"] == 240 * 1024


@pytest.mark.slow
def test_blocks_equal_datasets_map_run_clm_way(wikitext_cache, shared_data):
    """Same blocks, token for token, as datasets.map(tokenize) + datasets.map(group_texts)."""
    import datasets
    from transformers import AutoTokenizer

    cache, out = wikitext_cache
    tok = AutoTokenizer.from_pretrained(str(shared_data / "gpt2-tokenizer"))
    rows = data.parse_wikitext_raw((shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text())
    ds = datasets.Dataset.from_dict({"text": rows})
    tokd = ds.map(lambda ex: tok(ex["text"]), batched=True, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: sum(examples[k], []) for k in examples.keys()}
        total = (len(concatenated["input_ids"]) // 1024) * 1024
        return {k: [t[i:i + 1024] for i in range(0, total, 1024)] for k, t in concatenated.items()}

    lm = tokd.map(group_texts, batched=True)
    assert len(lm) == 240
    np.testing.assert_array_equal(np.array(lm["input_ids"], dtype=np.int32),
                                  data.load_blocks(out.data_dir, "validation"))


def test_a_cache_made_by_an_earlier_llmops_is_still_hit(cfg_of, shared_data):
    """The cache key of the WikiText-2 / GPT-2 job (it holds file hashes and settings, no paths) is
    the key llmops computed before the data package was split by source (commit 57c6665)."""
    assert data.fingerprint(cfg_of("wikitext"))[0] == "86ec26e7b683c1c9f501"
