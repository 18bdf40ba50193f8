"""The README's main job, through the real CLI in a subprocess: real Ray, real files, real templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def llmops(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """One quickstart run from a folder outside the repo (as an installed user would)."""
    work = tmp_path_factory.mktemp("qs")
    run_dir = work / "run"
    p = llmops("run", "quickstart", f"hydra.run.dir={run_dir}", f"paths.cache_dir={work / 'cache'}",
               cwd=work)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return work, run_dir, p


def test_quickstart_state_contract(quickstart_run):
    work, run_dir, p = quickstart_run
    st = json.loads((run_dir / "state.json").read_text())
    assert st["recipe"] == "quickstart" and st["run_id"].startswith("quickstart-")
    stages = st["stages"]
    assert all(stages[s]["status"] == "done" for s in
               ["prepare_data", "train", "export", "deploy", "smoke_test"]), stages
    prep = stages["prepare_data"]["outputs"]
    assert prep["blocks"]["train"] > 0 and prep["blocks"]["validation"] > 0
    assert prep["tokens"]["train"] == prep["blocks"]["train"] * 128
    m = stages["train"]["outputs"]["metrics"]
    for k in ("train_loss", "eval_loss", "perplexity", "tokens_per_s", "global_step"):
        assert m[k] is not None and m[k] > 0, k
    assert abs(m["perplexity"] - 2.718281828 ** m["eval_loss"]) < 1e-3 * m["perplexity"]
    # a tiny model trained for one epoch beats a uniform guess over its 2,048-token vocabulary
    assert m["perplexity"] < 2048
    assert stages["train"]["outputs"]["checkpoint_uri"]
    ex = stages["export"]["outputs"]
    assert ex["model_uri"].endswith("/hf/") and ex["caikit_uri"].endswith("/caikit/")
    dep = stages["deploy"]["outputs"]
    assert dep["applied"] is False and len(dep["manifests"]) >= 2
    smoke = stages["smoke_test"]["outputs"]
    assert smoke["prompt"] == "The module provides" and smoke["tokens"] > 0
    assert smoke["reply"] in p.stdout  # shown on the console too


def test_quickstart_model_loads_and_is_servable(quickstart_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, run_dir, _ = quickstart_run
    st = json.loads((run_dir / "state.json").read_text())
    hf = Path(st["stages"]["export"]["outputs"]["model_uri"][len("file://"):])
    assert (hf / "model.safetensors").is_file() and not list(hf.glob("*.bin"))
    assert json.loads((hf / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"
    assert (hf / "vocab.json").is_file() and (hf / "merges.txt").is_file()
    assert (hf / "llmops-manifest.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(hf)
    tok = AutoTokenizer.from_pretrained(hf)
    out = model.generate(**tok("The module provides", return_tensors="pt"), max_new_tokens=4,
                         do_sample=False)
    assert out.shape[1] > 3
    caikit = Path(st["stages"]["export"]["outputs"]["caikit_uri"][len("file://"):])
    import yaml

    conf = yaml.safe_load((caikit / "config.yml").read_text())
    assert conf["module_id"] == "f9181353-4ccf-4572-bd1e-f12bcda26792"
    assert conf["artifact_path"] == "artifacts" and (caikit / "artifacts" / "model.safetensors").is_file()
    prov = json.loads((hf / "llmops-provenance.json").read_text())
    assert prov["run_id"] == st["run_id"] and prov["versions"]["transformers"]


def test_quickstart_run_dir_has_metrics_plot_and_masked_config(quickstart_run):
    _, run_dir, _ = quickstart_run
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r and "learning_rate" in r for r in recs)
    assert any("eval_loss" in r and "perplexity" in r for r in recs)
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "provenance.json").is_file()


def test_rerun_in_same_directory_skips_finished_stages(quickstart_run):
    work, run_dir, _ = quickstart_run
    before = json.loads((run_dir / "state.json").read_text())
    p = llmops("resume", str(run_dir), cwd=work)
    assert p.returncode == 0, p.stderr[-3000:]
    after = json.loads((run_dir / "state.json").read_text())
    assert after["run_id"] == before["run_id"]
    for name, s in after["stages"].items():
        assert s["status"] == "done" and s.get("reused") is True, name
        assert s["fingerprint"] == before["stages"][name]["fingerprint"]
