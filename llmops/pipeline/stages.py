"""The stage line: one ordered tuple of stage definitions. The order lives here and nowhere else.

    prepare_data -> train -> export -> deploy -> smoke_test

A stage is `StageDef(name, run, plan, inputs, needs)`: `run(cfg, ctx) -> Outputs` does the work
and returns its typed outputs (llmops.run.outputs); `plan(cfg, ctx) -> dict` says what it would do
and changes nothing; `inputs(cfg)` are the config values its fingerprint covers; `needs` names the
stages whose outputs it reads. `cleanup(cfg, ctx)` (optional) runs once after the last selected
stage, whether the line succeeded or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig

from llmops.run import DataOutputs, DeployOutputs, ExportOutputs, Outputs, RunContext, SmokeOutputs, TrainOutputs


@dataclass(frozen=True)
class StageDef:
    name: str
    run: Callable[[DictConfig, RunContext], Outputs]
    plan: Callable[[DictConfig, RunContext], dict]
    inputs: Callable[[DictConfig], Any]
    needs: tuple[str, ...] = ()
    describe: str = ""
    cleanup: Optional[Callable[[DictConfig, RunContext], None]] = None


# ------------------------------------------------------------------------------- prepare_data
def _data_inputs(cfg: DictConfig) -> dict:
    from llmops import data

    # the content fingerprint: a changed data file reruns the stage even if the config did not
    # (file hashes are memoised: prepare, run right after, reads no file again)
    return {"content": data.fingerprint(cfg)[0], "dataset": data.stage_settings(cfg),
            "tokenizer": cfg.model.tokenizer,
            "name_or_path": cfg.model.name_or_path,
            "train_tokenizer_vocab": cfg.model.train_tokenizer_vocab, "seed": cfg.seed}


def _plan_data(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import data

    return data.plan(cfg)


def _run_data(cfg: DictConfig, ctx: RunContext) -> DataOutputs:
    from llmops import data

    return data.prepare(cfg)


# -------------------------------------------------------------------------------------- train
def _train_inputs(cfg: DictConfig) -> dict:
    return {"model": cfg.model, "training": cfg.training, "seed": cfg.seed,
            "num_workers": cfg.cluster.num_workers}


def _plan_train(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.clusters import get_backend

    return {"cluster": cfg.cluster.kind.value, "objects": [], **get_backend(cfg).plan(cfg, ctx)}


def _run_train(cfg: DictConfig, ctx: RunContext) -> TrainOutputs:
    from llmops import storage
    from llmops.clusters import get_backend
    from llmops.training import loop as training

    storage.preflight(cfg, ctx.run_dir, ctx.run_id)  # reachable, writable: before any cluster work
    task = ctx.training_task()
    training.preflight(cfg, task.data)  # before any cluster is brought up
    with get_backend(cfg) as backend:
        return backend.run_training(cfg, task)


# ------------------------------------------------------------------------------------- export
def _export_inputs(cfg: DictConfig) -> dict:
    return {"storage": cfg.storage, "method": cfg.training.method,
            "keep_adapter": cfg.training.lora.keep_adapter}


def _plan_export(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.training import export

    return export.plan(cfg, ctx.run_id)


def _run_export(cfg: DictConfig, ctx: RunContext) -> ExportOutputs:
    from llmops.training import export

    return export.export(cfg, ctx.run_id, ctx.outputs("train"), ctx.provenance)


# ------------------------------------------------------------------------------------- deploy
def _deploy_inputs(cfg: DictConfig) -> dict:
    return {"serving": cfg.serving, "storage": cfg.storage}


def _plan_deploy(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.serving import deploy

    return deploy.plan(cfg, ctx)


def _run_deploy(cfg: DictConfig, ctx: RunContext) -> DeployOutputs:
    from llmops.serving import deploy

    return deploy.deploy(cfg, ctx, ctx.outputs("export"))


def _cleanup_deploy(cfg: DictConfig, ctx: RunContext) -> None:
    """serving.keep=false: delete what deploy applied, once the last selected stage has run."""
    if cfg.serving.keep or ctx.state is None or ctx.state.status("deploy") != "done":
        return
    from llmops.serving import deploy

    out = ctx.outputs("deploy")
    if out.applied and not out.deleted:
        deploy.delete(out, cfg)
        out.deleted = True
        ctx.state.set_outputs("deploy", out)
        ctx.state.save()


# --------------------------------------------------------------------------------- smoke_test
def _smoke_inputs(cfg: DictConfig) -> dict:
    return {"smoke_test": cfg.smoke_test, "serving_kind": cfg.serving.kind}


def _plan_smoke(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.serving import smoke

    return smoke.plan(cfg)


def _run_smoke(cfg: DictConfig, ctx: RunContext) -> SmokeOutputs:
    from llmops.serving import smoke

    if str(cfg.smoke_test.target) == "endpoint":
        return smoke.call_endpoint(cfg, ctx.outputs("deploy"))
    return smoke.call_local(cfg, ctx.outputs("export"), ctx.run_dir, ctx.run_id)


LINE: tuple[StageDef, ...] = (
    StageDef("prepare_data", _run_data, _plan_data, _data_inputs,
             describe="load the dataset, tokenize, group into fixed blocks; cached by content"),
    StageDef("train", _run_train, _plan_train, _train_inputs, needs=("prepare_data",),
             describe="fine-tune with Ray Train + transformers on the configured cluster"),
    StageDef("export", _run_export, _plan_export, _export_inputs, needs=("train",),
             describe="verify the model rank 0 wrote to storage (HF and Caikit layouts)"),
    StageDef("deploy", _run_deploy, _plan_deploy, _deploy_inputs, needs=("export",),
             describe="render KServe manifests, validate them, and apply them when serving.apply=true",
             cleanup=_cleanup_deploy),
    StageDef("smoke_test", _run_smoke, _plan_smoke, _smoke_inputs, needs=("export",),
             describe="complete a prompt with the exported (or deployed) model"),
)


def selected(cfg: DictConfig, line: Sequence[StageDef]) -> list[StageDef]:
    """The stages `cfg.stages` picks, in line order."""
    chosen = {str(getattr(s, "value", s)) for s in cfg.stages}
    return [d for d in line if d.name in chosen]
