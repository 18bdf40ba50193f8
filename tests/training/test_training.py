"""Training: preflight errors before any cluster work, LoRA export, resume after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmops.pipeline import engine
from llmops.training import loop as training
from llmops.training import modeling
from llmops.core.errors import LLMOpsError

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["dataset.max_train_blocks=128", "dataset.max_eval_blocks=8", "dataset.block_size=64",
         "training.per_device_train_batch_size=8", "training.per_device_eval_batch_size=8"]


@pytest.fixture
def prepared(compose, tmp_path):
    """Run prepare_data once (the real stage) and hand back its outputs and run dir."""
    def _p(*overrides: str):
        cfg = compose("quickstart", "stages=[prepare_data]", *SMALL, *overrides)
        out = engine.run(cfg, tmp_path / "run")
        return cfg, out.state.outputs("prepare_data")
    return _p


def test_lora_target_the_model_lacks_is_named(compose, prepared):
    cfg, data = prepared()
    bad = compose("quickstart", *SMALL, "training=lora", "training.lora.target_modules=[q_proj]")
    with pytest.raises(LLMOpsError, match=r"training.lora.target_modules: \['q_proj'\] not in the model.*c_attn"):
        training.preflight(bad, data)


def test_fp16_on_cpu_and_bf16_without_support(compose, prepared):
    _, data = prepared()
    with pytest.raises(LLMOpsError, match="training.precision = fp16 needs a GPU"):
        training.preflight(compose("quickstart", *SMALL, "training.precision=fp16"), data)
    bf16 = compose("quickstart", *SMALL, "training.precision=bf16")
    if modeling.cpu_has_bf16():
        training.preflight(bf16, data)  # this CPU has it: accepted
    else:
        with pytest.raises(LLMOpsError, match="bf16 but this CPU has no native bf16"):
            training.preflight(bf16, data)


def _tiny_pretrained(folder: Path, tokenizer_dir: str, n_positions: int = 64) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=32,
                                       n_layer=1, n_head=2))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_block_size_larger_than_pretrained_context(compose, prepared, tmp_path):
    _, data = prepared()
    folder = _tiny_pretrained(tmp_path / "m", data.tokenizer_dir, n_positions=32)
    cfg = compose("quickstart", *SMALL, f"model.name_or_path={folder}", f"model.tokenizer={folder}")
    with pytest.raises(LLMOpsError, match=r"dataset.block_size = 64 is larger than the model's context \(32"):
        training.preflight(cfg, data)


def test_model_folder_without_weights_or_of_wrong_architecture(compose, prepared, tmp_path):
    _, data = prepared()
    folder = _tiny_pretrained(tmp_path / "m", data.tokenizer_dir)
    for w in folder.glob("*.safetensors"):
        w.unlink()
    cfg = compose("quickstart", *SMALL, f"model.name_or_path={folder}", f"model.tokenizer={folder}")
    tok = modeling.load_tokenizer(data.tokenizer_dir)
    with pytest.raises(LLMOpsError, match="holds no weights"):
        modeling.build_model(cfg, tok)
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (vit / "model.safetensors").write_bytes(b"")
    cfg = compose("quickstart", *SMALL, f"model.name_or_path={vit}", f"model.tokenizer={folder}")
    with pytest.raises(LLMOpsError, match="not a causal language model"):
        modeling.build_model(cfg, tok)


@pytest.mark.slow
def test_lora_export_is_a_merged_plain_model_with_the_adapter_beside_it(compose, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    cfg = compose("quickstart", "stages=[prepare_data,train,export]", *SMALL, "training=lora",
                  "training.max_steps=4", "training.eval_steps=2", "training.lr=1e-2")
    st = engine.run(cfg, tmp_path / "run").state.data["stages"]
    hf = Path(st["export"]["outputs"]["model_uri"][len("file://"):])
    adapter = Path(st["export"]["outputs"]["adapter_uri"][len("file://"):])
    with safe_open(hf / "model.safetensors", "pt") as f:
        keys = list(f.keys())
        merged = f.get_tensor("transformer.h.0.attn.c_attn.weight")
    assert not any("lora" in k for k in keys)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(hf)  # a plain HF model: no peft needed
    # the same seed rebuilds the initial weights: merging the adapter changed them
    tok = modeling.load_tokenizer(st["prepare_data"]["outputs"]["tokenizer_dir"])
    init = modeling.build_model(compose("quickstart", *SMALL), tok)
    assert not init.transformer.h[0].attn.c_attn.weight.detach().equal(merged)


def _llmops(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "llmops.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _kill_train_workers(proc: subprocess.Popen) -> int:
    import psutil

    killed = 0
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()) or child.name().startswith("ray::RayTrainWorker"):
                child.send_signal(signal.SIGKILL)
                killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


@pytest.mark.slow
def test_kill_a_worker_mid_training_then_rerun_resumes_without_repeating_steps(tmp_path):
    # an embedded Ray: the workers to kill are children of the llmops process
    args = ["run", "quickstart", "stages=[prepare_data,train]", *SMALL, "training.max_steps=24",
            "cluster.ray_idle_timeout_s=0", "cluster.trainer=ray",
            "training.eval_steps=6", "training.logging_steps=1", f"paths.cache_dir={tmp_path / 'cache'}",
            f"storage.root={tmp_path / 'models'}"]
    ref_dir, crash_dir = tmp_path / "ref", tmp_path / "crash"
    ref = _llmops(*args, f"hydra.run.dir={ref_dir}")
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out[-4000:]

    crash = _llmops(*args, f"hydra.run.dir={crash_dir}")
    deadline = time.time() + 300
    # a checkpoint counts once Ray registered it in its snapshot, not when its folder appears
    while time.time() < deadline and not list((crash_dir / "checkpoints").glob("*/checkpoint_manager_snapshot.json")):
        assert crash.poll() is None, crash.stdout.read()[-4000:]
        time.sleep(0.2)
    assert _kill_train_workers(crash) >= 1
    out, _ = crash.communicate(timeout=300)
    assert crash.returncode != 0, out[-3000:]
    st = json.loads((crash_dir / "state.json").read_text())["stages"]
    assert st["prepare_data"]["status"] == "done" and st["train"]["status"] == "failed"
    steps_before = _logged_steps(crash_dir)

    _resume_from_checkpoint(crash_dir)
    st = json.loads((crash_dir / "state.json").read_text())["stages"]
    assert st["prepare_data"].get("reused") is True
    m, r = st["train"]["outputs"]["metrics"], json.loads((ref_dir / "state.json").read_text())
    r = r["stages"]["train"]["outputs"]["metrics"]
    assert m["global_step"] == r["global_step"] == 24
    assert m["eval_loss"] == pytest.approx(r["eval_loss"], rel=1e-3)
    # the resumed run logged steps after the checkpoint only once, and none twice overall
    steps = _logged_steps(crash_dir)
    resumed = steps[len(steps_before):]
    assert resumed and resumed[0] > 6 - 1 and resumed[-1] == 24
    assert len(set(resumed)) == len(resumed)


def _logged_steps(run_dir) -> list[int]:
    """The steps the run logged a training loss at, in the order logged (metrics.jsonl)."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


