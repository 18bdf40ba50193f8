"""Where a training process runs: the seam between the training loop and its launcher.

The loop (`llmops.training.loop.train_worker`) is written once against `TrainContext`:

    rank, world_size                       this process among all training processes
    callbacks() -> list                    transformers callbacks that report each checkpoint
    prepare(trainer) -> trainer            launcher-specific wrapping of the Trainer
    latest_checkpoint(into) -> str | None  the latest checkpoint, copied under `into`
    report(metrics, checkpoint_dir)        one report; every rank calls it the same number of times

`RayContext` is Ray Train (``ray.train.get_context``, ``RayTrainReportCallback``,
``prepare_trainer``, ``get_checkpoint``, ``report``). `TorchrunContext` is a plain
``torch.distributed`` launch (torchrun: ``RANK``/``WORLD_SIZE``): it writes checkpoints to the
run's checkpoint storage in Ray Train's layout, ``<storage>/<run_id>/checkpoint_<date>/checkpoint/``,
keeps the best ``save_total_limit`` by eval loss plus the latest, and resumes from the latest;
so a run started by one launcher resumes under the other.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Optional, Protocol

CHECKPOINT_NAME = "checkpoint"  # the HF checkpoint's folder inside a reported checkpoint
SCORE_FILE = "llmops_metrics.json"  # beside CHECKPOINT_NAME: the metrics the checkpoint was reported with


class TrainContext(Protocol):
    rank: int
    world_size: int

    def callbacks(self) -> list: ...

    def prepare(self, trainer): ...

    def latest_checkpoint(self, into: Path) -> Optional[str]: ...

    def report(self, metrics: dict, checkpoint_dir: Optional[Path]) -> None: ...


def aggregated_logs(state) -> dict:
    """Every metric the Trainer logged so far, later values winning (what Ray's callback reports)."""
    metrics: dict = {}
    for entry in state.log_history:
        metrics.update(entry)
    return metrics


# ------------------------------------------------------------------------------------------ Ray
class RayContext:
    """Inside a Ray Train worker."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def callbacks(self) -> list:
        from ray.train.huggingface.transformers import RayTrainReportCallback

        return [RayTrainReportCallback()]

    def prepare(self, trainer):
        from ray.train.huggingface.transformers import prepare_trainer

        return prepare_trainer(trainer)

    def latest_checkpoint(self, into: Path) -> Optional[str]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        ckpt.to_directory(str(into))
        return str(ckpt.path)

    def report(self, metrics: dict, checkpoint_dir: Optional[Path]) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


# ------------------------------------------------------------------------------------- torchrun
def _fs(storage_filesystem):
    if storage_filesystem is not None:
        return storage_filesystem
    from pyarrow.fs import LocalFileSystem

    return LocalFileSystem()


class TorchrunContext:
    """A process started by torchrun (or any torch.distributed launcher setting RANK/WORLD_SIZE).

    `storage_path`/`storage_filesystem` are what Ray Train's RunConfig gets
    (``llmops.storage.ray_storage``); checkpoints go to ``<storage_path>/<name>/``."""

    def __init__(self, storage_path: str, name: str, *, storage_filesystem=None, keep: int = 2):
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.fs = _fs(storage_filesystem)
        self.remote = storage_filesystem is not None
        self.root = f"{str(storage_path).rstrip('/')}/{name}"
        self.keep = max(int(keep), 1)
        self.final: Optional[dict] = None
        self.reported: list[tuple[str, dict]] = []  # (checkpoint path, metrics), this run's and earlier

    # -- storage
    def _checkpoints(self) -> list[str]:
        """Checkpoint folders under the run's storage that hold an HF checkpoint, oldest first."""
        from pyarrow.fs import FileSelector, FileType

        try:
            infos = self.fs.get_file_info(FileSelector(self.root, allow_not_found=True))
        except FileNotFoundError:
            return []
        dirs = sorted(i.path for i in infos if i.type == FileType.Directory
                      and i.base_name.startswith("checkpoint_"))
        out = []
        for d in dirs:
            state = self.fs.get_file_info(f"{d}/{CHECKPOINT_NAME}/trainer_state.json")
            if state.type == FileType.File:
                out.append(d)
        return out

    def _score(self, path: str) -> Optional[float]:
        try:
            with self.fs.open_input_stream(f"{path}/{SCORE_FILE}") as f:
                v = json.loads(f.read().decode()).get("eval_loss")
            return float(v) if v is not None else None
        except (OSError, ValueError):
            return None

    def uri(self, path: str) -> str:
        return f"s3://{path}" if getattr(self.fs, "type_name", "") == "s3" else Path(path).as_uri()

    def best_checkpoint(self) -> Optional[str]:
        """The kept checkpoint with the lowest eval loss (else the latest), as a URI."""
        ckpts = self._checkpoints()
        scored = [(s, p) for p in ckpts if (s := self._score(p)) is not None]
        if scored:
            return self.uri(min(scored)[1])
        return self.uri(ckpts[-1]) if ckpts else None

    # -- the protocol
    def callbacks(self) -> list:
        from transformers import TrainerCallback
        from transformers.trainer_utils import get_last_checkpoint

        ctx = self

        class ReportOnSave(TrainerCallback):
            """Each save, reported with the metrics logged so far (as RayTrainReportCallback)."""

            def on_save(self, args, state, control, **kw):
                with tempfile.TemporaryDirectory() as tmp:
                    src = get_last_checkpoint(args.output_dir)
                    ckpt = None
                    if src is not None:
                        shutil.copytree(src, Path(tmp) / CHECKPOINT_NAME)
                        ckpt = Path(tmp)
                    ctx.report(aggregated_logs(state), ckpt)

        return [ReportOnSave()]

    def prepare(self, trainer):
        return trainer

    def latest_checkpoint(self, into: Path) -> Optional[str]:
        ckpts = self._checkpoints()
        if not ckpts:
            return None
        from pyarrow.fs import LocalFileSystem, copy_files

        into.mkdir(parents=True, exist_ok=True)
        copy_files(ckpts[-1], str(into), source_filesystem=self.fs,
                   destination_filesystem=LocalFileSystem())
        return self.uri(ckpts[-1])

    def report(self, metrics: dict, checkpoint_dir: Optional[Path]) -> None:
        """Rank 0 uploads the checkpoint (with its metrics beside it) and prunes the others;
        every rank waits for it, so no rank runs ahead of a checkpoint."""
        if self.rank == 0 and checkpoint_dir is not None:
            from pyarrow.fs import LocalFileSystem, copy_files

            dest = f"{self.root}/checkpoint_{datetime.now().strftime('%Y-%m-%d_%H-%M-%S.%f')}"
            plain = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
            (Path(checkpoint_dir) / SCORE_FILE).write_text(json.dumps(plain))
            self.fs.create_dir(dest, recursive=True)
            copy_files(str(checkpoint_dir), dest, source_filesystem=LocalFileSystem(),
                       destination_filesystem=self.fs)
            self.reported.append((dest, plain))
            self._prune()
        if "history" in metrics:  # the final report of the loop
            self.final = metrics
        self._barrier()

    def _prune(self) -> None:
        """Keep the best `keep` by eval loss, and the latest whatever its score."""
        ckpts = self._checkpoints()
        if len(ckpts) <= self.keep:
            return
        latest = ckpts[-1]
        scored = sorted((s if (s := self._score(p)) is not None else float("inf"), p) for p in ckpts)
        keep = {p for _, p in scored[:self.keep]} | {latest}
        for p in ckpts:
            if p not in keep:
                self.fs.delete_dir(p)

    def _barrier(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.barrier()
