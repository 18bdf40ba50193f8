"""Checks a type cannot express, run on the composed config before any stage. All at once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from llmops.errors import ConfigError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def dns1123_problem(value: str, max_len: int = 63) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return "expected a non-empty DNS-1123 name"
    if len(value) > max_len:
        return f"'{value}' is {len(value)} characters; at most {max_len} allowed"
    if not DNS1123_LABEL.match(value):
        return (
            f"'{value}' is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns1035_problem(value: str, max_len: int = 63) -> Optional[str]:
    p = dns1123_problem(value, max_len)
    if p:
        return p.replace("DNS-1123", "DNS-1035")
    if not DNS1035_LABEL.match(value):
        return f"'{value}' is not a DNS-1035 label: it must start with a lower-case letter"
    return None


def looks_local(ref: str) -> bool:
    """A model/tokenizer reference that names a folder rather than a hub id."""
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


class _Checker:
    def __init__(self, cfg: DictConfig, source: Any):
        self.cfg = cfg
        self.source = source
        self.problems: list[str] = []

    def get(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key, throw_on_resolution_failure=False)

    def add(self, key: str, message: str) -> None:
        origin = self.source.origin(key) if self.source is not None else "config"
        value = self.get(key)
        shown = value if not isinstance(value, str) else repr(value)
        self.problems.append(f"{key} = {shown} (from {origin}): {message}")

    def check(self, key: str, ok: Callable[[Any], bool], expected: str) -> None:
        v = self.get(key)
        if v is None:
            return
        try:
            good = ok(v)
        except Exception:
            good = False
        if not good:
            self.add(key, f"expected {expected}")


def _resolution_problems(cfg: DictConfig, source: Any) -> list[str]:
    """Every interpolation that fails to resolve, by key."""
    from llmops.config.compose import _flatten

    problems = []
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    for key, _ in _flatten(raw):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception as e:
            origin = source.origin(key) if source is not None else "config"
            msg = str(e).split("\n")[0]
            problems.append(f"{key} (from {origin}): interpolation failed: {msg}")
    return problems


def validate(cfg: DictConfig, source: Any = None) -> None:
    """Raise ConfigError listing every problem in the composed config."""
    problems = _resolution_problems(cfg, source)
    if problems:
        raise ConfigError(problems)
    c = _Checker(cfg, source)
    pos_int = (lambda v: isinstance(v, int) and v > 0, "a positive integer")
    nonneg_int = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    for key in [
        "cluster.num_workers", "cluster.cpus_per_worker", "dataset.block_size",
        "dataset.map_batch_size", "dataset.num_proc", "training.per_device_train_batch_size",
        "training.per_device_eval_batch_size", "training.gradient_accumulation_steps",
        "training.logging_steps", "training.eval_steps", "training.save_total_limit",
        "training.lora.r", "training.lora.alpha", "model.n_layer", "model.n_head", "model.n_embd",
        "model.n_positions", "serving.replicas", "smoke_test.max_new_tokens",
        "dataset.max_train_blocks", "dataset.max_eval_blocks",
    ]:
        c.check(key, *pos_int)
    for key in [
        "cluster.gpus_per_worker", "training.max_time_s", "training.dataloader_num_workers",
        "training.max_failures", "serving.gpus", "model.train_tokenizer_vocab",
        "smoke_test.retries", "serving.ready_timeout_s", "cluster.job_timeout_s",
    ]:
        c.check(key, *nonneg_int)
    c.check("training.lr", lambda v: v > 0, "a learning rate > 0")
    c.check("training.epochs", lambda v: v > 0 or c.get("training.max_steps") > 0,
            "epochs > 0 (or training.max_steps > 0)")
    c.check("training.max_steps", lambda v: v == -1 or v > 0, "-1 (use epochs) or a positive step count")
    c.check("training.warmup_ratio", lambda v: 0.0 <= v < 1.0, "a ratio in [0, 1)")
    c.check("training.weight_decay", lambda v: v >= 0, "a value >= 0")
    c.check("training.max_grad_norm", lambda v: v >= 0, "a value >= 0")
    c.check("training.lora.dropout", lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")
    c.check("training.lora.target_modules", lambda v: len(v) > 0, "at least one module name")
    c.check("dataset.eval_fraction", lambda v: 0.0 < v < 1.0, "a fraction in (0, 1)")
    c.check("model.train_tokenizer_vocab", lambda v: v == 0 or 260 <= v <= 1_000_000,
            "0 (no training) or a vocabulary size of at least 260 (256 bytes + specials)")

    stages = [str(s.value if hasattr(s, "value") else s) for s in c.get("stages")]
    if len(set(stages)) != len(stages):
        c.add("stages", "each stage at most once")
    if not stages:
        c.add("stages", "at least one stage")

    # model shape
    if c.get("model.name_or_path") is None:
        n_embd, n_head = c.get("model.n_embd"), c.get("model.n_head")
        if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0 and n_embd % n_head:
            c.add("model.n_embd", f"a multiple of model.n_head ({n_head})")
        n_pos, block = c.get("model.n_positions"), c.get("dataset.block_size")
        if isinstance(block, int) and isinstance(n_pos, int) and block > n_pos:
            c.add("dataset.block_size", f"at most model.n_positions ({n_pos}), the model's context")
        if c.get("model.tokenizer") is None and not c.get("model.train_tokenizer_vocab"):
            c.add("model.tokenizer", "a tokenizer (HF id or folder) or model.train_tokenizer_vocab > 0 "
                  "for a fresh model")
    for key in ("model.name_or_path", "model.tokenizer"):
        ref = c.get(key)
        if isinstance(ref, str) and ref.startswith(("/", "./", "../", "~")):
            if not Path(ref).expanduser().is_dir():
                c.add(key, "an existing local folder (or an HF hub id)")

    # ---- dataset (llmops.data) ----
    src = str(c.get("dataset.source").value if hasattr(c.get("dataset.source"), "value") else c.get("dataset.source"))
    if src == "hub" and not c.get("dataset.name"):
        c.add("dataset.name", "a hub dataset id for dataset.source=hub")
    if src == "wikitext_raw":
        d = c.get("dataset.dir")
        if not d or not Path(str(d)).expanduser().is_dir():
            c.add("dataset.dir", "an existing folder holding wiki.<split>.raw files")
        else:
            for split_key in ("dataset.train_split", "dataset.eval_split"):
                f = Path(str(d)).expanduser() / f"wiki.{c.get(split_key)}.raw"
                if not f.is_file():
                    c.add(split_key, f"a split whose file exists; {f} does not")
    if src in ("text_files", "json_files"):
        files = c.get("dataset.train_files") or []
        if not files:
            c.add("dataset.train_files", "at least one file")
        for key in ("dataset.train_files", "dataset.eval_files"):
            for f in c.get(key) or []:
                if not Path(str(f)).expanduser().is_file():
                    c.add(key, f"existing files; '{f}' does not exist")
    if src in ("hub", "json_files") and not str(c.get("dataset.text_field") or "").strip():
        c.add("dataset.text_field", "the name of the field that holds the text, e.g. text")
    # ---- end dataset ----

    # names that reach Kubernetes
    serving_kind = str(getattr(c.get("serving.kind"), "value", c.get("serving.kind")))
    if serving_kind != "none":
        for key in ("serving.namespace", "serving.name", "serving.runtime_name", "serving.secret_name"):
            v = c.get(key)
            if v is not None:
                p = dns1123_problem(v)
                if p:
                    c.add(key, p)
        if c.get("serving.name") is None:
            from llmops.names import k8s_name

            try:
                k8s_name(str(c.get("run_id")), 63)
            except ValueError as e:
                c.add("run_id", str(e))
        storage_kind = str(getattr(c.get("storage.kind"), "value", c.get("storage.kind")))
        if c.get("serving.apply") and storage_kind == "local":
            c.add("serving.apply", "storage=s3 or storage=pvc: KServe cannot read a model on local disk")
        fmt_ok = {"vllm": {"vLLM", "vllm"}, "caikit_tgis": {"caikit"}, "tgis": {"pytorch"},
                  "hf": {"huggingface"}}
        fmt = c.get("serving.model_format")
        if serving_kind in fmt_ok and fmt not in fmt_ok[serving_kind]:
            c.add("serving.model_format",
                  f"a model format the {serving_kind} runtime serves: {sorted(fmt_ok[serving_kind])}")
    if c.get("smoke_test.target") not in ("local", "endpoint"):
        c.add("smoke_test.target", "'local' or 'endpoint'")
    if c.get("smoke_test.target") == "endpoint" and not c.get("serving.apply"):
        c.add("smoke_test.target", "'local' unless serving.apply=true (there is no endpoint to call)")
    if c.problems:
        raise ConfigError(c.problems)
