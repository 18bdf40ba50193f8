"""Load a dataset, tokenize it, group it into fixed blocks like HF run_clm, cache by content.

Public interface (used by the stage line and by training workers):

- ``plan(cfg)``: what ``prepare`` would do; no side effects, no heavy imports.
- ``prepare(cfg, ctx)``: load, tokenize, group, cache; returns the stage outputs
  (``blocks``, ``tokens``, ``cache_hit``, ``data_dir``, ``tokenizer_dir``, ...).
- ``load_blocks(data_dir, split)``: the blocks of a split as a memory-mapped int32 array
  ``[n_blocks, block_size]`` (labels = input_ids; the model shifts them).

Cache layout under ``paths.cache_dir`` (``~`` expanded)::

    data/<key>/train.npy, validation.npy   the blocks
    data/<key>/tokenizer/                  the tokenizer that produced them (AutoTokenizer loads it)
    data/<key>/meta.json                   outputs, fingerprints, settings (written last)
    tokenizers/<key>/                      byte-level BPE tokenizers trained on a corpus

``<key>`` is a fingerprint of the data content (file hashes; hub id, config and revision; the
stdlib files' names, sizes and mtimes), the tokenizer (hash of its files; hub id and revision; or
the corpus and vocabulary it is trained with) and every setting that changes the blocks. An entry
is built in a temporary folder and renamed into place, so an interrupted prepare never leaves an
entry that looks complete. A warm rerun hashes files and reads meta.json: no tokenizer, no
``datasets``, no ``transformers``.

Only the standard library is imported at module level; numpy, tokenizers, transformers and
datasets are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from llmops.core.errors import LLMOpsError
from llmops.run import DataOutputs

log = logging.getLogger("llmops.data")

CACHE_VERSION = 2  # bump when what a source yields changes (stdlib_docs: one line per paragraph)  # bump when the on-disk layout or the grouping changes
SPLITS = ("train", "validation")
EOT = "<|endoftext|>"
ENCODE_CHUNK = 20_000  # rows per encode_batch call (does not change the result)
# files of a model/tokenizer folder that are not tokenizer files (never hashed or copied)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx",
                    ".gguf", ".npz", ".npy", ".index.json", ".lock")
_MAX_TOKENIZER_FILE = 64 * 1024 * 1024


# ------------------------------------------------------------------------------------ config view
def _val(x: Any) -> Any:
    return getattr(x, "value", x)


def _source(cfg) -> str:
    return str(_val(cfg.dataset.source))


def _group_by(cfg) -> str:
    return str(_val(cfg.dataset.group_by))


def cache_root(cfg) -> Path:
    return Path(os.path.expanduser(str(cfg.paths.cache_dir))).resolve()


def _hash_obj(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _uses_holdout(cfg) -> bool:
    """Whether validation rows are held out of the training rows (eval_fraction, seed)."""
    src = _source(cfg)
    if src == "stdlib_docs":
        return True
    if src in ("text_files", "json_files"):
        return not list(cfg.dataset.eval_files or [])
    return False  # hub: decided at load time (only when the eval split is absent)


def _row_settings(cfg) -> dict:
    """Settings that change which text rows each split holds."""
    d = cfg.dataset
    src = _source(cfg)
    s: dict[str, Any] = {"source": src}
    if src in ("hub", "wikitext_raw"):
        s["splits"] = [str(d.train_split), str(d.eval_split)]
    if src in ("hub", "json_files"):
        s["text_field"] = str(d.text_field)
    if src == "hub" or _uses_holdout(cfg):
        s["eval_fraction"] = float(d.eval_fraction)
        s["seed"] = int(cfg.seed)
    return s


def _block_settings(cfg) -> dict:
    """Settings that change how the tokens are cut into blocks (not num_proc: same result)."""
    d = cfg.dataset
    return {"block_size": int(d.block_size), "group_by": _group_by(cfg),
            "map_batch_size": int(d.map_batch_size), "max_train_blocks": d.max_train_blocks,
            "max_eval_blocks": d.max_eval_blocks}


def _settings(cfg) -> dict:
    return {**_row_settings(cfg), **_block_settings(cfg)}


def _split_files(cfg) -> dict[str, list[str]]:
    """The files each split reads (absolute paths), for the file-based sources."""
    d = cfg.dataset
    src = _source(cfg)
    if src == "wikitext_raw":
        root = Path(os.path.expanduser(str(d.dir))) if d.dir else None
        if root is None:
            return {"train": [], "validation": []}
        return {"train": [str((root / f"wiki.{d.train_split}.raw").resolve())],
                "validation": [str((root / f"wiki.{d.eval_split}.raw").resolve())]}
    if src in ("text_files", "json_files"):
        return {"train": [str(Path(os.path.expanduser(str(f))).resolve()) for f in d.train_files or []],
                "validation": [str(Path(os.path.expanduser(str(f))).resolve()) for f in d.eval_files or []]}
    return {}


def _tokenizer_spec(cfg) -> dict:
    """Where the tokenizer comes from: {"kind": dir|hub|train, "ref", "key"}."""
    m = cfg.model
    for key, ref in (("model.tokenizer", m.tokenizer), ("model.name_or_path", m.name_or_path)):
        if ref:
            ref = str(ref)
            p = Path(os.path.expanduser(ref))
            if p.is_dir():
                return {"kind": "dir", "ref": str(p.resolve()), "key": key}
            if ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1:
                raise LLMOpsError(f"{key}={ref!r}: folder {p} does not exist (expected a local "
                                  f"tokenizer/model folder or an HF hub id such as 'gpt2')")
            return {"kind": "hub", "ref": ref, "key": key, "revision": m.revision}
    vocab = int(m.train_tokenizer_vocab or 0)
    if vocab > 0:
        return {"kind": "train", "ref": vocab, "key": "model.train_tokenizer_vocab"}
    raise LLMOpsError("model.tokenizer is null, model.name_or_path is null and "
                      "model.train_tokenizer_vocab is 0: set a tokenizer (HF id or folder) or a "
                      "vocabulary size to train one on the training split")


# ------------------------------------------------------------------------------------------- plan
def plan(cfg) -> dict:
    """What prepare would do. Reads nothing but the config (and whether paths exist)."""
    d = cfg.dataset
    src = _source(cfg)
    out: dict[str, Any] = {"source": src}
    if src == "hub":
        out["hub"] = {"name": d.name, "config_name": d.config_name, "revision": d.revision,
                      "splits": {"train": str(d.train_split), "validation": str(d.eval_split)}}
    elif src == "stdlib_docs":
        import sysconfig

        out["stdlib"] = sysconfig.get_paths()["stdlib"]
    else:
        out["files"] = _split_files(cfg)
    if _uses_holdout(cfg):
        out["validation"] = f"{float(d.eval_fraction):g} of the training rows, held out by seed {cfg.seed}"
    out.update({"block_size": int(d.block_size), "group_by": _group_by(cfg),
                "map_batch_size": int(d.map_batch_size), "num_proc": int(d.num_proc),
                "max_train_blocks": d.max_train_blocks, "max_eval_blocks": d.max_eval_blocks})
    try:
        spec = _tokenizer_spec(cfg)
        out["tokenizer"] = (f"train a byte-level BPE of {spec['ref']} tokens on the training split"
                            if spec["kind"] == "train" else f"{spec['kind']}: {spec['ref']}")
    except LLMOpsError as e:
        out["tokenizer"] = f"error: {e}"
    root = cache_root(cfg)
    out["cache_dir"] = str(root / "data")
    out["config_fingerprint"] = _hash_obj({"settings": _settings(cfg), "plan": out}, 16)
    return out


# ----------------------------------------------------------------------------------- fingerprints
def _stdlib_root() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"]).resolve()


# third-party code, tests, generated data (pydoc_data: a topics dump; encodings: codec tables)
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                     "lib2to3", "ensurepip", "turtledemo", "pydoc_data", "encodings"}


def _stdlib_files() -> list[Path]:
    """The standard library's .py files, in a fixed order (tests and third-party code excluded)."""
    root = _stdlib_root()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(x for x in dirnames if x not in _STDLIB_SKIP_DIRS and not x.startswith("."))
        for f in sorted(filenames):
            if f.endswith(".py"):
                files.append(Path(dirpath) / f)
    return files


