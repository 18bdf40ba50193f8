"""The deploy stage: render, validate strictly, write the manifests; apply and wait when asked.

Outputs: ``manifests`` (paths of the files in <run_dir>/deploy), ``applied`` (bool), and once
applied ``namespace``, ``objects`` ([{kind, name}]), ``isvc``, ``runtime``, ``protocol``,
``url``. The files on disk hold the Secret with placeholders, never credential values.
``serving.keep=false``: what was applied is deleted when the smoke_test stage ends (or right
here when smoke_test is not among the run's stages).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from llmops.core.errors import LLMOpsError
from llmops.run import DeployOutputs, ExportOutputs
from llmops.serving import LAYOUT, SERVED_BY

log = logging.getLogger("llmops")


def _kind(cfg: DictConfig) -> str:
    return str(getattr(cfg.serving.kind, "value", cfg.serving.kind))


def _planned_uris(cfg: DictConfig, run_id: str) -> dict:
    from llmops import storage

    uris = storage.model_uris(cfg, run_id)
    return {k: storage.serving_uri(cfg, v) for k, v in uris.items() if k in ("hf", "caikit")}


def _export_uris(cfg: DictConfig, out: ExportOutputs) -> dict:
    from llmops import storage

    uris = {}
    for layout in ("hf", "caikit"):
        if out.uri(layout):
            uris[layout] = storage.serving_uri(cfg, str(out.uri(layout)))
    need = LAYOUT[_kind(cfg)]
    if need not in uris:
        key = "model_uri" if need == "hf" else "caikit_uri"
        raise LLMOpsError(f"the export stage recorded no '{key}': the {_kind(cfg)} runtime needs "
                          f"the {need} layout")
    return uris


def plan(cfg: DictConfig, ctx) -> dict:
    """What deploy would render (validated) and where it would apply it. No side effects."""
    kind = _kind(cfg)
    if kind == "none":
        return {"serving": "none", "objects": [], "note": "serving=none: no manifests"}
    from llmops.k8s import validate
    from llmops.serving import render

    uris = _planned_uris(cfg, ctx.run_id)
    objects = render.render(cfg, ctx.run_id, ctx.recipe, uris)
    validate.validate_objects(objects)
    n = render.names(cfg, ctx.run_id)
    return {
        "serving": kind,
        "namespace": str(cfg.serving.namespace),
        "inference_service": n["isvc"],
        "model_uri": uris[LAYOUT[kind]],
        "apply": bool(cfg.serving.apply),
        "writes": str(Path(ctx.run_dir) / "deploy"),
        "objects": objects,
    }


def deploy(cfg: DictConfig, ctx, export: ExportOutputs) -> DeployOutputs:
    """Render, validate and write the manifests; with serving.apply, apply them and wait until the
    InferenceService is Ready. What was applied is deleted by `delete` (the engine calls it after
    the last selected stage when serving.keep=false)."""
    kind = _kind(cfg)
    if kind == "none":
        return DeployOutputs()
    from llmops.k8s.manifests import write_objects
    from llmops.k8s import validate
    from llmops.serving import render

    uris = _export_uris(cfg, export)
    objects = render.render(cfg, ctx.run_id, ctx.recipe, uris)
    recipe_hash = (ctx.provenance or {}).get("recipe_hash")
    if recipe_hash:  # trace a served model to the recipe file that made it
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {})["llmops.io/recipe-hash"] = recipe_hash
    validate.validate_objects(objects)
    out_dir = Path(ctx.run_dir) / "deploy"
    for old in out_dir.glob("*.yaml") if out_dir.is_dir() else []:
        old.unlink()  # a rerun with fewer objects leaves no stale file behind
    paths = write_objects(objects, out_dir)
    n = render.names(cfg, ctx.run_id)
    result = DeployOutputs(manifests=[str(p) for p in paths], applied=False, isvc=n["isvc"], runtime=kind,
                           protocol=str(getattr(cfg.serving.protocol, "value", cfg.serving.protocol)),
                           namespace=str(cfg.serving.namespace))
    log.info("deploy: %d manifest(s) written to %s", len(paths), out_dir)
    if not cfg.serving.apply:
        return result

    from llmops.serving import kube

    applied = kube.apply_objects(objects, cfg)
    result.applied, result.objects = True, applied
    result.selector = render.run_selector(ctx.run_id, ctx.recipe)
    try:
        status = kube.wait_ready(n["isvc"], str(cfg.serving.namespace),
                                 timeout_s=float(cfg.serving.ready_timeout_s),
                                 interval_s=float(cfg.serving.poll_interval_s), cfg=cfg,
                                 kind=SERVED_BY.get(kind, "InferenceService"))
    except LLMOpsError as e:
        if cfg.serving.keep:
            raise LLMOpsError(f"{e}; the objects stay for inspection, `llmops undeploy "
                              f"{ctx.run_dir}` removes them") from None
        kube.delete_run(str(cfg.serving.namespace), result.selector, cfg)
        raise LLMOpsError(f"{e}; deleted what was applied (serving.keep=false)") from None
    result.url = status.get("url")
    log.info("deploy: %s %s is Ready at %s", SERVED_BY.get(kind, "InferenceService"), n["isvc"], result.url)
    return result


def delete(out: DeployOutputs, cfg: Optional[DictConfig] = None) -> list[str]:
    """Delete everything a deploy applied (by the run's label selector), with the credentials
    `cfg` names (cluster.auth)."""
    from llmops.serving import kube

    deleted = kube.delete_run(str(out.namespace), str(out.selector), cfg)
    log.info("deploy: serving.keep=false, deleted what deploy applied in %s", out.namespace)
    return deleted
