"""`llmops serve`'s server, the inference clients, `llmops call` and the smoke_test stage, with a
real tiny GPT-2 served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request

import pytest

from llmops import cli
from llmops.serving import smoke
from llmops.core.errors import LLMOpsError
from llmops.serving import client, server
from tests.serving.conftest import RUN_ID, run_after_export


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    model = server.LocalModel(tiny_model_dir)
    with server.BackgroundServer(model, "tiny") as url:
        yield model, url


def _direct(model, prompt, n):
    import torch

    enc = model.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.model.generate(**enc, max_new_tokens=n, do_sample=False,
                                   pad_token_id=model.tokenizer.eos_token_id)
    return model.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_completion_matches_generate_in_process(served):
    model, url = served
    r = client.complete(url, "The history of", max_tokens=8, model="tiny")
    assert r["reply"] == _direct(model, "The history of", 8)
    assert r["tokens"] == 8 and r["prompt_tokens"] == 3 and r["attempts"] == 1
    # the HF server's path answers the same
    r2 = client.complete(url, "The history of", api="hf-openai", max_tokens=8, model="tiny")
    assert r2["reply"] == r["reply"]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, json.loads(r.read())


def _post(url, body: bytes):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_health_and_bad_requests(served):
    _, url = served
    assert _get(url + "/health") == (200, {"status": "ok", "model": "tiny"})
    code, body = _get(url + "/v1/models")
    assert code == 200 and [m["id"] for m in body["data"]] == ["tiny"]
    code, body = _post(url + "/v1/completions", b"{not json")
    assert code == 400 and "not a JSON object" in body["message"]
    code, body = _post(url + "/v1/completions", json.dumps({"prompt": "x", "max_tokens": -1}).encode())
    assert code == 400 and "max_tokens" in body["message"]
    code, body = _post(url + "/v1/completions", json.dumps({"prompt": ""}).encode())
    assert code == 400 and "prompt" in body["message"]
    with pytest.raises(LLMOpsError, match=r"HTTP 404 .*The model `other` does not exist"):
        client.complete(url, "hi", model="other", retries=0)


def test_unreachable_server_retries_then_says_why(free_port):
    with pytest.raises(LLMOpsError, match=r"cannot reach .* \(gave up after 3 attempts"):
        client.complete(f"http://127.0.0.1:{free_port}", "hi", retries=2, retry_interval_s=0.01)


def test_call_command_url_and_errors(served, capsys, tmp_path):
    _, url = served
    assert cli.main(["call", url, "Once upon", "--max-tokens", "4", "--model", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once upon") and "4 tokens" in err
    assert cli.main(["call", str(tmp_path / "nope"), "x"]) == 1
    assert "neither a URL" in capsys.readouterr().err
    # a run directory that was never deployed nor served: say how to serve it
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text(json.dumps({"run_id": RUN_ID, "stages": {}}))
    assert cli.main(["call", str(tmp_path / "run"), "x"]) == 1
    assert "llmops serve" in capsys.readouterr().err


def test_smoke_stage_local(serving_cfg, exported, tmp_path, caplog):
    import logging

    cfg = serving_cfg("vllm", "smoke_test.max_new_tokens=6", "smoke_test.prompt=Hello world", s3=False)
    with caplog.at_level(logging.INFO, logger="llmops"):
        r = run_after_export(cfg, tmp_path / "run", {"model_uri": exported}, stages=("smoke_test",))
    out = r.state.outputs("smoke_test")
    assert out.prompt == "Hello world" and out.tokens == 6 and out.target == "local"
    assert isinstance(out.reply, str) and out.latency_s > 0
    assert any("smoke_test:" in rec.message and out.reply in rec.message for rec in caplog.records)


def test_smoke_stage_refuses_a_tampered_export(serving_cfg, exported, tmp_path):
    from llmops.storage.local import to_path

    (to_path(exported) / "config.json").write_text("{}")  # content no longer matches the manifest
    cfg = serving_cfg("vllm", s3=False)
    with pytest.raises(LLMOpsError, match="does not match its sha256"):
        run_after_export(cfg, tmp_path / "run", {"model_uri": exported}, stages=("smoke_test",))


@pytest.mark.slow
def test_llmops_serve_and_call_run_dir(exported, tmp_path, free_port):
    """The CLI end to end: `llmops serve RUN_DIR` in a subprocess, `llmops call RUN_DIR`."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"run_id": RUN_ID, "recipe": "quickstart", "stages": {
        "export": {"status": "done", "outputs": {"model_uri": exported}}}}))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.Popen([sys.executable, "-m", "llmops.cli", "serve", str(run), "--port", str(free_port)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "serve.json").exists():
            assert p.poll() is None, p.stdout.read()
            assert time.time() < deadline, "llmops serve did not start"
            time.sleep(0.2)
        r = subprocess.run([sys.executable, "-m", "llmops.cli", "call", str(run), "The", "--max-tokens", "3"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("The") and "3 tokens" in r.stderr
        assert f"127.0.0.1:{free_port}" in r.stderr
    finally:
        p.terminate()
        p.wait(timeout=30)
    assert not (run / "serve.json").exists()  # SIGTERM stops it cleanly
