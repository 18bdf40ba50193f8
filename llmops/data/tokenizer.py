"""The tokenizer: where it comes from (a folder, the hub, or a byte-level BPE trained here), loading
it, training it, and the context limits it and the model impose on dataset.block_size."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Optional

from llmops.core.errors import LLMOpsError
from llmops.data.cache import atomic_dir
from llmops.data.common import cache_root, expand

log = logging.getLogger("llmops.data")

EOT = "<|endoftext|>"
# files of a model/tokenizer folder that are not tokenizer files (never hashed or copied)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx",
                   ".gguf", ".npz", ".npy", ".index.json", ".lock")
MAX_TOKENIZER_FILE = 64 * 1024 * 1024


def spec(cfg) -> dict:
    """Where the tokenizer comes from: {"kind": dir|hub|train, "ref", "key"}."""
    m = cfg.model
    for key, ref in (("model.tokenizer", m.tokenizer), ("model.name_or_path", m.name_or_path)):
        if ref:
            ref = str(ref)
            p = expand(ref)
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


def describe(cfg) -> str:
    """One line for the plan."""
    try:
        s = spec(cfg)
    except LLMOpsError as e:
        return f"error: {e}"
    if s["kind"] == "train":
        return f"train a byte-level BPE of {s['ref']} tokens on the training split"
    return f"{s['kind']}: {s['ref']}"


def tokenizer_files(folder: Path) -> list[Path]:
    """The tokenizer files of a tokenizer or model folder (no weights, nothing huge), sorted."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(WEIGHT_SUFFIXES) \
                and p.stat().st_size <= MAX_TOKENIZER_FILE:
            out.append(p)
    return out


def copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in tokenizer_files(src):
        shutil.copy2(p, dst / p.name)


def load_auto(s: dict, cfg):
    """The transformers fast tokenizer `s` names (a folder or a hub id)."""
    from transformers import AutoTokenizer

    kwargs = {"use_fast": True, "trust_remote_code": bool(cfg.model.trust_remote_code)}
    if s["kind"] == "hub" and s.get("revision"):
        kwargs["revision"] = s["revision"]
    try:
        tok = AutoTokenizer.from_pretrained(s["ref"], **kwargs)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = ("could not be loaded from the Hugging Face hub (is the network reachable? a local "
                 "folder such as ../shared/data/gpt2-tokenizer works offline)"
                 if s["kind"] == "hub" else "is not a tokenizer folder AutoTokenizer can load")
        raise LLMOpsError(f"{s['key']}={s['ref']!r} {where}: {type(e).__name__}: {first}") from None
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise LLMOpsError(f"{s['key']}={s['ref']!r}: no fast (Rust) tokenizer is available "
                          f"for it; llmops tokenizes with the fast tokenizer only")
    return tok


def model_max_length(tok) -> Optional[int]:
    mml = getattr(tok, "model_max_length", None)
    return int(mml) if isinstance(mml, int) and 0 < mml < 10 ** 9 else None


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


def trained_dir(cfg, key: str, train_rows: list[str]) -> Path:
    """The tokenizer trained for this corpus and vocabulary (`key`), from the cache or trained now."""
    final = cache_root(cfg) / "tokenizers" / key
    if (final / "tokenizer_config.json").is_file():
        return final
    vocab = int(cfg.model.train_tokenizer_vocab)
    t0 = time.time()

    def build(tmp: Path) -> None:
        train_tokenizer(train_rows, vocab, tmp, int(cfg.model.n_positions))

    atomic_dir(final, build)
    log.info("trained a %d-token byte-level BPE on %d rows in %.1f s", vocab, len(train_rows),
             time.time() - t0)
    return final


def context_limits(cfg, s: dict, mml: Optional[int]) -> list[tuple[str, int]]:
    """(what, max length) known for the tokenizer and the model."""
    limits = []
    if mml:
        limits.append((f"the tokenizer's model_max_length ({s['key']}={s['ref']!r})", int(mml)))
    m = cfg.model
    if m.name_or_path is None:
        limits.append(("model.n_positions, the fresh model's context", int(m.n_positions)))
    else:
        p = expand(m.name_or_path) / "config.json"
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


def check_context(cfg, s: dict, block_size: int, mml: Optional[int]) -> None:
    """dataset.block_size fits the tokenizer's and the model's context."""
    for what, limit in context_limits(cfg, s, mml):
        if block_size > limit:
            raise LLMOpsError(f"dataset.block_size={block_size} is larger than {what}: {limit}; "
                              f"set dataset.block_size <= {limit}")
