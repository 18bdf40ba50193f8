"""Cluster backends: where the train stage runs. One `ClusterBackend` per cluster kind.

    class ClusterBackend(Protocol):
        def plan(self, cfg, ctx) -> dict: ...        # what it would create; no side effects
        def __enter__(self) -> "ClusterBackend": ...  # bring up or connect
        def run_training(self, cfg, task) -> TrainOutputs: ...  # the train stage's outputs
        def __exit__(self, *exc) -> None: ...         # take down what it brought up

The training code (`llmops.training.loop.fit`) is the same for all of them; only where it runs differs.
"""

from __future__ import annotations

from typing import Protocol

from omegaconf import DictConfig

from llmops.run import TrainingTask, TrainOutputs


class ClusterBackend(Protocol):
    def plan(self, cfg: DictConfig, ctx) -> dict: ...

    def __enter__(self) -> "ClusterBackend": ...

    def run_training(self, cfg: DictConfig, task: TrainingTask) -> TrainOutputs: ...

    def __exit__(self, *exc) -> None: ...


def get_backend(cfg: DictConfig) -> ClusterBackend:
    kind = str(getattr(cfg.cluster.kind, "value", cfg.cluster.kind))
    if kind == "local":
        from llmops.clusters.local import LocalBackend

        return LocalBackend(cfg)
    if kind == "ray":
        from llmops.clusters.ray_jobs import RayJobsBackend

        return RayJobsBackend(cfg)
    if kind == "codeflare":  # KubeRay: cluster.mode picks the object llmops applies
        mode = str(getattr(cfg.cluster.mode, "value", cfg.cluster.mode))
        if mode == "rayjob":
            from llmops.clusters.rayjob import RayJobBackend

            return RayJobBackend(cfg)
        from llmops.clusters.raycluster import RayClusterBackend

        return RayClusterBackend(cfg)
    if kind == "kubeflow":
        from llmops.clusters.kubeflow import KubeflowBackend

        return KubeflowBackend(cfg)
    raise ValueError(f"cluster.kind: unknown kind {kind!r}")
