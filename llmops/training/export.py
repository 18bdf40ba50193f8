"""Export: the trained model as safetensors with its tokenizer (HF layout), the LoRA adapter when
asked, and the Caikit layout (config.yml + artifacts/) side by side under the run's prefix.

`save_trained` runs on the rank-0 training worker and writes every layout from there straight to
the configured store: the weights cross the network once, and never through the machine that
submitted the job. The `export` stage then verifies each stored layout against its manifest and
records the URIs the serving stage reads.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from llmops import storage
from llmops.core.errors import LLMOpsError
from llmops.storage.manifest import copy_files
from llmops.run import ExportOutputs, TrainOutputs

log = logging.getLogger("llmops")

PROVENANCE_FILE = "llmops-provenance.json"
CAIKIT_MODULE_ID = "f9181353-4ccf-4572-bd1e-f12bcda26792"
CAIKIT_MODULE_CLASS = "caikit_nlp.modules.text_generation.text_generation_local.TextGeneration"


def _enum(v: Any) -> str:
    return str(getattr(v, "value", v))


def fix_tokenizer_config(folder: Path, model_type: str) -> None:
    """Serving images run transformers 4.x: name a tokenizer class they know, and give its slow
    GPT2Tokenizer the vocab.json + merges.txt it reads (transformers 5 saves tokenizer.json only)."""
    p = folder / "tokenizer_config.json"
    if not p.is_file():
        return
    tc = json.loads(p.read_text())
    if model_type == "gpt2":
        tc["tokenizer_class"] = "GPT2Tokenizer"
        write_bpe_files(folder)
    p.write_text(json.dumps(tc, indent=2))


def write_bpe_files(folder: Path) -> None:
    """vocab.json and merges.txt from a byte-level BPE tokenizer.json, where they are missing."""
    tj = folder / "tokenizer.json"
    if not tj.is_file() or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        return
    model = json.loads(tj.read_text()).get("model", {})
    if model.get("type") != "BPE":
        return
    vocab = model["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def fix_model_config(folder: Path) -> None:
    """config.json as serving images read it: transformers 5 writes `dtype`, 4.x reads
    `torch_dtype`: say both; and `use_cache: true` (training turns the KV cache off, which makes
    every generated token recompute the whole prefix)."""
    p = folder / "config.json"
    if not p.is_file():
        return
    mc = json.loads(p.read_text())
    dtype = mc.get("dtype") or mc.get("torch_dtype")
    if dtype:
        mc["dtype"] = mc["torch_dtype"] = dtype
    mc["use_cache"] = True
    p.write_text(json.dumps(mc, indent=2, sort_keys=True) + "\n")


def save_hf(model, tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    fix_tokenizer_config(out, getattr(model.config, "model_type", ""))
    fix_model_config(out)


def save_trained(cfg: DictConfig, model, tokenizer, provenance: Optional[dict], run_id: str,
                 work: Path) -> dict:
    """On rank 0: merge LoRA, write the HF layout, the Caikit layout (and the adapter) and put each
    in the store. Returns {"model_uri", "caikit_uri"[, "adapter_uri"]}, each pinned where the store
    pins what it wrote (storage=oci: the image's digest, oci://REGISTRY/REPO@sha256:...)."""
    uris = storage.model_uris(cfg, run_id)
    store = storage.get_store(cfg)
    work = Path(work)
    out = {}
    model = getattr(model, "module", model)  # unwrap DDP
    if _enum(cfg.training.method) == "lora":
        if cfg.training.lora.keep_adapter:
            model.save_pretrained(str(work / "adapter"))
            tokenizer.save_pretrained(str(work / "adapter"))
            _write_provenance(work / "adapter", provenance)
            out["adapter_uri"] = _put(store, work / "adapter", uris["adapter"])
        model = model.merge_and_unload()
    save_hf(model, tokenizer, work / "hf")
    _write_provenance(work / "hf", provenance)
    out["model_uri"] = _put(store, work / "hf", uris["hf"])
    caikit = build_caikit(work / "hf", work / "caikit")
    _write_provenance(caikit, provenance)
    out["caikit_uri"] = _put(store, caikit, uris["caikit"])
    return out


def _put(store, local: Path, uri: str) -> str:
    """put_dir; the URI that pins what was stored."""
    return storage.pinned_uri(store.put_dir(local, uri), uri)


def _write_provenance(folder: Path, prov: Optional[dict]) -> None:
    if prov:
        (folder / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2, default=str))


