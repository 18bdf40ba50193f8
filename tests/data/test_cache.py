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
from llmops.data import tokenizer as data_tokenizer
from tests.conftest import ROOT
from tests.data.conftest import made_overrides, made_rows


def _small_corpus(tmp_path: Path) -> Path:
    """wiki.train.raw / wiki.valid.raw made of 1,200 made WikiText-like rows."""
    rows = made_rows(1200, seed=3)
    d = tmp_path / "wt"
    d.mkdir()
    (d / "wiki.train.raw").write_text("\n".join(rows[:800]), encoding="utf-8")
    (d / "wiki.valid.raw").write_text("\n".join(rows[800:1200]), encoding="utf-8")
    return d


def _overrides(tmp_path: Path, made_data: dict, *extra: str) -> list[str]:
    return ["dataset=wikitext2_files", f"dataset.dir={tmp_path / 'wt'}", "dataset.train_split=train",
            "dataset.eval_split=valid", "model.name_or_path=null",
            f"model.tokenizer={made_data['tokenizer']}", "dataset.block_size=256", *extra]


def _small(cfg_of, tmp_path: Path, made_data: dict, **extra):
    """The small corpus with the made tokenizer, block 256 (a copy of a once-composed config)."""
    return cfg_of("made", **{"dataset.dir": str(tmp_path / "wt"), "dataset.train_split": "train",
                             "dataset.eval_split": "valid", "dataset.block_size": 256,
                             "model.tokenizer": str(made_data["tokenizer"]), **extra})


def _with(cfg, **dataset):
    c = copy.deepcopy(cfg)
    for k, v in dataset.items():
        c.dataset[k] = v
    return c


def _meta(out: dict) -> dict:
    return json.loads((Path(out.data_dir) / "meta.json").read_text())


def test_rerun_hits_the_cache_and_a_changed_setting_or_file_misses(compose, tmp_path, made_data):
    _small_corpus(tmp_path)
    cfg = compose("gpt2-wikitext", *_overrides(tmp_path, made_data))  # composed as a user would
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


def test_a_changed_tokenizer_misses_the_cache(cfg_of, tmp_path, made_data):
    _small_corpus(tmp_path)
    first = data.prepare(_small(cfg_of, tmp_path, made_data))
    tok = tmp_path / "tok"
    shutil.copytree(made_data["tokenizer"], tok)
    for p in tok.iterdir():
        os.chmod(p, 0o644)
    cfg = _small(cfg_of, tmp_path, made_data, **{"model.tokenizer": str(tok)})
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


def test_interrupted_prepare_leaves_no_entry_that_looks_complete(cfg_of, tmp_path, made_data,
                                                                 monkeypatch):
    _small_corpus(tmp_path)
    cfg = _small(cfg_of, tmp_path, made_data)

    def boom(src, dst):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the entry was being written

    monkeypatch.setattr(data_tokenizer, "copy_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        data.prepare(cfg)
    assert _entries(tmp_path / "cache") == []  # neither a half entry nor a temporary folder
    monkeypatch.undo()
    out = data.prepare(cfg)
    assert out.cache_hit is False
    assert data.load_blocks(out.data_dir, "train").shape[0] == out.blocks["train"]


@pytest.mark.slow
def test_killed_prepare_process_is_redone_not_reused(cfg_of, tmp_path):
    """A prepare killed mid-write (SIGKILL: no clean-up) leaves only a temporary folder."""
    rows = made_rows(1500, seed=4)
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
from llmops.data import tokenizer
cfg = OmegaConf.create({json.dumps(_to_container(cfg_of("quickstart", **settings)))!r})
def die(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)
tokenizer.copy_tokenizer = die
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


def test_plan_imports_nothing_heavy_and_writes_nothing(tmp_path, made_data):
    cache = tmp_path / "cache"
    code = f"""
import sys, json
from llmops.config.compose import strip_hydra
from llmops.pipeline.checks import compose
from llmops import data
cfg, _ = compose("gpt2-wikitext", {made_overrides(made_data, cache)!r}, check=True)
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
    assert p["files"]["validation"] == [str(made_data["dir"].resolve() / "wiki.valid.raw")]
    assert p["cache_dir"] == str(cache / "data")
    assert not cache.exists()


def _bytes_read() -> int:
    """Bytes this process has read through read() calls (Linux /proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="counts reads with Linux's /proc/self/io")
def test_a_run_hashes_each_input_file_once(compose, tmp_path, made_data):
    """The engine fingerprints prepare_data twice (to reset and to run it) and prepare needs the
    cache key too: one run still reads the data file once, and a changed file is read again."""
    from llmops.data.keys import RACY_NS
    from llmops.pipeline import engine

    big = tmp_path / "big.txt"
    rows = made_rows(400, seed=6)
    big.write_text("".join(rows * (4_000_000 // sum(map(len, rows)) + 1)), encoding="utf-8")  # ~4 MB
    size = big.stat().st_size
    cfg = compose("quickstart", "dataset=text_files", f"dataset.train_files=[{big}]",
                  f"model.tokenizer={made_data['tokenizer']}", f"paths.cache_dir={tmp_path / 'cache'}",
                  "stages=[prepare_data]")
    assert data.prepare(copy.deepcopy(cfg)).cache_hit is False  # the blocks are cached: a run only hashes
    n_tokenizer_files = len(list(Path(made_data["tokenizer"]).iterdir()))
    # files changed less than RACY_NS ago are hashed every time (their next write could keep the
    # same timestamps): wait until the data and the tokenizer are older than that
    newest = max(p.stat().st_ctime_ns for p in [big, *Path(made_data["tokenizer"]).iterdir()])
    time.sleep(max(0.0, (newest + RACY_NS - time.time_ns()) / 1e9 + 0.05))
    data.FILE_HASHES.clear()

    before, stats = _bytes_read(), data.FILE_HASHES.stats()
    result = engine.run(copy.deepcopy(cfg), tmp_path / "run")
    read = _bytes_read() - before
    after = data.FILE_HASHES.stats()
    assert result.state.outputs("prepare_data").cache_hit is True
    assert size <= read < 1.5 * size, f"a run read {read / size:.2f} x the data file"
    assert after["files_read"] - stats["files_read"] == 1 + n_tokenizer_files
    assert after["memo_hits"] - stats["memo_hits"] >= 2 * (1 + n_tokenizer_files)

    # the same size, the old mtime, other bytes: the ctime moved, so the file is read again
    key = data.fingerprint(cfg)[0]
    st = big.stat()
    with open(big, "r+b") as f:
        f.write(b"Z")
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert big.stat().st_size == size and big.stat().st_mtime_ns == st.st_mtime_ns
    before = _bytes_read()
    assert data.fingerprint(cfg)[0] != key
    assert _bytes_read() - before >= size
