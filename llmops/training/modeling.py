"""Model and tokenizer from config: an HF id, a local folder, or a fresh GPT-2; PEFT LoRA.

Heavy imports (torch, transformers, peft) happen inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from llmops.core.errors import LLMOpsError


def _enum(v: Any) -> str:
    return str(getattr(v, "value", v))


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
            "auto": "auto"}[name]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise LLMOpsError(f"tokenizer '{path}' cannot be loaded: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _pretrained_errors(ref: str, e: Exception) -> LLMOpsError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    local = ref.startswith(("/", ".", "~")) or os.path.isdir(os.path.expanduser(ref))
    if local and not Path(ref).expanduser().is_dir():
        return LLMOpsError(f"model.name_or_path = '{ref}': no such folder")
    if local and not any(Path(ref).expanduser().glob("*.safetensors")) and not any(
            Path(ref).expanduser().glob("*.bin")):
        return LLMOpsError(f"model.name_or_path = '{ref}': the folder holds no weights "
                           f"(*.safetensors or *.bin): {msg}")
    if "Unrecognized configuration class" in msg or "does not appear to have" in msg or isinstance(e, ValueError):
        return LLMOpsError(f"model.name_or_path = '{ref}': not a causal language model transformers "
                           f"can load ({msg})")
    return LLMOpsError(f"model.name_or_path = '{ref}' cannot be loaded (no network for the hub? "
                       f"point it at a local folder): {msg}")


class ConfigUnavailable(LLMOpsError):
    """The model's config cannot be read here (a hub id without network)."""


def model_config(cfg: DictConfig, vocab_size: int, bos: int, eos: int):
    """The transformers config of the model to train (no weights touched)."""
    m = cfg.model
    if m.name_or_path is None:
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_positions=m.n_positions, n_embd=m.n_embd,
                          n_layer=m.n_layer, n_head=m.n_head, bos_token_id=bos, eos_token_id=eos)
    from transformers import AutoConfig

    ref = str(m.name_or_path)
    try:
        return AutoConfig.from_pretrained(ref, revision=m.revision,
                                          trust_remote_code=m.trust_remote_code)
    except OSError as e:
        if not (ref.startswith(("/", ".", "~")) or os.path.isdir(os.path.expanduser(ref))):
            raise ConfigUnavailable(f"model.name_or_path = '{ref}': config not reachable "
                                    f"({str(e).splitlines()[0]})") from None
        raise _pretrained_errors(ref, e) from None
    except ValueError as e:
        raise _pretrained_errors(ref, e) from None


def context_length(config) -> int | None:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def preflight(cfg: DictConfig, tokenizer) -> dict:
    """Checks that need the model's shape but not its weights (built on the meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model_config(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    ctx = context_length(config)
    block = int(cfg.dataset.block_size)
    if ctx is not None and block > ctx:
        raise LLMOpsError(f"dataset.block_size = {block} is larger than the model's context "
                          f"({ctx} positions): lower dataset.block_size to at most {ctx}")
    if _enum(cfg.training.method) == "lora":
        with torch.device("meta"):
            try:
                model = AutoModelForCausalLM.from_config(config)
            except ValueError as e:
                raise _pretrained_errors(str(cfg.model.name_or_path), e) from None
        leaf_names = {n.split(".")[-1] for n, _ in model.named_modules() if n}
        linear = sorted({n.split(".")[-1] for n, mod in model.named_modules()
                         if n and type(mod).__name__ in ("Linear", "Conv1D", "Embedding")})
        missing = [t for t in cfg.training.lora.target_modules if t not in leaf_names]
        if missing:
            raise LLMOpsError(f"training.lora.target_modules: {missing} not in the model; "
                              f"modules it has: {linear}")
    check_precision(cfg)
    return {"context_length": ctx, "vocab_size": config.vocab_size}


def check_precision(cfg: DictConfig) -> None:
    """bf16/fp16 only where the device has it; a clear error otherwise."""
    import torch

    prec = _enum(cfg.training.precision)
    gpu = int(cfg.cluster.gpus_per_worker) > 0
    if prec == "fp32":
        return
    if gpu:
        if _enum(cfg.cluster.kind) == "local":
            if not torch.cuda.is_available():
                raise LLMOpsError("cluster.gpus_per_worker > 0 but this machine has no CUDA GPU")
            if prec == "bf16" and not torch.cuda.is_bf16_supported():
                raise LLMOpsError("training.precision = bf16 but this GPU has no bf16: use fp16")
        return
    if prec == "fp16":
        raise LLMOpsError("training.precision = fp16 needs a GPU (cluster.gpus_per_worker > 0); "
                          "on a CPU use fp32 or bf16")
    if prec == "bf16" and not cpu_has_bf16():
        raise LLMOpsError("training.precision = bf16 but this CPU has no native bf16 "
                          "(no avx512_bf16/amx_bf16): use training.precision=fp32")


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16")) or os.uname().machine == "arm64"


def build_model(cfg: DictConfig, tokenizer):
    """The model to train: fresh (seeded) or pretrained; LoRA-wrapped when training.method=lora."""
    import torch
    from transformers import AutoModelForCausalLM

    m = cfg.model
    attn = _enum(m.attn_implementation)
    config = model_config(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    if m.name_or_path is None:
        torch.manual_seed(int(cfg.seed))
        config._attn_implementation = attn
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    else:
        dtype = torch_dtype(_enum(m.dtype))
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(m.name_or_path), revision=m.revision, trust_remote_code=m.trust_remote_code,
                dtype=dtype, attn_implementation=attn)
        except Exception as e:
            raise _pretrained_errors(str(m.name_or_path), e) from None
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if _enum(cfg.training.method) == "lora":
        model = wrap_lora(cfg, model)
    return model


def wrap_lora(cfg: DictConfig, model):
    from peft import LoraConfig, get_peft_model

    lc = cfg.training.lora
    fan_in_fan_out = getattr(model.config, "model_type", "") == "gpt2"  # GPT-2 uses Conv1D
    pc = LoraConfig(r=int(lc.r), lora_alpha=int(lc.alpha), lora_dropout=float(lc.dropout),
                    target_modules=list(lc.target_modules), task_type="CAUSAL_LM",
                    fan_in_fan_out=fan_in_fan_out)
    try:
        return get_peft_model(model, pc)
    except ValueError as e:
        raise LLMOpsError(f"training.lora.target_modules = {list(lc.target_modules)}: {e}") from None


def trainable_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
