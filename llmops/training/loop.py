"""The training loop: a transformers Trainer in each training process, launched by Ray Train or
by torchrun.

`train_worker(cfg, task, ctx)` is the one training function. `ctx` (llmops.training.context) says
where it runs: `fit(cfg, task)` launches it on Ray Train workers (TorchTrainer; it must run where
Ray is connected: the embedded Ray of `cluster=local` or a Ray job's driver), `fit_torchrun(cfg,
task)` runs it as one rank of a torch.distributed launch (a Kubeflow TrainJob's torchrun), and
`fit_in_process(cfg, task)` as the one worker of `cluster=local cluster.trainer=process`. Each
process builds the model, reads the prepared blocks, trains, reports every checkpoint (to the
run's checkpoint storage, keeping the best by eval loss) and, on rank 0, writes the final model
straight to the configured store. A rerun with the same run id resumes from the latest
checkpoint: same optimizer, scheduler and data position.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llmops.core.errors import LLMOpsError
from llmops.run import DataOutputs, TrainingTask, TrainOutputs

log = logging.getLogger("llmops")

METRICS_FILE = "metrics.jsonl"


def _enum(v: Any) -> str:
    return str(getattr(v, "value", v))


# ------------------------------------------------------------------------------------- datasets
class BlockDataset:
    """Fixed-size token blocks as causal-LM examples (labels = input_ids; the model shifts)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, i: int) -> dict:
        import torch

        ids = torch.as_tensor(self.blocks[i].astype("int64"))
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


# ------------------------------------------------------------------------------------- metrics
def token_accuracy(eval_pred) -> dict:
    """Next-token accuracy, computed locally (run_clm uses `evaluate`, which needs the network)."""
    import numpy as np

    preds, labels = eval_pred
    preds = np.asarray(preds)[:, :-1].reshape(-1)
    labels = np.asarray(labels)[:, 1:].reshape(-1)
    mask = labels != -100
    return {"accuracy": float((preds[mask] == labels[mask]).mean()) if mask.any() else 0.0}


