"""The prepared-data cache: keyed by data content, tokenizer and settings; written atomically."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmops import data
from llmops.core.errors import LLMOpsError
from tests.conftest import ROOT
from tests.data.conftest import wikitext_overrides


def _small_corpus(tmp_path: Path, shared_data: Path) -> Path:
    """wiki.train.raw / wiki.valid.raw made of the first 1,200 rows of the validation split."""
    rows = data.parse_wikitext_raw((shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text())
    d = tmp_path / "wt"
    d.mkdir()
    (d / "wiki.train.raw").write_text("\n".join(rows[:800]), encoding="utf-8")
    (d / "wiki.valid.raw").write_text("\n".join(rows[800:1200]), encoding="utf-8")
    return d


def _overrides(tmp_path: Path, shared_data: Path, *extra: str) -> list[str]:
    return ["dataset=wikitext2_files", f"dataset.dir={tmp_path / 'wt'}", "dataset.train_split=train",
            "dataset.eval_split=valid", "model.name_or_path=null",
            f"model.tokenizer={shared_data / 'gpt2-tokenizer'}", "dataset.block_size=256", *extra]


def _small(cfg_of, tmp_path: Path, shared_data: Path, **extra):
    """The small corpus with the GPT-2 tokenizer, block 256 (a copy of a once-composed config)."""
    return cfg_of("wikitext", **{"dataset.dir": str(tmp_path / "wt"), "dataset.train_split": "train",
                                 "dataset.eval_split": "valid", "dataset.block_size": 256,
                                 "model.tokenizer": str(shared_data / "gpt2-tokenizer"), **extra})


def _with(cfg, **dataset):
    c = copy.deepcopy(cfg)
    for k, v in dataset.items():
        c.dataset[k] = v
    return c


def _meta(out: dict) -> dict:
    return json.loads((Path(out.data_dir) / "meta.json").read_text())


def test_rerun_hits_the_cache_and_a_changed_setting_or_file_misses(compose, tmp_path, shared_data):
    _small_corpus(tmp_path, shared_data)
    cfg = compose("gpt2-wikitext", *_overrides(tmp_path, shared_data))  # composed as a user would
    first = data.prepare(cfg)
    assert first.cache_hit is False and _meta(first)["tokens_cache_hit"] is False

    t0 = time.perf_counter()
    again = data.prepare(copy.deepcopy(cfg))
    warm_s = time.perf_counter() - t0
    assert again.cache_hit is True and again.data_dir == first.data_dir
    assert again.blocks == first.blocks
    assert warm_s < 1.0, f"warm rerun took {warm_s:.2f} s"

    # the number of processes does not change the blocks, so it does not change the key
    more_procs = data.prepare(_with(cfg, num_proc=2))
    assert more_procs.cache_hit is True and more_procs.data_dir == first.data_dir

    # each setting that changes the blocks makes a new entry, regrouped from the cached tokens
    seen = {first.data_dir}
    for change in ({"block_size": 128}, {"group_by": "corpus"}, {"map_batch_size": 100},
                   {"max_train_blocks": 5}):
        out = data.prepare(_with(cfg, **change))
        assert out.cache_hit is False, change
        assert _meta(out)["tokens_cache_hit"] is True, change
        assert out.data_dir not in seen, change
        seen.add(out.data_dir)
    assert data.prepare(_with(cfg, block_size=128)).blocks["train"] > first.blocks["train"]

    # a changed data file (same name) makes new tokens and new blocks
    train = tmp_path / "wt" / "wiki.train.raw"
    text = train.read_text(encoding="utf-8")
    train.write_text(text[: len(text) // 2], encoding="utf-8")
    changed = data.prepare(copy.deepcopy(cfg))
    assert changed.cache_hit is False and _meta(changed)["tokens_cache_hit"] is False
    assert changed.data_dir not in seen
    assert changed.blocks["train"] < first.blocks["train"]
    assert changed.blocks["validation"] == first.blocks["validation"]


def test_a_changed_tokenizer_misses_the_cache(cfg_of, tmp_path, shared_data):
    _small_corpus(tmp_path, shared_data)
    first = data.prepare(_small(cfg_of, tmp_path, shared_data))
    tok = tmp_path / "tok"
    shutil.copytree(shared_data / "gpt2-tokenizer", tok)
    for p in tok.iterdir():
        os.chmod(p, 0o644)
    cfg = _small(cfg_of, tmp_path, shared_data, **{"model.tokenizer": str(tok)})
    same = data.prepare(cfg)
    assert same.cache_hit is True  # the same files in another folder: same content, same entry
    cfg_path = tok / "tokenizer_config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"model_max_length": 1024', '"model_max_length": 1000'))
    other = data.prepare(copy.deepcopy(cfg))
    assert other.cache_hit is False and other.data_dir != first.data_dir
    assert _meta(other)["tokens_cache_hit"] is False
    saved = json.loads((Path(other.tokenizer_dir) / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 1000  # the tokenizer that was used travels with the blocks


def _entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for level in ("tokens", "data") if (cache / level).is_dir()
                  for p in (cache / level).iterdir())


def test_interrupted_prepare_leaves_no_entry_that_looks_complete(cfg_of, tmp_path, shared_data,
                                                                 monkeypatch):
    _small_corpus(tmp_path, shared_data)
    cfg = _small(cfg_of, tmp_path, shared_data)

    def boom(src, dst):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the entry was being written

    monkeypatch.setattr(data, "_copy_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        data.prepare(cfg)
    assert _entries(tmp_path / "cache") == []  # neither a half entry nor a temporary folder
    monkeypatch.undo()
    out = data.prepare(cfg)
    assert out.cache_hit is False
    assert data.load_blocks(out.data_dir, "train").shape[0] == out.blocks["train"]


@pytest.mark.slow
def test_killed_prepare_process_is_redone_not_reused(cfg_of, tmp_path, shared_data):
    """A prepare killed mid-write (SIGKILL: no clean-up) leaves only a temporary folder."""
    rows = data.parse_wikitext_raw((shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text())
    text = tmp_path / "a.txt"
    text.write_text("".join(rows[:1500]), encoding="utf-8")
    cache = tmp_path / "cache"
    # a tokenizer trained here: the child process needs no transformers import
    settings = {"dataset.source": "text_files", "dataset.train_files": [str(text)],
                "dataset.block_size": 64, "model.tokenizer": None, "model.train_tokenizer_vocab": 300}
    script = f"""
