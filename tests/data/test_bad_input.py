"""Each bad dataset input ends in one clear error naming the key, before any tokenizing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops import data
from llmops.core.errors import ConfigError, LLMOpsError
from llmops.data import encode
from llmops.pipeline.checks import validate
from tests.data.conftest import made_token_count


@pytest.fixture
def no_tokenizing(monkeypatch):
    """Fail the test if anything gets as far as tokenizing."""
    def _tokenize(*a, **k):
        raise AssertionError("tokenized although the input was bad")

    monkeypatch.setattr(encode, "tokenize", _tokenize)


def _made(made_data: dict) -> dict:
    """The byte-level BPE the tests train (tests/data/conftest.py)."""
    return {"model.tokenizer": str(made_data["tokenizer"]), "model.train_tokenizer_vocab": 0}


def test_missing_dataset_dir_named_by_validate_and_prepare(cfg_of, tmp_path, no_tokenizing):
    cfg = cfg_of("made", **{"dataset.dir": str(tmp_path / "nope")})
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "dataset.dir" in str(e.value) and "wiki.<split>.raw" in str(e.value)
    with pytest.raises(LLMOpsError, match=r"dataset\.dir=.*nope.*does not exist"):
        data.prepare(cfg)


def test_compose_rejects_a_missing_dataset_dir(compose, tmp_path):
    with pytest.raises(ConfigError, match="dataset.dir"):
        compose("gpt2-wikitext", "dataset=wikitext2_files", f"dataset.dir={tmp_path / 'nope'}")


def test_missing_split_file(cfg_of, made_data, no_tokenizing):
    cfg = cfg_of("made", **{"dataset.dir": str(made_data["dir"]), "dataset.train_split": "train"})
    with pytest.raises(ConfigError, match="dataset.train_split"):
        validate(cfg)
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert "dataset.train_split='train'" in msg and "wiki.train.raw does not exist" in msg
    assert "['test', 'valid']" in msg  # the splits that are there


def test_missing_text_file(cfg_of, tmp_path, no_tokenizing):
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files",
                                  "dataset.train_files": [str(tmp_path / "x.txt")]})
    with pytest.raises(ConfigError, match="dataset.train_files"):
        validate(cfg)
    with pytest.raises(LLMOpsError, match=r"dataset.train_files: file .*x\.txt.* does not exist"):
        data.prepare(cfg)


def test_empty_dataset(cfg_of, tmp_path, made_data, no_tokenizing):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n")
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(empty)],
                                  **_made(made_data)})
    with pytest.raises(LLMOpsError, match=r"dataset.train_files: the train split is empty"):
        data.prepare(cfg)


def test_fewer_tokens_than_one_block(cfg_of, tmp_path, made_data):
    small = tmp_path / "small.txt"
    small.write_text("A few words of text.\nAnd a second line.\n" * 3)
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(small)],
                                  "dataset.eval_files": [str(small)], "dataset.block_size": 1024,
                                  "model.n_positions": 1024, **_made(made_data)})
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    n = made_token_count(made_data, small.read_text().splitlines())
    assert str(e.value).startswith(f"dataset.block_size=1024 but the train split has only {n} tokens")
    assert not (tmp_path / "cache" / "data").exists()  # no blocks entry was written


def test_batch_grouping_that_drops_everything_says_so(cfg_of, tmp_path, made_data):
    line = "one two three four five six seven eight nine ten"
    rows = tmp_path / "rows.txt"
    rows.write_text(f"{line}\n" * 40)
    per_row = made_token_count(made_data, [line])
    assert 4 <= per_row < 128
    cfg = cfg_of("quickstart", **{"dataset.source": "text_files", "dataset.train_files": [str(rows)],
                                  "dataset.eval_files": [str(rows)], "dataset.block_size": 128,
                                  "dataset.group_by": "batch",
                                  "dataset.map_batch_size": 127 // per_row,  # no batch holds a block
                                  **_made(made_data)})
    with pytest.raises(LLMOpsError, match="dataset.group_by=corpus"):
        data.prepare(cfg)
    cfg.dataset.group_by = "corpus"
    assert data.prepare(cfg).blocks["train"] == 40 * per_row // 128


def test_block_size_larger_than_the_tokenizer_context(cfg_of, no_tokenizing):
    cfg = cfg_of("made", **{"dataset.block_size": 2048, "model.n_positions": 4096})
    validate(cfg)  # the fresh model allows 4096: only the tokenizer knows its limit
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    assert str(e.value).startswith("dataset.block_size=2048 is larger than the tokenizer's "
                                   "model_max_length")
    assert "1024" in str(e.value)


def test_block_size_larger_than_a_local_models_context(cfg_of, tmp_path, no_tokenizing):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 256}))
    cfg = cfg_of("made", **{"model.name_or_path": str(model), "dataset.block_size": 512})
    with pytest.raises(LLMOpsError, match=r"dataset.block_size=512 is larger than the model's n_positions"):
        data.prepare(cfg)


def test_json_rows_without_the_text_field(cfg_of, tmp_path, made_data, no_tokenizing):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text key"}) + "\n")
    cfg = cfg_of("quickstart", **{"dataset.source": "json_files", "dataset.train_files": [str(f)],
                                  **_made(made_data)})
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert msg.startswith("dataset.text_field='text'") and "line 2" in msg and "['body']" in msg


def test_json_lines_that_are_not_json(cfg_of, tmp_path, made_data, no_tokenizing):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"text": "fine"}\n{"text": oops}\n')
    cfg = cfg_of("quickstart", **{"dataset.source": "json_files", "dataset.train_files": [str(f)],
                                  **_made(made_data)})
    with pytest.raises(LLMOpsError, match=r"line 2 is not valid JSON"):
        data.prepare(cfg)


def test_hub_unreachable_names_the_dataset_and_the_offline_option(cfg_of, no_tokenizing):
    # HF_DATASETS_OFFLINE=1 (tests/conftest.py): the hub cannot be reached, as on this machine
    cfg = cfg_of("made", **{"dataset.source": "hub", "dataset.name": "wikitext",
                                "dataset.config_name": "wikitext-2-raw-v1", "dataset.train_split": "train",
                                "dataset.eval_split": "validation"})
    validate(cfg)
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert msg.startswith("dataset.name='wikitext'") and "wikitext-2-raw-v1" in msg
    assert "unreachable" in msg and "dataset=wikitext2_files" in msg and "dataset.dir" in msg


def test_missing_local_tokenizer_folder(cfg_of, tmp_path, no_tokenizing):
    cfg = cfg_of("made", **{"model.tokenizer": str(tmp_path / "no-tok")})
    with pytest.raises(ConfigError, match="model.tokenizer"):
        validate(cfg)
    with pytest.raises(LLMOpsError, match=r"model.tokenizer=.*does not exist"):
        data.prepare(cfg)


def test_no_tokenizer_at_all(cfg_of, no_tokenizing):
    cfg = cfg_of("quickstart", **{"model.tokenizer": None, "model.train_tokenizer_vocab": 0})
    with pytest.raises(LLMOpsError, match=r"model.tokenizer is null.*model.train_tokenizer_vocab is 0"):
        data.prepare(cfg)


def test_unreachable_hub_tokenizer_names_the_key(cfg_of, no_tokenizing):
    # HF_HUB_OFFLINE=1 (tests/conftest.py): a hub id that is not cached cannot be fetched
    cfg = cfg_of("made", **{"model.tokenizer": None, "model.name_or_path": "llmops-tests/no-such-model"})
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert msg.startswith("model.name_or_path='llmops-tests/no-such-model' could not be loaded from the "
                          "Hugging Face hub")
    assert "../shared/data/gpt2-tokenizer" in msg


# ------------------------------------------------------------------ files that are not text
def _file_source(cfg_of, made_data, tmp_path: Path, source: str, body: bytes, **extra):
    """(cfg, the file holding `body`) for a text_files / json_files / wikitext_raw dataset."""
    if source == "wikitext_raw":
        folder = tmp_path / "wt"
        folder.mkdir()
        f = folder / "wiki.test.raw"
        f.write_bytes(body)
        (folder / "wiki.valid.raw").write_text(" = Fine = \n")
        return cfg_of("made", **{"dataset.dir": str(folder), **extra}), f
    f = tmp_path / ("rows.jsonl" if source == "json_files" else "rows.txt")
    f.write_bytes(body)
    return cfg_of("quickstart", **{"dataset.source": source, "dataset.train_files": [str(f)],
                                   **_made(made_data), **extra}), f


def _line(source: str, text: bytes) -> bytes:
    return b'{"text": "' + text + b'"}\n' if source == "json_files" else text + b"\n"


FILE_SOURCES = ["text_files", "json_files", "wikitext_raw"]


@pytest.mark.parametrize("source", FILE_SOURCES)
def test_a_byte_that_is_not_utf8_names_the_file_and_its_offset(cfg_of, made_data, tmp_path, source,
                                                                no_tokenizing):
    good = _line(source, "a fine first row, caf\u00e9".encode())
    cfg, f = _file_source(cfg_of, made_data, tmp_path, source,
                          good + _line(source, b"then a latin-1 caf\xe9 row"))
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    at = len(good) + (10 if source == "json_files" else 0) + len(b"then a latin-1 caf")
    assert str(f) in msg and f"byte offset {at}" in msg and "0xe9" in msg, msg
    assert "dataset.encoding" in msg and "utf-8" in msg


@pytest.mark.parametrize("source", FILE_SOURCES)
def test_a_binary_file_names_the_file_and_the_first_nul_byte(cfg_of, made_data, tmp_path, source,
                                                             no_tokenizing):
    cfg, f = _file_source(cfg_of, made_data, tmp_path, source,
                          _line(source, b"header row") + b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    at = len(_line(source, b"header row")) + 8
    assert str(f) in str(e.value) and f"NUL byte at byte offset {at}" in str(e.value)


def test_the_offset_is_exact_past_the_first_chunk_and_a_split_character_is_fine(cfg_of, made_data,
                                                                                tmp_path, no_tokenizing):
    from llmops.data.sources.read import CHUNK

    # a two-byte character across the first chunk boundary decodes; the bad byte lies far beyond
    head = b"x" * (CHUNK - 1) + "\u00e9".encode() + b"\n" + b"y" * 1000
    cfg, f = _file_source(cfg_of, made_data, tmp_path, "text_files", head + b"\xff\n")
    with pytest.raises(LLMOpsError, match=f"byte 0xff at byte offset {len(head)} "):
        data.prepare(cfg)


def test_dataset_encoding_reads_other_encodings_and_is_part_of_the_key(cfg_of, made_data, tmp_path):
    body = "caf\u00e9 au lait\nna\u00efve r\u00e9sum\u00e9\n".encode("latin-1")
    cfg, _ = _file_source(cfg_of, made_data, tmp_path, "text_files", body,
                          **{"dataset.encoding": "latin-1", "dataset.eval_files": []})
    rows = data.load_rows(cfg)
    assert sorted(rows["train"] + rows["validation"]) == ["caf\u00e9 au lait", "na\u00efve r\u00e9sum\u00e9"]
    utf8 = cfg_of("quickstart", **{"dataset.source": "text_files",
                                   "dataset.train_files": list(cfg.dataset.train_files), **_made(made_data)})
    assert data.fingerprint(cfg)[0] != data.fingerprint(utf8)[0]
    cfg.dataset.encoding = "no-such-codec"
    with pytest.raises(ConfigError, match=r"dataset.encoding"):
        validate(cfg)
    with pytest.raises(LLMOpsError, match=r"dataset.encoding='no-such-codec': not a text encoding"):
        data.prepare(cfg)


@pytest.mark.parametrize("as_array", [False, True])
def test_json_nested_too_deep_names_the_file_and_line(cfg_of, made_data, tmp_path, as_array,
                                                      no_tokenizing):
    deep = '{"text": "x", "meta": ' + "[" * 200_000 + "]" * 200_000 + "}"
    body = f'[{{"text": "fine"}},\n{deep}]' if as_array else f'{{"text": "fine"}}\n{deep}\n'
    cfg, f = _file_source(cfg_of, made_data, tmp_path, "json_files", body.encode())
    with pytest.raises(LLMOpsError) as e:
        data.prepare(cfg)
    msg = str(e.value)
    assert str(f) in msg and "too deep" in msg
    if not as_array:
        assert "line 2" in msg


def test_a_malformed_json_array_names_the_file_and_line(cfg_of, made_data, tmp_path, no_tokenizing):
    cfg, f = _file_source(cfg_of, made_data, tmp_path, "json_files",
                          b'[{"text": "one"},\n {"text": "two"},\n {"text": oops}]')
    with pytest.raises(LLMOpsError, match=rf"{f} is not valid JSON: .*line 3 column"):
        data.prepare(cfg)


def test_lines_split_in_chunks_are_the_lines_splitlines_gives(cfg_of, made_data, tmp_path, monkeypatch):
    from llmops.data.sources import read

    monkeypatch.setattr(read, "CHUNK", 7)  # boundaries (and "\r\n" halves) fall everywhere
    text = "caf\u00e9 one\r\ntwo\rthree\n\nfour\u2028five\x0cs\u00efx\r\n\r\n" * 5 + "last, no newline"
    cfg, _ = _file_source(cfg_of, made_data, tmp_path, "text_files", text.encode(),
                          **{"dataset.eval_files": [str(tmp_path / "rows.txt")]})
    assert data.load_rows(cfg)["train"] == text.splitlines()


@pytest.mark.parametrize("source", ["text_files", "json_files"])
def test_a_big_file_is_not_held_in_memory_besides_its_rows(cfg_of, made_data, tmp_path, source,
                                                           monkeypatch):
    """Reading holds the rows and about a chunk, not the whole text (and its bytes) next to them."""
    import tracemalloc

    from llmops.data.sources import read

    monkeypatch.setattr(read, "CHUNK", 1 << 16)  # a small chunk: a small file shows the difference
    line = _line(source, b"a row of plain text, about sixty bytes long " + b"x" * 16)
    body = line * (4_000_000 // len(line))  # 4 MB
    cfg, _ = _file_source(cfg_of, made_data, tmp_path, source, body,
                          **{"dataset.eval_files": []})
    tracemalloc.start()
    try:
        rows = data.load_rows(cfg)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows["train"]) + len(rows["validation"]) == body.count(b"\n")
    assert peak - retained < len(body) // 2, (peak - retained, len(body))  # before: 1x (text), 2.8x (json)
