"""The built-in stage line. Each stage names the config it reads; the work lives in its module."""

from __future__ import annotations

from omegaconf import DictConfig

from llmops.engine import RunContext, stage


def _data_inputs(cfg: DictConfig):
    from llmops import data

    # the content fingerprint: a changed data file reruns the stage even if the config did not
    return {"content": data.fingerprint(cfg)[0], "dataset": cfg.dataset, "tokenizer": cfg.model.tokenizer,
            "name_or_path": cfg.model.name_or_path,
            "train_tokenizer_vocab": cfg.model.train_tokenizer_vocab, "seed": cfg.seed}


def _plan_prepare(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import data

    return data.plan(cfg)


@stage("prepare_data", inputs=_data_inputs, plan=_plan_prepare,
       describe="load the dataset, tokenize, group into fixed blocks; cached by content")
def prepare_data(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import data

    return data.prepare(cfg, ctx)


def _train_inputs(cfg: DictConfig):
    return {"model": cfg.model, "training": cfg.training, "seed": cfg.seed,
            "num_workers": cfg.cluster.num_workers}


def _plan_train(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.clusters import get_backend

    return {"cluster": cfg.cluster.kind.value, "objects": [], **get_backend(cfg).plan(cfg, ctx)}


@stage("train", inputs=_train_inputs, needs=("prepare_data",), plan=_plan_train,
       describe="fine-tune with Ray Train + transformers on the configured cluster")
def train(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import training
    from llmops.clusters import get_backend

    backend = get_backend(cfg)
    training.preflight(cfg, ctx.outputs("prepare_data"))  # before any cluster is brought up
    with backend:
        return backend.run_training(cfg, ctx)


def _export_inputs(cfg: DictConfig):
    return {"storage": cfg.storage, "method": cfg.training.method,
            "keep_adapter": cfg.training.lora.keep_adapter}


def _plan_export(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import export

    return export.plan(cfg, ctx)


@stage("export", inputs=_export_inputs, needs=("train",), plan=_plan_export,
       describe="save the model as safetensors (HF layout and Caikit layout) to storage")
def export_(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import export

    return export.export(cfg, ctx)


def _deploy_inputs(cfg: DictConfig):
    return {"serving": cfg.serving, "storage": cfg.storage}


def _plan_deploy(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.serving import deploy

    return deploy.plan(cfg, ctx)


@stage("deploy", inputs=_deploy_inputs, needs=("export",), plan=_plan_deploy,
       describe="render KServe manifests, validate them, and apply them when serving.apply=true")
def deploy_(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops.serving import deploy

    return deploy.deploy(cfg, ctx)


def _smoke_inputs(cfg: DictConfig):
    return {"smoke_test": cfg.smoke_test, "serving_kind": cfg.serving.kind}


def _plan_smoke(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import smoke

    return smoke.plan(cfg, ctx)


@stage("smoke_test", inputs=_smoke_inputs, needs=("export",), plan=_plan_smoke,
       describe="complete a prompt with the exported (or deployed) model")
def smoke_test(cfg: DictConfig, ctx: RunContext) -> dict:
    from llmops import smoke

    return smoke.smoke(cfg, ctx)