def _data_fingerprint(cfg) -> dict:
    src = _source(cfg)
    d = cfg.dataset
    if src == "hub":
        local = Path(os.path.expanduser(str(d.name)))
        if local.is_dir():  # load_dataset(<folder>): a local dataset, hashed by content
            files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
            return {"hub_folder": {str(p.relative_to(local)): _hash_file(p) for p in files},
                    "config_name": d.config_name}
        return {"hub": d.name, "config_name": d.config_name, "revision": d.revision}
    if src == "stdlib_docs":
        root = _stdlib_root()
        h = hashlib.sha256()
        for p in _stdlib_files():
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"stdlib": str(root), "python": sys.version.split()[0], "files": h.hexdigest()[:20]}
    return {split: [_hash_file(Path(f)) for f in files] for split, files in _split_files(cfg).items()}


def _tokenizer_files(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_WEIGHT_SUFFIXES) \
                and p.stat().st_size <= _MAX_TOKENIZER_FILE:
            out.append(p)
    return out


def _tokenizer_fingerprint(spec: dict, data_fp: dict, cfg) -> dict:
    if spec["kind"] == "dir":
        folder = Path(spec["ref"])
        return {"dir": {p.name: _hash_file(p) for p in _tokenizer_files(folder)}}
    if spec["kind"] == "hub":
        return {"hub": spec["ref"], "revision": spec.get("revision")}
    return {"train": _trained_tokenizer_key(cfg, data_fp)}