def caikit_config(hf_dir: Path) -> str:
    """config.yml of the Caikit text-generation module (REFERENCE.md section 6)."""
    import yaml

    cfg = json.loads((hf_dir / "config.json").read_text())
    tc = {}
    if (hf_dir / "tokenizer_config.json").is_file():
        tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
    eos = tc.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    data = {
        "module_id": CAIKIT_MODULE_ID,
        "module_class": CAIKIT_MODULE_CLASS,
        "name": "Text Generation",
        "version": "0.1.0",
        "artifact_path": "artifacts",
        "eos_token": eos or "<|endoftext|>",
        "torch_dtype": str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"),
        "created": now,
        "saved": now,
        "tracking_id": str(uuid.uuid4()),
    }
    return yaml.safe_dump(data, sort_keys=False)


def build_caikit(hf_dir: Path, out: Path) -> Path:
    """out/config.yml + out/artifacts/<HF files>."""
    if out.exists():
        shutil.rmtree(out)
    copy_files(hf_dir, out / "artifacts")  # no link followed out of hf_dir; the manifest left out
    (out / "config.yml").write_text(caikit_config(hf_dir))
    return out


def plan(cfg: DictConfig, run_id: str) -> dict:
    uris = storage.model_uris(cfg, run_id)
    out = {"model_uri": uris["hf"], "caikit_uri": uris["caikit"],
           "writes": ["(from the rank-0 training worker) HF layout: config.json, model.safetensors, "
                      f"tokenizer files, {PROVENANCE_FILE}, {storage.MANIFEST} (last)",
                      "(from the rank-0 training worker) Caikit layout: config.yml + artifacts/",
                      "this stage: verifies every stored file against its manifest"]}
    if _enum(cfg.training.method) == "lora" and cfg.training.lora.keep_adapter:
        out["adapter_uri"] = uris["adapter"]
    return out


def export(cfg: DictConfig, run_id: str, train: TrainOutputs, provenance: Optional[dict]) -> ExportOutputs:
    """The export stage: verify what rank 0 stored; copy it only when storage changed since training."""
    if not train.model_uri:
        raise LLMOpsError("the train stage recorded no model_uri; rerun stages=[train,export]")
    uris = storage.model_uris(cfg, run_id)
    store = storage.get_store(cfg)
    refs = {"hf": train.model_uri, "caikit": train.caikit_uri}
    if not all(refs[k] and storage.same_place(cfg, refs[k], uris[k]) for k in refs):
        refs = _copy_from_earlier_storage(cfg, train, uris, store, provenance)
    manifests = {k: store.verify(refs[k]) for k in refs}
    out = ExportOutputs(model_uri=storage.pinned_uri(manifests["hf"], refs["hf"]),
                        caikit_uri=storage.pinned_uri(manifests["caikit"], refs["caikit"]),
                        files=sum(len(m["files"]) for m in manifests.values()),
                        bytes=sum(f["size"] for m in manifests.values() for f in m["files"].values()))
    if _enum(cfg.training.method) == "lora" and cfg.training.lora.keep_adapter:
        same = train.adapter_uri and storage.same_place(cfg, train.adapter_uri, uris["adapter"])
        out.adapter_uri = train.adapter_uri if same else uris["adapter"]
    return out


def _copy_from_earlier_storage(cfg: DictConfig, train: TrainOutputs, uris: dict, store,
                               provenance: Optional[dict]) -> dict:
    """The model was trained with another storage config (or an older llmops wrote only the HF
    layout): bring its layouts into this run's place, verified on the way. Returns the stored
    references {"hf", "caikit"}."""
    log.info("export: the trained model is at %s; copying it to %s", train.model_uri, uris["hf"])
    refs = {"hf": str(train.model_uri)}
    with tempfile.TemporaryDirectory(prefix="llmops-export-") as tmp:
        tmp = Path(tmp)
        src = storage.store_for_uri(cfg, train.model_uri)
        hf_local = Path(src.get_dir(train.model_uri, tmp / "hf"))  # verifies the manifest
        if not storage.same_place(cfg, train.model_uri, uris["hf"]):
            refs["hf"] = _put(store, hf_local, uris["hf"])
        caikit = build_caikit(hf_local, tmp / "caikit")
        _write_provenance(caikit, provenance)
        refs["caikit"] = _put(store, caikit, uris["caikit"])
    return refs
