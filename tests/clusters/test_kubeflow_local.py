"""cluster=kubeflow end to end with real training: cluster.mode=local through the Kubeflow SDK's
local process backend (a venv, pip, torchrun: real processes here), the same tiny job on
cluster=local, cluster=ray and kubeflow local compared, and a TrainJob's own command run by a
fake kubelet (the stand-in API server executes the node container's command here)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

# the Kubeflow SDK is installed beside llmops without its pins (.ci/run; pyproject.toml says why)
pytest.importorskip("kubeflow.trainer", reason="the Kubeflow SDK is not installed: pip install --no-deps "
                    "'kubeflow==0.5.*' 'kubeflow-trainer-api>=2.3,<2.4' 'kubeflow-katib-api>=0.19,<0.20'")

from llmops.pipeline import engine

SMALL = ["dataset.max_train_blocks=64", "dataset.max_eval_blocks=8", "dataset.block_size=64",
         "training.per_device_train_batch_size=8", "training.per_device_eval_batch_size=8",
         "training.eval_steps=3", "training.logging_steps=1", "cluster.poll_interval_s=0.5"]
# the same seed, data and steps give the same final eval loss on every backend (measured: equal
# to 7 digits: 7.4343596 on all three); the tolerance leaves room for float reduction order only
REL_TOL = 1e-4

pytestmark = pytest.mark.slow


def _train(cfg, run_dir: Path) -> dict:
    return engine.run(cfg, run_dir).state.data["stages"]


def _leftovers(job_prefix: str) -> list:
    from llmops.clusters.kubeflow import JOB_MARK_ENV

    marked = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and f"{JOB_MARK_ENV}={job_prefix}".encode() in (d / "environ").read_bytes():
                marked.append(int(d.name))
        except OSError:
            pass
    venvs = [p for p in Path(tempfile.gettempdir()).glob(f"{job_prefix}*") if (p / "pyvenv.cfg").exists()]
    return marked + venvs


def test_local_mode_writes_the_artifacts_of_cluster_local_and_resumes(compose, tmp_path):
    cfg = compose("quickstart", "cluster=kubeflow", "cluster.mode=local", "run_id=kfl-e2e",
                  "stages=[prepare_data,train,export]", *SMALL, "training.max_steps=6")
    run = tmp_path / "run"
    st = _train(cfg, run)
    out = st["train"]["outputs"]
    assert out["metrics"]["global_step"] == 6
    hf = Path(st["export"]["outputs"]["model_uri"][len("file://"):])
    assert (hf / "model.safetensors").is_file() and (hf / "config.json").is_file()
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "eval_loss" in r] == [3, 6]
    assert recs[-1]["eval_loss"] == pytest.approx(out["metrics"]["eval_loss"])
    assert (run / "loss.png").is_file()
    ckpts = sorted((run / "checkpoints" / "kfl-e2e").glob("checkpoint_*/checkpoint/trainer_state.json"))
    assert ckpts and out["checkpoint_uri"].startswith((run / "checkpoints" / "kfl-e2e").as_uri())
    assert not _leftovers("kfl-e2e")  # no process, no venv left behind

    # a larger budget in the same run directory resumes from the latest checkpoint (step 6)
    more = compose("quickstart", "cluster=kubeflow", "cluster.mode=local", "run_id=kfl-e2e",
                   "stages=[prepare_data,train]", *SMALL, "training.max_steps=9")
    st = _train(more, run)
    assert st["train"]["outputs"]["metrics"]["global_step"] == 9
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps[-3:] == [7, 8, 9] and steps.count(7) == 1  # steps after 6 once, none repeated
    assert not _leftovers("kfl-e2e")


def test_the_same_job_on_local_ray_and_kubeflow_local_ends_at_the_same_eval_loss(compose, tmp_path, ray_head):
    common = ["stages=[prepare_data,train]", *SMALL, "training.max_steps=6", "seed=7"]
    losses = {}
    for name, cluster in [("local", ["cluster=local"]),
                          ("ray", ["cluster=ray", f"cluster.address={ray_head.address}"]),
                          ("kubeflow", ["cluster=kubeflow", "cluster.mode=local"])]:
        cfg = compose("quickstart", *cluster, f"run_id=same-{name}", *common)
        losses[name] = _train(cfg, tmp_path / name)["train"]["outputs"]["metrics"]["eval_loss"]
    print("final eval losses:", losses)
    assert losses["kubeflow"] == pytest.approx(losses["local"], rel=REL_TOL)
    assert losses["ray"] == pytest.approx(losses["local"], rel=REL_TOL)


def test_a_trainjob_command_trains_under_a_fake_kubelet(compose, tmp_path, monkeypatch):
    """mode=cluster end to end on this machine: the stand-in runs the TrainJob's node command
    (the SDK's here-document, torchrun, the base64 payload) with the Secret-backed env resolved."""
    from llmops.clusters.kubeflow import KubeflowBackend
    from tests.clusters.trainer_standin import TrainerStandIn

    s = TrainerStandIn(namespaces=("default",)).start()
    try:
        s.behaviour = "run"
        s.secrets[("default", "hub")] = {"token": "hub-token-from-secret-42"}
        monkeypatch.setenv("KUBECONFIG", s.kubeconfig(tmp_path / "kc"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        prep = compose("quickstart", "stages=[prepare_data]", *SMALL[:3], "run_id=kubelet-1")
        engine.run(prep, tmp_path / "run")
        cfg = compose("quickstart", "cluster=kubeflow", "run_id=kubelet-1", *SMALL, "training.max_steps=3",
                      "cluster.env_from=['HF_TOKEN=hub/token']")
        ctx = engine.open_run(cfg, tmp_path / "run")
        lines: list = []
        with KubeflowBackend(cfg, echo=lines.append) as b:
            out = b.run_training(cfg, ctx.training_task())
        assert out.metrics["global_step"] == 3 and out.model_uri
        assert "hub-token-from-secret-42" not in json.dumps(s.created)
        assert s.deleted == [("default", "kubelet-1")] and not s.running()
        assert any(ln.startswith("LLMOPS_EVENT fit_start") for ln in lines)  # the node's own log
    finally:
        s.stop()


def test_ctrl_c_in_local_mode_ends_every_process_of_the_job(compose, tmp_path):
    from llmops.clusters.kubeflow import KubeflowBackend

    prep = compose("quickstart", "stages=[prepare_data]", *SMALL[:3], "run_id=kfl-int")
    engine.run(prep, tmp_path / "run")
    cfg = compose("quickstart", "cluster=kubeflow", "cluster.mode=local", "run_id=kfl-int", *SMALL,
                  "training.max_steps=50")
    ctx = engine.open_run(cfg, tmp_path / "run")
    seen: list = []

    def interrupt(line: str) -> None:
        seen.append(line)
        if line.startswith("LLMOPS_EVENT fit_start"):  # the training process is up
            assert _leftovers("kfl-int")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with KubeflowBackend(cfg, echo=interrupt) as b:
            b.run_training(cfg, ctx.training_task())
    assert any(ln.startswith("LLMOPS_EVENT fit_start") for ln in seen)
    assert not _leftovers("kfl-int")