def _trained_tokenizer_key(cfg, data_fp: dict) -> str:
    import importlib.metadata as md

    return _hash_obj({"v": CACHE_VERSION, "data": data_fp, "corpus": _row_settings(cfg),
                      "vocab": int(cfg.model.train_tokenizer_vocab),
                      "n_positions": int(cfg.model.n_positions),
                      "tokenizers": md.version("tokenizers")})


# --------------------------------------------------------------------------------------- reading
def parse_wikitext_raw(text: str) -> list[str]:
    """Split a wiki.<split>.raw file back into the Hugging Face wikitext rows.

    The file is ``"\\n".join(rows)`` where a blank row is ``""`` and a non-empty row ends in
    ``"\\n"``. At each position: if the next character is not ``"\\n"`` the row runs up to and
    including the next ``"\\n"``; otherwise the row is ``""``. After each row one ``"\\n"``
    separator is consumed; a separator is always followed by a row (possibly ``""`` at the end).
    """
    rows: list[str] = []
    i, n = 0, len(text)
    find = text.find
    append = rows.append
    while True:
        if i < n and text[i] != "\n":
            j = find("\n", i)
            if j < 0:
                append(text[i:])
                break
            append(text[i:j + 1])
            i = j + 1
        else:
            append("")
        if i >= n:
            break
        i += 1  # the separator
    return rows