def argmax_logits(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def _metrics_callback(path: Path | None, tokens_per_step: int):
    from transformers import TrainerCallback

    class MetricsLog(TrainerCallback):
        """Appends every Trainer log (loss, eval loss, perplexity, lr, tokens/s) to metrics.jsonl."""

        def __init__(self):
            self.history: list[dict] = []
            self._t = None
            self._step = 0

        def on_train_begin(self, args, state, control, **kw):
            self._t, self._step = time.time(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            now = time.time()
            rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            if "loss" in logs:
                rec["loss"] = logs["loss"]
                steps = state.global_step - self._step
                if self._t and steps > 0:
                    rec["tokens_per_s"] = round(steps * tokens_per_step / (now - self._t), 1)
                self._t, self._step = now, state.global_step
            if "learning_rate" in logs:
                rec["learning_rate"] = logs["learning_rate"]
            if "eval_loss" in logs:
                rec["eval_loss"] = logs["eval_loss"]
                rec["perplexity"] = perplexity(logs["eval_loss"])
                if "eval_accuracy" in logs:
                    rec["eval_accuracy"] = logs["eval_accuracy"]
            if len(rec) <= 2 or (self.history and {**self.history[-1]} == rec):
                return  # nothing but step/epoch, or the final evaluate() repeating the last eval
            self.history.append(rec)
            if path is not None:
                with open(path, "a") as f:
                    f.write(json.dumps(rec) + "\n")

    return MetricsLog()


# -------------------------------------------------------------------------------- worker loop
def training_arguments(cfg: DictConfig, output_dir: str, use_gpu: bool):
    """transformers.TrainingArguments from the training config."""
    from transformers import TrainingArguments

    t = cfg.training
    prec = _enum(t.precision)
    steps = int(t.eval_steps)
    args = dict(
        output_dir=output_dir,
        num_train_epochs=float(t.epochs),
        max_steps=int(t.max_steps),
        per_device_train_batch_size=int(t.per_device_train_batch_size),
        per_device_eval_batch_size=int(t.per_device_eval_batch_size),
        gradient_accumulation_steps=int(t.gradient_accumulation_steps),
        learning_rate=float(t.lr),
        lr_scheduler_type=_enum(t.lr_scheduler),
        weight_decay=float(t.weight_decay),
        max_grad_norm=float(t.max_grad_norm),
        bf16=prec == "bf16",
        fp16=prec == "fp16",
        logging_steps=int(t.logging_steps),
        logging_first_step=True,
        eval_strategy="steps",
        eval_steps=steps,
        save_strategy="steps",
        save_steps=steps,  # save and eval share one schedule: each checkpoint has its eval loss
        save_total_limit=int(t.save_total_limit),
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        dataloader_num_workers=int(t.dataloader_num_workers),
        dataloader_pin_memory=use_gpu,
        use_cpu=not use_gpu,
        torch_compile=bool(cfg.model.compile),
        report_to="none",
        disable_tqdm=False,
        ddp_find_unused_parameters=False,
    )
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "warmup_ratio" in names:  # transformers 4.x
        args["warmup_ratio"] = float(t.warmup_ratio)
    else:  # transformers 5: a float in [0, 1) is a ratio of the total steps
        args["warmup_steps"] = float(t.warmup_ratio) if t.warmup_ratio else 0
    return TrainingArguments(**args)


def preflight(cfg: DictConfig, data: DataOutputs) -> None:
    """Checks before any cluster work: block size vs context, LoRA targets, precision, arguments.
    The model checks need the tokenizer on this machine (on a remote cluster's storage it is not)."""
    from llmops.training import modeling

    if data.tokenizer_dir and Path(data.tokenizer_dir).is_dir():
        tok = modeling.load_tokenizer(data.tokenizer_dir)
        try:
            modeling.preflight(cfg, tok)
        except modeling.ConfigUnavailable as e:  # e.g. a hub model and no network here
            log.warning("model shape checks skipped: %s", e)
            modeling.check_precision(cfg)
    else:
        modeling.check_precision(cfg)
    check_arguments(cfg)


def check_arguments(cfg: DictConfig) -> None:
    """Build the TrainingArguments once on the driver, so a bad combination fails before Ray."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            training_arguments(cfg, tmp, int(cfg.cluster.gpus_per_worker) > 0)
        except (ValueError, TypeError) as e:
            raise LLMOpsError(f"training: transformers rejects these settings: {e}") from None


def _time_budget_callback(max_time_s: int):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self):
            self.start = None

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.time()

        def on_step_end(self, args, state, control, **kw):
            if max_time_s and time.time() - self.start > max_time_s:
                control.should_training_stop = True
                control.should_save = True
                control.should_evaluate = True

    return TimeBudget()


def _no_ddp_for_one_worker(world_size: int) -> None:
    """One worker has nothing to all-reduce. Ray Train sets LOCAL_RANK even then, and with it
    accelerate wraps the model in DistributedDataParallel on Ray's process group: a bucket copy
    and an all-reduce of every gradient each step (averaging over one worker changes nothing).
    Without LOCAL_RANK the Trainer trains the bare model, as a single-process script does."""
    if world_size == 1:
        os.environ.pop("LOCAL_RANK", None)


def train_loop_per_worker(config: dict) -> None:
    """Runs in each Ray Train worker."""
    from llmops.config.schema import typed
    from llmops.training.context import RayContext

    train_worker(typed(config["cfg"]), TrainingTask.from_dict(config["task"]), RayContext())


def train_worker(cfg: DictConfig, task: TrainingTask, ctx) -> dict:
    """One training process, whatever launched it (`ctx`: a llmops.training.context.TrainContext).
    Returns the final metrics it reported (rank 0 adds the export's URIs and the history)."""
    import torch
    from transformers import Trainer

    from llmops import data
    from llmops.training import modeling
    from llmops.training.context import CHECKPOINT_NAME

    rank = ctx.rank
    use_gpu = int(cfg.cluster.gpus_per_worker) > 0
    torch.manual_seed(int(cfg.seed))
    _no_ddp_for_one_worker(ctx.world_size)

    tokenizer = modeling.load_tokenizer(task.data.tokenizer_dir)
    model = modeling.build_model(cfg, tokenizer)
    train_ds = BlockDataset(data.load_blocks(task.data.data_dir, "train"))
    eval_ds = BlockDataset(data.load_blocks(task.data.data_dir, "validation"))

    work = Path(tempfile.mkdtemp(prefix=f"llmops-rank{rank}-"))
    args = training_arguments(cfg, str(work / "hf"), use_gpu)
    block = int(train_ds.blocks.shape[1])
    tokens_per_step = (int(cfg.training.per_device_train_batch_size) * block
                       * int(cfg.training.gradient_accumulation_steps) * ctx.world_size)
    metrics_path = Path(task.metrics_path) if rank == 0 and task.metrics_path else None
    mlog = _metrics_callback(metrics_path, tokens_per_step)
    callbacks = [*ctx.callbacks(), mlog]
    if int(cfg.training.max_time_s) > 0:
        callbacks.append(_time_budget_callback(int(cfg.training.max_time_s)))
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      callbacks=callbacks, compute_metrics=token_accuracy,
                      preprocess_logits_for_metrics=argmax_logits)
    trainer = ctx.prepare(trainer)

    resume = None
    local = work / "resume"
    where = ctx.latest_checkpoint(local)
    if where is not None:
        if (local / CHECKPOINT_NAME / "trainer_state.json").is_file():
            resume = str(local / CHECKPOINT_NAME)
            print(f"llmops: resuming from checkpoint {where}", flush=True)
        else:
            print(f"llmops: checkpoint {where} holds no trainer state; starting afresh", flush=True)
    t0 = time.time()
    try:
        out = trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError:
        raise LLMOpsError(
            f"out of memory at training.per_device_train_batch_size="
            f"{cfg.training.per_device_train_batch_size}: lower it (and raise "
            f"training.gradient_accumulation_steps to keep the batch), or set "
            f"model.gradient_checkpointing=true") from None
    train_time = time.time() - t0
    ev = trainer.evaluate()
    tm = out.metrics
    samples_per_s = tm.get("train_samples_per_second") or 0.0
    final = {
        "train_loss": float(tm.get("train_loss", float("nan"))),
        "eval_loss": float(ev["eval_loss"]),
        "perplexity": perplexity(float(ev["eval_loss"])),
        "eval_accuracy": float(ev.get("eval_accuracy", float("nan"))),
        "tokens_per_s": round(samples_per_s * block, 1),
        "global_step": int(out.global_step),
        "train_runtime_s": round(train_time, 2),
        "epoch": float(trainer.state.epoch or 0.0),
    }
    final["history"] = mlog.history if rank == 0 else []
    final_ckpt = None
    if rank == 0:
        from llmops.training import export

        final.update(export.save_trained(cfg, trainer.model, tokenizer, task.provenance, task.run_id,
                                         work / "final"))
        # the last HF checkpoint again, now with the final metrics: the launcher keeps the
        # latest checkpoint whatever its score (Ray makes its metrics result.metrics), and a
        # rerun with a larger budget resumes from it (optimizer, scheduler and data position)
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(args.output_dir)
        if last is not None:
            shutil.copytree(last, work / "final_ckpt" / CHECKPOINT_NAME)
            final_ckpt = work / "final_ckpt"
    ctx.report(final, final_ckpt)
    shutil.rmtree(work, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------ driver
def fit(cfg: DictConfig, task) -> TrainOutputs:
    """Train on the connected Ray cluster. `task`: a TrainingTask (or its dict, as a remote job
    receives it). Returns the train stage's outputs."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from llmops import storage

    c = cfg.cluster
    task = with_metrics_path(task)
    storage_path, fs = storage.ray_storage(cfg, Path(task.run_dir), task.run_id)
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain.pop("hydra", None)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": plain, "task": task.to_dict()},
        scaling_config=ScalingConfig(
            num_workers=int(c.num_workers), use_gpu=int(c.gpus_per_worker) > 0,
            resources_per_worker={"CPU": int(c.cpus_per_worker),
                                  **({"GPU": int(c.gpus_per_worker)} if int(c.gpus_per_worker) else {})}),
        run_config=RunConfig(
            name=task.run_id, storage_path=storage_path, storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=int(cfg.training.save_total_limit),
                checkpoint_score_attribute="eval_loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=int(cfg.training.max_failures))),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # ray.train.TrainingFailedError wraps the worker's exception
        raise LLMOpsError(_training_error(e)) from None
    m = dict(result.metrics or {})
    best = None
    if result.best_checkpoints:
        scored = [(ck, met) for ck, met in result.best_checkpoints if "eval_loss" in met]
        if scored:
            best = min(scored, key=lambda x: x[1]["eval_loss"])[0]
    out = train_outputs(m, _ckpt_uri(best or result.checkpoint, fs), task)
    finish_files(task, out, m.get("history") or [])
    return out


def with_metrics_path(task) -> TrainingTask:
    """The task (or its dict) with metrics.jsonl in the run directory unless it names another."""
    task = TrainingTask.from_dict(task)
    if not task.metrics_path:
        task = dataclasses.replace(task, metrics_path=str(Path(task.run_dir) / METRICS_FILE))
    return task


def train_outputs(final: dict, checkpoint_uri: str | None, task: TrainingTask) -> TrainOutputs:
    """The train stage's outputs from the final report of rank 0 (its metrics and export URIs)."""
    metrics = {k: final.get(k) for k in ("train_loss", "eval_loss", "perplexity", "eval_accuracy",
                                         "tokens_per_s", "global_step", "train_runtime_s", "epoch")}
    return TrainOutputs(metrics=metrics, checkpoint_uri=checkpoint_uri, model_uri=final.get("model_uri"),
                        caikit_uri=final.get("caikit_uri"), adapter_uri=final.get("adapter_uri"),
                        metrics_file=task.metrics_path)


def finish_files(task: TrainingTask, out: TrainOutputs, history: list) -> None:
    """metrics.jsonl from the history when the training ran elsewhere (no file here), and loss.png."""
    if history and not Path(task.metrics_path).exists():
        Path(task.metrics_path).parent.mkdir(parents=True, exist_ok=True)
        with open(task.metrics_path, "w") as f:
            for rec in history:
                f.write(json.dumps(rec) + "\n")
    try:
        plot_loss(Path(task.metrics_path), Path(task.run_dir) / "loss.png")
        out.loss_plot = str(Path(task.run_dir) / "loss.png")
    except Exception as e:  # a plot is a nicety; never fail a run for it
        log.warning("loss.png not written: %s", e)


def fit_torchrun(cfg: DictConfig, task) -> tuple[TrainOutputs | None, list]:
    """Train in this process as one rank of a torch.distributed launch (torchrun; no Ray).
    Checkpoints go to the same storage and layout as under Ray Train and a rerun resumes from
    the latest. Returns (the train stage's outputs, the metric history) on rank 0, (None, [])
    on the others."""
    from llmops import storage
    from llmops.training.context import TorchrunContext

    task = with_metrics_path(task)
    storage_path, fs = storage.ray_storage(cfg, Path(task.run_dir), task.run_id)
    ctx = TorchrunContext(storage_path, task.run_id, storage_filesystem=fs,
                          keep=int(cfg.training.save_total_limit))
    final = train_worker(cfg, task, ctx)
    if ctx.rank != 0:
        return None, []
    out = train_outputs(final, ctx.best_checkpoint(), task)
    if Path(task.run_dir).is_dir():
        finish_files(task, out, final.get("history") or [])
    return out, final.get("history") or []


def fit_in_process(cfg: DictConfig, task) -> TrainOutputs:
    """Train in this process as the only worker (`cluster.trainer=process`): no Ray Train worker
    group to start and stop. Checkpoints, their layout, the kept best and resume are those of
    `fit_torchrun` (in Ray Train's layout). Like a Ray
    worker with `cluster.cpus_per_worker` CPUs, torch uses that many threads while it trains."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.cluster.cpus_per_worker))
    saved = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ}
    try:
        out, _ = fit_torchrun(cfg, task)
    finally:
        torch.set_num_threads(threads)
        os.environ.update(saved)
    return out


def _ckpt_uri(ckpt, fs) -> str | None:
    if ckpt is None:
        return None
    path = ckpt.path
    if fs is not None and getattr(fs, "type_name", "") == "s3":
        return f"s3://{path}"
    return Path(path).as_uri() if path.startswith("/") else path


def _training_error(e: BaseException) -> str:
    """The innermost user-facing message of a Ray Train failure."""
    seen = []
    cur: Any = e
    while cur is not None and cur not in seen:
        seen.append(cur)
        if isinstance(cur, LLMOpsError):
            return str(cur)
        text = str(cur)
        if "LLMOpsError" in text:
            line = [ln for ln in text.splitlines() if "LLMOpsError" in ln][-1]
            return line.split("LLMOpsError:", 1)[-1].strip()
        if "out of memory" in text.lower():
            return ("out of memory during training: lower training.per_device_train_batch_size "
                    "(raise training.gradient_accumulation_steps to keep the batch) or set "
                    "model.gradient_checkpointing=true")
        nxt = getattr(cur, "__cause__", None) or getattr(cur, "__context__", None)
        errs = getattr(cur, "worker_failures", None) or getattr(cur, "errors", None)
        if nxt is None and isinstance(errs, dict) and errs:
            nxt = next(iter(errs.values()))
        cur = nxt
    return f"training failed: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"


def plot_loss(metrics_path: Path, out: Path) -> None:
    """loss.png: train loss and eval loss against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    tr = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    ev = [(r["step"], r["eval_loss"]) for r in recs if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if tr:
        ax.plot(*zip(*tr), label="train loss")
    if ev:
        ax.plot(*zip(*ev), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
