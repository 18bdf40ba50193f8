"""Checks of the `model` and `training` config sections (what a type cannot express)."""

from __future__ import annotations

from pathlib import Path

from llmops.config.validate import Checker


def check(c: Checker) -> None:
    c.positive_ints("training.per_device_train_batch_size", "training.per_device_eval_batch_size",
                    "training.gradient_accumulation_steps", "training.logging_steps",
                    "training.eval_steps", "training.save_total_limit", "training.lora.r",
                    "training.lora.alpha", "model.n_layer", "model.n_head", "model.n_embd",
                    "model.n_positions")
    c.nonnegative_ints("training.max_time_s", "training.dataloader_num_workers",
                       "training.max_failures", "model.train_tokenizer_vocab")
    c.check("training.lr", lambda v: v > 0, "a learning rate > 0")
    c.check("training.epochs", lambda v: v > 0 or c.get("training.max_steps") > 0,
            "epochs > 0 (or training.max_steps > 0)")
    c.check("training.max_steps", lambda v: v == -1 or v > 0, "-1 (use epochs) or a positive step count")
    c.check("training.warmup_ratio", lambda v: 0.0 <= v < 1.0, "a ratio in [0, 1)")
    c.check("training.weight_decay", lambda v: v >= 0, "a value >= 0")
    c.check("training.max_grad_norm", lambda v: v >= 0, "a value >= 0")
    c.check("training.lora.dropout", lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")
    c.check("training.lora.target_modules", lambda v: len(v) > 0, "at least one module name")
    c.check("model.train_tokenizer_vocab", lambda v: v == 0 or 260 <= v <= 1_000_000,
            "0 (no training) or a vocabulary size of at least 260 (256 bytes + specials)")
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