def _read_text_rows(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _read_json_rows(path: Path, field: str) -> list[str]:
    """JSON lines (or one JSON array) of objects; `field` holds the text."""
    with open(path, encoding="utf-8") as f:
        body = f.read()
    stripped = body.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(body)
        except json.JSONDecodeError as e:
            raise LLMOpsError(f"dataset.train_files/eval_files: {path} is not valid JSON: {e}") from None
        items: Iterable = ((i + 1, r) for i, r in enumerate(records))
        where = "item"
    else:
        def _lines():
            for lineno, line in enumerate(body.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise LLMOpsError(f"dataset.train_files/eval_files: {path} line {lineno} is not "
                                      f"valid JSON ({e.msg}); expected one JSON object per line") from None
        items = _lines()
        where = "line"
    rows = []
    for no, rec in items:
        if not isinstance(rec, dict) or field not in rec:
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise LLMOpsError(f"dataset.text_field={field!r}: {path} {where} {no} has no {field!r} "
                              f"key (it has: {keys}); set dataset.text_field to the key holding the text")
        v = rec[field]
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise LLMOpsError(f"dataset.text_field={field!r}: {path} {where} {no}: {field!r} is a "
                              f"{type(v).__name__}, expected a string")
        rows.append(v)
    return rows


def _stdlib_doc(path: Path) -> str:
    """All docstrings of one module (module, classes, functions, in source order)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return ""
    parts: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            # one line per paragraph: docstrings wrap at ~72 columns, and a corpus made of those
            # line breaks teaches a tiny model that the likeliest next token is a newline
            paras = (" ".join(p.split()) for p in doc.strip().split("\n\n"))
            parts.append("\n".join(p for p in paras if p))
        body = [c for c in getattr(node, "body", [])
                if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        stack.extend(reversed(body))
    return "\n".join(parts) + "\n" if parts else ""


def stdlib_documents(num_proc: int = 1, files: Optional[list[Path]] = None) -> list[str]:
    """One document per standard-library module with a docstring, in a fixed order."""
    files = _stdlib_files() if files is None else files
    if num_proc > 1:
        with _pool(num_proc) as pool:
            docs = pool.map(_stdlib_doc, files, chunksize=16)
    else:
        docs = [_stdlib_doc(p) for p in files]
    return [d for d in docs if d]


def _holdout(rows: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split: ceil(fraction * n) rows chosen by `seed` go to validation (order kept)."""
    n = len(rows)
    if n < 2:
        return rows, []
    k = min(n - 1, max(1, int(round(fraction * n + 0.4999999))))
    held = set(random.Random(seed).sample(range(n), k))
    train = [r for i, r in enumerate(rows) if i not in held]
    val = [r for i, r in enumerate(rows) if i in held]
    return train, val


def _load_hub(cfg) -> dict[str, list[str]]:
    d = cfg.dataset
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise LLMOpsError(f"dataset.source=hub needs the `datasets` package: {e}") from None
    name = str(d.name)
    try:
        dd = datasets.load_dataset(name, d.config_name, revision=d.revision)
    except Exception as e:  # network, offline mode, missing dataset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LLMOpsError(
            f"dataset.name={name!r} (dataset.config_name={d.config_name!r}): could not load it from "
            f"the Hugging Face hub ({type(e).__name__}: {first}). If the hub is unreachable from "
            f"here, use local files instead, e.g. dataset=wikitext2_files "
            f"dataset.dir=<folder with wiki.<split>.raw> (or text_files / json_files)") from None
    field = str(d.text_field)
    split_names = list(dd.keys())
    if str(d.train_split) not in dd:
        raise LLMOpsError(f"dataset.train_split={str(d.train_split)!r}: {name} has splits {split_names}")
    train_ds = dd[str(d.train_split)]
    if field not in train_ds.column_names:
        raise LLMOpsError(f"dataset.text_field={field!r}: {name} has columns {train_ds.column_names}")
    train = list(train_ds[field])
    if str(d.eval_split) in dd:
        val = list(dd[str(d.eval_split)][field])
    else:
        log.info("%s has no split %r: holding out %g of %r", name, str(d.eval_split),
                 float(d.eval_fraction), str(d.train_split))
        train, val = _holdout(train, float(d.eval_fraction), int(cfg.seed))
    return {"train": [r or "" for r in train], "validation": [r or "" for r in val]}


def load_rows(cfg) -> dict[str, list[str]]:
    """The text rows of the train and validation splits (before tokenization)."""
    src = _source(cfg)
    d = cfg.dataset
    _check_inputs(cfg)
    if src == "hub":
        return _load_hub(cfg)
    if src == "stdlib_docs":
        docs = stdlib_documents(int(d.num_proc))
        train, val = _holdout(docs, float(d.eval_fraction), int(cfg.seed))
        return {"train": train, "validation": val}
    files = _split_files(cfg)
    out: dict[str, list[str]] = {}
    for split, paths in files.items():
        rows: list[str] = []
        for p in paths:
            if src == "wikitext_raw":
                with open(p, encoding="utf-8", newline="") as f:
                    rows.extend(parse_wikitext_raw(f.read()))
            elif src == "text_files":
                rows.extend(_read_text_rows(Path(p)))
            else:
                rows.extend(_read_json_rows(Path(p), str(d.text_field)))
        out[split] = rows
    if src in ("text_files", "json_files") and not files["validation"]:
        out["train"], out["validation"] = _holdout(out["train"], float(d.eval_fraction), int(cfg.seed))
    return out


def _check_inputs(cfg) -> None:
    """Bad paths, before anything is read."""
    src = _source(cfg)
    d = cfg.dataset
    if src == "hub":
        if not d.name:
            raise LLMOpsError("dataset.name is null: dataset.source=hub needs a hub dataset id, "
                              "e.g. wikitext")
        return
    if src == "wikitext_raw":
        if not d.dir:
            raise LLMOpsError("dataset.dir is not set: expected a folder holding wiki.<split>.raw files")
        root = Path(os.path.expanduser(str(d.dir)))
        if not root.is_dir():
            raise LLMOpsError(f"dataset.dir={str(d.dir)!r}: folder {root} does not exist (expected a "
                              f"folder holding wiki.<split>.raw files)")
        for key, split in (("dataset.train_split", d.train_split), ("dataset.eval_split", d.eval_split)):
            f = root / f"wiki.{split}.raw"
            if not f.is_file():
                have = sorted(p.name[5:-4] for p in root.glob("wiki.*.raw"))
                raise LLMOpsError(f"{key}={str(split)!r}: {f} does not exist; splits in {root}: "
                                  f"{have or 'none'}")
        return
    if src in ("text_files", "json_files"):
        if not list(d.train_files or []):
            raise LLMOpsError(f"dataset.train_files is empty: dataset.source={src} needs at least one file")
        for key, files in (("dataset.train_files", d.train_files), ("dataset.eval_files", d.eval_files)):
            for f in files or []:
                p = Path(os.path.expanduser(str(f)))
                if not p.is_file():
                    raise LLMOpsError(f"{key}: file {str(f)!r} does not exist")


# ------------------------------------------------------------------------------------- tokenizers
def _load_auto_tokenizer(spec: dict, cfg):
    from transformers import AutoTokenizer

    kwargs = {"use_fast": True, "trust_remote_code": bool(cfg.model.trust_remote_code)}
    if spec["kind"] == "hub" and spec.get("revision"):
        kwargs["revision"] = spec["revision"]
    try:
        tok = AutoTokenizer.from_pretrained(spec["ref"], **kwargs)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = ("could not be loaded from the Hugging Face hub (is the network reachable? a local "
                 "folder such as ../shared/data/gpt2-tokenizer works offline)"
                 if spec["kind"] == "hub" else "is not a tokenizer folder AutoTokenizer can load")
        raise LLMOpsError(f"{spec['key']}={spec['ref']!r} {where}: {type(e).__name__}: {first}") from None
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise LLMOpsError(f"{spec['key']}={spec['ref']!r}: no fast (Rust) tokenizer is available "
                          f"for it; llmops tokenizes with the fast tokenizer only")
    return tok


def train_tokenizer(rows: list[str], vocab_size: int, out_dir: Path, model_max_length: int) -> None:
    """Train a byte-level BPE (GPT-2 style) on `rows`; save a transformers tokenizer folder.

    The folder holds tokenizer.json (transformers 5, fast tokenizers), vocab.json + merges.txt
    (transformers 4.x slow GPT2Tokenizer) and a tokenizer_config.json naming GPT2Tokenizer,
    with <|endoftext|> as bos, eos and unk.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=2, show_progress=False,
                                  special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(rows, trainer=trainer, length=len(rows))
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    tok.model.save(str(out_dir))  # vocab.json + merges.txt
    eot_id = tok.token_to_id(EOT)
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": int(model_max_length),
        **special,
        "added_tokens_decoder": {str(eot_id): {"content": EOT, "lstrip": False, "normalized": False,
                                               "rstrip": False, "single_word": False, "special": True}},
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _trained_tokenizer_dir(cfg, data_fp: dict, train_rows: list[str]) -> Path:
    """The trained tokenizer for this corpus and vocabulary, from the cache or trained now."""
    key = _trained_tokenizer_key(cfg, data_fp)
    final = cache_root(cfg) / "tokenizers" / key
    if (final / "tokenizer_config.json").is_file():
        return final
    vocab = int(cfg.model.train_tokenizer_vocab)
    t0 = time.time()

    def build(tmp: Path) -> None:
        train_tokenizer(train_rows, vocab, tmp, int(cfg.model.n_positions))

    _atomic_dir(final, build)
    log.info("trained a %d-token byte-level BPE on %d rows in %.1f s", vocab, len(train_rows),
             time.time() - t0)
    return final


def _context_limits(cfg, spec: dict, model_max_length: Optional[int]) -> list[tuple[str, int]]:
    """(what, max length) known for the tokenizer and the model."""
    limits = []
    if model_max_length:
        limits.append((f"the tokenizer's model_max_length ({spec['key']}={spec['ref']!r})",
                       int(model_max_length)))
    m = cfg.model
    if m.name_or_path is None:
        limits.append(("model.n_positions, the fresh model's context", int(m.n_positions)))
    else:
        p = Path(os.path.expanduser(str(m.name_or_path))) / "config.json"
        if p.is_file():
            try:
                mc = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                mc = {}
            for k in ("n_positions", "max_position_embeddings", "n_ctx"):
                if isinstance(mc.get(k), int) and mc[k] > 0:
                    limits.append((f"the model's {k} (model.name_or_path={str(m.name_or_path)!r})", mc[k]))
                    break
    return limits


# ----------------------------------------------------------------------------------- tokenizing
_WORKER_TOK = None
_WORKER_ROWS: Optional[list[str]] = None


def _pool(n: int):
    import multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(n)


def _encode_rows(tok, rows: list[str]):
    """(flat int32 ids, int64 per-row lengths) for `rows`, no special tokens, no truncation."""
    import numpy as np
    from itertools import chain

    enc = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    id_parts = []
    len_parts = []
    for i in range(0, len(rows), ENCODE_CHUNK):
        encs = enc(rows[i:i + ENCODE_CHUNK], add_special_tokens=False)
        ids = [e.ids for e in encs]
        len_parts.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        id_parts.append(np.fromiter(chain.from_iterable(ids), dtype=np.int32))
    if not id_parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(id_parts), np.concatenate(len_parts)


def _worker_init(tok_json: str) -> None:
    global _WORKER_TOK
    from tokenizers import Tokenizer

    _WORKER_TOK = Tokenizer.from_str(tok_json)
    _WORKER_TOK.no_truncation()
    _WORKER_TOK.no_padding()


def _worker_encode(args):
    lo, hi, rows = args
    if rows is None:  # fork: the rows are inherited
        rows = _WORKER_ROWS[lo:hi]
    return _encode_rows(_WORKER_TOK, rows)


def tokenize(backend, splits: dict[str, list[str]], num_proc: int = 1) -> dict[str, tuple]:
    """Tokenize every split with the fast tokenizer `backend` (a tokenizers.Tokenizer).

    num_proc > 1 encodes contiguous shards in that many processes; the result is the same.
    """
    import numpy as np

    backend.no_truncation()
    backend.no_padding()
    out = {}
    total = sum(len(r) for r in splits.values())
    if num_proc <= 1 or total < 2 * num_proc:
        for name, rows in splits.items():
            out[name] = _encode_rows(backend, rows)
        return out
    global _WORKER_ROWS
    # one flat row list, cut into num_proc shards (of about equal characters)
    names = list(splits)
    flat: list[str] = []
    bounds = {}
    for name in names:
        bounds[name] = (len(flat), len(flat) + len(splits[name]))
        flat.extend(splits[name])
    sizes = np.fromiter((len(r) for r in flat), dtype=np.int64, count=len(flat))
    cum = np.cumsum(sizes)
    targets = cum[-1] * np.arange(1, num_proc) / num_proc if len(cum) else []
    cuts = [0] + sorted(set(int(x) for x in np.searchsorted(cum, targets))) + [len(flat)]
    cuts = sorted(set(cuts))
    import multiprocessing as mp

    fork = "fork" in mp.get_all_start_methods()
    _WORKER_ROWS = flat
    try:
        jobs = [(lo, hi, None if fork else flat[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
        with _pool_init(num_proc, backend.to_str()) as pool:
            parts = pool.map(_worker_encode, jobs, chunksize=1)
    finally:
        _WORKER_ROWS = None
    ids = np.concatenate([p[0] for p in parts])
    lens = np.concatenate([p[1] for p in parts])
    offs = np.concatenate([[0], np.cumsum(lens)])
    for name in names:
        lo, hi = bounds[name]
        out[name] = (ids[offs[lo]:offs[hi]], lens[lo:hi])
    return out


def _pool_init(n: int, tok_json: str):
    """n tokenizer processes, each single-threaded (n processes share the cores, not n x cores)."""
    import multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # inherited by the workers only
    try:
        return mp.get_context(method).Pool(n, initializer=_worker_init, initargs=(tok_json,))
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


# -------------------------------------------------------------------------------------- grouping
def group(ids, lengths, block_size: int, group_by: str, map_batch_size: int):
    """Blocks [n, block_size] from the flat ids and per-row lengths, like run_clm's group_texts.

    batch: the rows are taken map_batch_size at a time (as datasets.map(batched=True) does); each
    batch's tokens are concatenated and cut into blocks, and each batch's remainder is dropped.
    corpus: the whole split is concatenated and only one remainder is dropped.
    """
    import numpy as np

    ids = np.asarray(ids, dtype=np.int32)
    if group_by == "corpus":
        n = len(ids) // block_size
        return ids[: n * block_size].reshape(n, block_size)
    offs = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    starts = offs[0:-1:map_batch_size] if len(lengths) else np.zeros(0, np.int64)
    ends = offs[np.minimum(np.arange(map_batch_size, len(lengths) + map_batch_size, map_batch_size),
                           len(lengths))] if len(lengths) else np.zeros(0, np.int64)
    keep = ((ends - starts) // block_size) * block_size
    pieces = [ids[s:s + k] for s, k in zip(starts.tolist(), keep.tolist()) if k]
    if not pieces:
        return np.zeros((0, block_size), np.int32)
    return np.concatenate(pieces).reshape(-1, block_size)


# ----------------------------------------------------------------------------------------- cache
def _atomic_dir(final: Path, build) -> bool:
    """Build a folder in a temporary sibling and rename it to `final`. False if another won."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():  # a concurrent prepare finished first: keep its entry
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def _remove_stale_temps(final: Path) -> None:
    """Remove temporary folders for `final` left by a process that died (killed mid-write)."""
    for tmp in final.parent.glob(f".tmp-{final.name}-*"):
        try:
            pid = int(tmp.name[len(f".tmp-{final.name}-"):].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in _tokenizer_files(src):
        shutil.copy2(p, dst / p.name)


def _entry_complete(entry: Path) -> bool:
    return (entry / "meta.json").is_file() and all((entry / f"{s}.npy").is_file() for s in SPLITS) \
        and (entry / "tokenizer").is_dir()


def fingerprint(cfg) -> tuple[str, dict]:
    """(cache key of the blocks, its parts): data content, tokenizer, settings."""
    spec = _tokenizer_spec(cfg)
    data_fp = _data_fingerprint(cfg)
    tokens = {"v": CACHE_VERSION, "data": data_fp, "tokenizer": _tokenizer_fingerprint(spec, data_fp, cfg),
              "rows": _row_settings(cfg)}
    tokens_key = _hash_obj(tokens)
    parts = {**tokens, "tokens_key": tokens_key, "blocks": _block_settings(cfg)}
    return _hash_obj(parts), parts


def _outputs(meta: dict, entry: Path, cache_hit: bool) -> DataOutputs:
    return DataOutputs(blocks=dict(meta["blocks"]), tokens=dict(meta["tokens"]), cache_hit=cache_hit,
                       data_dir=str(entry), tokenizer_dir=str(entry / "tokenizer"),
                       block_size=meta["block_size"], group_by=meta["group_by"], rows=dict(meta["rows"]),
                       vocab_size=meta["vocab_size"], fingerprint=meta["key"], source=meta["source"])


def _tokens_complete(entry: Path) -> bool:
    return (entry / "meta.json").is_file() and (entry / "tokenizer").is_dir() and all(
        (entry / f"{s}.{k}.npy").is_file() for s in SPLITS for k in ("ids", "lens"))


def _check_context(cfg, spec: dict, block_size: int, model_max_length: Optional[int]) -> None:
    for what, limit in _context_limits(cfg, spec, model_max_length):
        if block_size > limit:
            raise LLMOpsError(f"dataset.block_size={block_size} is larger than {what}: {limit}; "
                              f"set dataset.block_size <= {limit}")


def _model_max_length(tok) -> Optional[int]:
    mml = getattr(tok, "model_max_length", None)
    return int(mml) if isinstance(mml, int) and 0 < mml < 10 ** 9 else None


def _tokenize_into_cache(cfg, parts: dict, spec: dict, t0: float) -> Path:
    """Read the rows, get the tokenizer, tokenize both splits; cache ids + per-row lengths."""
    import numpy as np

    entry = cache_root(cfg) / "tokens" / parts["tokens_key"]
    rows = load_rows(cfg)
    for split in SPLITS:
        if not any(rows[split]):
            raise LLMOpsError(_empty_message(cfg, split, len(rows[split])))
    t_rows = time.time()
    tok = None
    if spec["kind"] == "train":
        # built here with `tokenizers`: its own Rust tokenizer is used as is (no transformers
        # import in this process); the folder saved beside it loads with AutoTokenizer as
        # GPT2Tokenizer and encodes the same ids (tests/data/test_stdlib_and_tokenizer.py)
        from tokenizers import Tokenizer

        copy_from: Optional[Path] = _trained_tokenizer_dir(cfg, parts["data"], rows["train"])
        backend = Tokenizer.from_file(str(copy_from / "tokenizer.json"))
        tconf = json.loads((copy_from / "tokenizer_config.json").read_text())
        mml, vocab_size, tok_class = int(tconf["model_max_length"]), backend.get_vocab_size(), \
            tconf["tokenizer_class"]
    else:
        tok = _load_auto_tokenizer(spec, cfg)
        copy_from = Path(spec["ref"]) if spec["kind"] == "dir" else None
        backend, mml, vocab_size, tok_class = tok.backend_tokenizer, _model_max_length(tok), len(tok), \
            type(tok).__name__
    _check_context(cfg, spec, int(cfg.dataset.block_size), mml)  # before any tokenizing
    t_tok = time.time()
    encoded = tokenize(backend, {s: rows[s] for s in SPLITS}, int(cfg.dataset.num_proc))
    t_enc = time.time()
    meta = {"key": parts["tokens_key"], "rows": {s: len(rows[s]) for s in SPLITS},
            "tokens": {s: int(len(encoded[s][0])) for s in SPLITS}, "vocab_size": int(vocab_size),
            "model_max_length": mml, "tokenizer_class": tok_class,
            "fingerprint": {k: parts[k] for k in ("v", "data", "tokenizer", "rows")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": {"rows": round(t_rows - t0, 3), "tokenizer": round(t_tok - t_rows, 3),
                        "tokenize": round(t_enc - t_tok, 3)}}

    def build(tmp: Path) -> None:
        for s in SPLITS:
            ids, lens = encoded[s]
            np.save(tmp / f"{s}.ids.npy", np.ascontiguousarray(ids, dtype=np.int32))
            np.save(tmp / f"{s}.lens.npy", np.ascontiguousarray(lens, dtype=np.int64))
        if copy_from is not None:
            _copy_tokenizer(copy_from, tmp / "tokenizer")
        else:
            tok.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")

    _atomic_dir(entry, build)
    log.info("prepare_data: tokenized %s rows into %s tokens in %.1f s", meta["rows"], meta["tokens"],
             t_enc - t_tok)
    return entry


# --------------------------------------------------------------------------------------- prepare
def prepare(cfg, ctx=None) -> dict:
    """Load, tokenize and group the dataset; reuse the cache when the fingerprint matches.

    Two cache levels: ``tokens/<key>`` holds the token ids of each split (keyed by data content,
    tokenizer and row settings) and ``data/<key>`` the blocks (that key plus the block settings),
    so a change of block_size, group_by or caps regroups without tokenizing again.
    """
    t0 = time.time()
    _check_inputs(cfg)
    key, parts = fingerprint(cfg)
    entry = cache_root(cfg) / "data" / key
    spec = _tokenizer_spec(cfg)
    if _entry_complete(entry):
        meta = json.loads((entry / "meta.json").read_text())
        _check_context(cfg, spec, int(meta["block_size"]), meta.get("model_max_length"))
        log.info("prepare_data: cache hit %s (%.2f s)", entry, time.time() - t0)
        return _outputs(meta, entry, True)

    import numpy as np

    d = cfg.dataset
    block_size = int(d.block_size)
    group_by = _group_by(cfg)
    tentry = cache_root(cfg) / "tokens" / parts["tokens_key"]
    tokens_hit = _tokens_complete(tentry)
    if tokens_hit:
        tmeta = json.loads((tentry / "meta.json").read_text())
        _check_context(cfg, spec, block_size, tmeta.get("model_max_length"))
    else:
        tentry = _tokenize_into_cache(cfg, parts, spec, t0)
        tmeta = json.loads((tentry / "meta.json").read_text())

    blocks = {}
    for split in SPLITS:
        ids = np.load(tentry / f"{split}.ids.npy", mmap_mode="r")
        lens = np.load(tentry / f"{split}.lens.npy")
        b = group(ids, lens, block_size, group_by, int(d.map_batch_size))
        if len(b) == 0:
            raise LLMOpsError(_too_small_message(cfg, split, len(ids), block_size, group_by))
        cap = d.max_train_blocks if split == "train" else d.max_eval_blocks
        if cap is not None and len(b) > int(cap):
            b = b[: int(cap)]
        blocks[split] = b

    meta = {
        "key": key, "source": _source(cfg), "block_size": block_size, "group_by": group_by,
        "blocks": {s: int(len(blocks[s])) for s in SPLITS},
        "tokens": {s: int(blocks[s].size) for s in SPLITS},
        "tokens_before_grouping": dict(tmeta["tokens"]),
        "rows": dict(tmeta["rows"]),
        "vocab_size": tmeta["vocab_size"],
        "tokenizer_class": tmeta["tokenizer_class"],
        "model_max_length": tmeta.get("model_max_length"),
        "tokens_cache_hit": tokens_hit,
        "fingerprint": parts,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - t0, 3),
    }

    def build(tmp: Path) -> None:
        for s in SPLITS:
            np.save(tmp / f"{s}.npy", np.ascontiguousarray(blocks[s], dtype=np.int32))
        _copy_tokenizer(tentry / "tokenizer", tmp / "tokenizer")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")

    _atomic_dir(entry, build)
    if not _entry_complete(entry):  # pragma: no cover - a concurrent writer left garbage
        raise LLMOpsError(f"cache entry {entry} is incomplete; remove it and rerun")
    meta = json.loads((entry / "meta.json").read_text())
    log.info("prepare_data: %s blocks of %d in %.1f s -> %s", meta["blocks"], block_size,
             time.time() - t0, entry)
    return _outputs(meta, entry, False)


def _split_name(cfg, split: str) -> str:
    src = _source(cfg)
    d = cfg.dataset
    if src in ("wikitext_raw", "hub"):
        return f"{split} split ({'dataset.train_split' if split == 'train' else 'dataset.eval_split'}="
        f"{str(d.train_split if split == 'train' else d.eval_split)!r})"
    return f"{split} split"


def _empty_message(cfg, split: str, n_rows: int) -> str:
    src = _source(cfg)
    key = {"wikitext_raw": "dataset.dir", "hub": "dataset.name", "stdlib_docs": "dataset.source"}.get(
        src, "dataset.train_files" if split == "train" or _uses_holdout(cfg) else "dataset.eval_files")
    return (f"{key}: the {_split_name(cfg, split)} is empty ({n_rows} rows, no text); "
            f"expected text to tokenize")


def _too_small_message(cfg, split: str, n_tokens: int, block_size: int, group_by: str) -> str:
    msg = (f"dataset.block_size={block_size} but the {_split_name(cfg, split)} has only "
           f"{n_tokens} tokens")
    if n_tokens >= block_size and group_by == "batch":
        msg += (f", and no {int(cfg.dataset.map_batch_size)}-row batch holds a whole block "
                f"(dataset.group_by=batch drops each batch's remainder); use dataset.group_by=corpus, "
                f"a larger dataset.map_batch_size or a smaller dataset.block_size")
    else:
        msg += "; lower dataset.block_size or add data"
    return msg


# ----------------------------------------------------------------------------------------- load
def load_blocks(data_dir, split: str):
    """The blocks of `split` ("train" or "validation"): int32 [n_blocks, block_size], memory-mapped."""
    import numpy as np

    if split not in SPLITS:
        raise LLMOpsError(f"split {split!r}: expected one of {list(SPLITS)}")
    p = Path(data_dir) / f"{split}.npy"
    if not p.is_file():
        raise LLMOpsError(f"{p} does not exist: {data_dir} is not a prepared data folder "
                          f"(run the prepare_data stage)")
    return np.load(p, mmap_mode="r")
