"""The exported config.json, as serving images read it: a real tiny GPT-2 saved by the export's
save_hf after training turned the KV cache off (gradient checkpointing does)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmops.training.export import save_hf

TOKENIZER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gpt2-tokenizer"


def test_config_says_torch_dtype_and_use_cache(tmp_path):
    if not TOKENIZER.is_dir():
        pytest.skip(f"{TOKENIZER} is absent: the GPT-2 tokenizer is needed")
    from transformers import AutoConfig, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64))
    model.config.use_cache = False  # as training leaves it (model.gradient_checkpointing=true)
    save_hf(model, AutoTokenizer.from_pretrained(str(TOKENIZER)), tmp_path / "hf")

    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32"  # transformers 4.x reads torch_dtype
    assert cfg["use_cache"] is True
    assert AutoConfig.from_pretrained(str(tmp_path / "hf")).use_cache is True
    loaded = GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf"))
    assert loaded.config.use_cache is True
