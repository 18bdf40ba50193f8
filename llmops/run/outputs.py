"""Each stage's outputs as a dataclass: what a stage returns, what state.json stores, what later
stages, commands and the run summary read. Field names are the keys of state.json.

`from_dict` takes what an older state.json holds too: unknown keys are ignored, missing ones
take their defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional


class Outputs:
    """Mixin: JSON round trip of a stage-output dataclass."""

    stage: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Optional[dict]):
        d = d or {}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        return ""


@dataclass
class DataOutputs(Outputs):
    stage: ClassVar[str] = "prepare_data"
    data_dir: str = ""            # cache entry holding the token blocks of each split
    tokenizer_dir: str = ""       # the tokenizer the blocks were made with
    blocks: dict = field(default_factory=dict)   # split -> number of blocks
    tokens: dict = field(default_factory=dict)   # split -> number of tokens
    rows: dict = field(default_factory=dict)     # split -> number of rows read
    block_size: int = 0
    group_by: str = ""
    vocab_size: int = 0
    fingerprint: str = ""
    source: str = ""
    cache_hit: bool = False

    def summary(self) -> str:
        return f"blocks {self.blocks}"


@dataclass
class TrainOutputs(Outputs):
    stage: ClassVar[str] = "train"
    metrics: dict = field(default_factory=dict)  # final train/eval metrics (eval_loss, perplexity, ...)
    model_uri: Optional[str] = None              # the HF layout rank 0 wrote to the store
    caikit_uri: Optional[str] = None             # the Caikit layout rank 0 wrote beside it
    adapter_uri: Optional[str] = None            # the LoRA adapter, when kept
    checkpoint_uri: Optional[str] = None
    metrics_file: Optional[str] = None
    loss_plot: Optional[str] = None

    def metric(self, name: str) -> Optional[float]:
        v = self.metrics.get(name)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def summary(self) -> str:
        m = self.metrics
        return (f"eval_loss {m.get('eval_loss')}, perplexity {m.get('perplexity')}, "
                f"{m.get('tokens_per_s')} tokens/s")


@dataclass
class ExportOutputs(Outputs):
    stage: ClassVar[str] = "export"
    model_uri: str = ""                 # HF layout (vLLM, TGIS, the HF server read it)
    caikit_uri: Optional[str] = None    # Caikit layout (caikit_tgis reads it)
    adapter_uri: Optional[str] = None
    files: int = 0
    bytes: int = 0

    def uri(self, layout: str) -> Optional[str]:
        return {"hf": self.model_uri, "caikit": self.caikit_uri}.get(layout) or None

    def summary(self) -> str:
        return str(self.model_uri)


@dataclass
class DeployOutputs(Outputs):
    stage: ClassVar[str] = "deploy"
    manifests: list = field(default_factory=list)  # files written under deploy/
    applied: bool = False
    isvc: Optional[str] = None
    runtime: Optional[str] = None
    protocol: Optional[str] = None
    namespace: Optional[str] = None
    objects: Optional[list] = None      # what was applied (kind, name, namespace)
    selector: Optional[str] = None      # label selector of everything this run applied
    url: Optional[str] = None
    deleted: Optional[bool] = None      # cleaned up by the engine (serving.keep=false)

    def summary(self) -> str:
        return f"{len(self.manifests)} manifests, applied={self.applied}"


@dataclass
class SmokeOutputs(Outputs):
    stage: ClassVar[str] = "smoke_test"
    prompt: str = ""
    reply: str = ""
    tokens: Optional[int] = None
    prompt_tokens: Optional[int] = None
    latency_s: Optional[float] = None
    api: Optional[str] = None
    attempts: Optional[int] = None
    target: Optional[str] = None

    def summary(self) -> str:
        return f"{self.prompt!r} -> {self.reply!r}"


OUTPUT_TYPES: dict[str, type] = {t.stage: t for t in
                                 (DataOutputs, TrainOutputs, ExportOutputs, DeployOutputs, SmokeOutputs)}


@dataclass
class TrainingTask:
    """What the training function needs to know about the run, as plain data: the same under
    every cluster backend (it travels to Ray workers and remote jobs as JSON)."""

    run_id: str
    run_dir: str
    data: DataOutputs
    provenance: Optional[dict] = None
    metrics_path: Optional[str] = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = self.data.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "TrainingTask":
        if isinstance(d, TrainingTask):
            return d
        return cls(run_id=str(d["run_id"]), run_dir=str(d["run_dir"]),
                   data=DataOutputs.from_dict(d.get("data")), provenance=d.get("provenance"),
                   metrics_path=d.get("metrics_path"))