import os, signal
from omegaconf import OmegaConf
from llmops import data
cfg = OmegaConf.create({json.dumps(_to_container(cfg_of("quickstart", **settings)))!r})
def die(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)
data._copy_tokenizer = die
data.prepare(cfg)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = _entries(cache)
    assert left and all(Path(p).name.startswith(".tmp-") for p in left), left
    cfg = cfg_of("quickstart", **settings)
    key, _ = data.fingerprint(cfg)
    out = data.prepare(cfg)
    assert out.cache_hit is False and out.fingerprint == key
    assert not any(Path(p).name.startswith(".tmp-") for p in _entries(cache))  # dead writer's temp removed


def _to_container(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def test_load_blocks_rejects_a_folder_that_is_not_prepared(tmp_path):
    with pytest.raises(LLMOpsError, match="not a prepared data folder"):
        data.load_blocks(tmp_path, "train")
    with pytest.raises(LLMOpsError, match="expected one of"):
        data.load_blocks(tmp_path, "test")


def test_plan_imports_nothing_heavy_and_writes_nothing(tmp_path, shared_data):
    cache = tmp_path / "cache"
    code = f"""
import sys, json
from llmops.config.compose import strip_hydra
from llmops.pipeline.checks import compose
from llmops import data
cfg, _ = compose("gpt2-wikitext", {wikitext_overrides(cache)!r}, check=True)
p = data.plan(strip_hydra(cfg))
heavy = [m for m in ("numpy", "transformers", "datasets", "tokenizers", "torch") if m in sys.modules]
print(json.dumps({{"plan": p, "heavy": heavy}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    p = out["plan"]
    assert p["source"] == "wikitext_raw" and p["block_size"] == 1024 and p["group_by"] == "batch"
    assert p["files"]["validation"] == [str(shared_data.resolve() / "wikitext-2-raw" / "wiki.valid.raw")]
    assert p["cache_dir"] == str(cache / "data")
    assert not cache.exists()