def _resume_from_checkpoint(run_dir) -> None:
    again = _llmops("resume", str(run_dir))
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-4000:]
    assert "resuming from checkpoint" in out


def _ray_children(proc: subprocess.Popen) -> list[str]:
    import psutil

    names = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "raylet" in cmd or "gcs_server" in cmd or "RayTrainWorker" in cmd:
            names.append(cmd[:100])
    return names


@pytest.mark.slow
def test_trainer_process_trains_like_ray_train_and_resumes_after_a_kill(tmp_path):
    # the same job with Ray Train and in the llmops process: the same losses; killed mid-way,
    # the in-process run resumes from its last checkpoint and ends where Ray Train's did
    args = ["run", "quickstart", "stages=[prepare_data,train]", *SMALL, "training.max_steps=24",
            "training.eval_steps=6", "training.logging_steps=1", f"paths.cache_dir={tmp_path / 'cache'}",
            f"storage.root={tmp_path / 'models'}"]
    ref_dir, crash_dir = tmp_path / "ray", tmp_path / "process"
    ref = _llmops(*args, "cluster.trainer=ray", f"hydra.run.dir={ref_dir}")
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out[-4000:]

    crash = _llmops(*args, "cluster.trainer=process", f"hydra.run.dir={crash_dir}")
    deadline, ray_seen = time.time() + 300, []
    while time.time() < deadline and not list((crash_dir / "checkpoints").glob(
            "*/checkpoint_*/checkpoint/trainer_state.json")):
        assert crash.poll() is None, crash.stdout.read()[-4000:]
        ray_seen += _ray_children(crash)
        time.sleep(0.2)
    assert ray_seen == []  # no Ray was started for it
    crash.kill()
    crash.communicate(timeout=60)
    st = json.loads((crash_dir / "state.json").read_text())["stages"]
    assert st["train"]["status"] == "running"
    steps_before = _logged_steps(crash_dir)

    _resume_from_checkpoint(crash_dir)
    m = json.loads((crash_dir / "state.json").read_text())["stages"]["train"]["outputs"]["metrics"]
    r = json.loads((ref_dir / "state.json").read_text())["stages"]["train"]["outputs"]["metrics"]
    assert m["global_step"] == r["global_step"] == 24
    assert m["eval_loss"] == pytest.approx(r["eval_loss"], rel=1e-3)
    losses = {}
    for d in (ref_dir, crash_dir):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        losses[d] = {row["step"]: row["loss"] for row in rows if "loss" in row}
    assert losses[crash_dir] == pytest.approx(losses[ref_dir], rel=1e-4)
    steps = _logged_steps(crash_dir)
    resumed = steps[len(steps_before):]
    assert resumed and resumed[0] > 6 - 1 and resumed[-1] == 24
