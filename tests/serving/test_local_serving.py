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
    assert r["tokens"] == 8 and r["attempts"] == 1
    assert r["prompt_tokens"] == len(model.tokenizer("The history of")["input_ids"])
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
    assert code == 400 and "expected a JSON object" in body["error"]["message"]
    code, body = _post(url + "/v1/completions", json.dumps({"prompt": "x", "max_tokens": -1}).encode())
    assert code == 400 and "max_tokens" in body["error"]["message"]
    code, body = _post(url + "/v1/completions", json.dumps({"prompt": ""}).encode())
    assert code == 400 and "prompt" in body["error"]["message"]
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
    p = subprocess.Popen([sys.executable, "-m", "llmops.cli", "serve", str(run), "--port", str(free_port),
                          "--threads", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def test_llmops_serve_refuses_a_thread_count_below_one(exported, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"run_id": RUN_ID, "recipe": "quickstart", "stages": {
        "export": {"status": "done", "outputs": {"model_uri": exported}}}}))
    assert cli.main(["serve", str(run), "--threads", "0"]) == 1
    assert "--threads 0: expected a positive number of threads" in capsys.readouterr().err
    assert not (run / "serve.json").exists()


# ------------------------------------------------------------------ malformed requests: 4xx, JSON
@pytest.fixture(scope="module")
def own_tiny_model_dir(tmp_path_factory):
    """A random tiny GPT-2 (64 positions) with a BPE trained here by llmops's own tokenizer
    trainer: no downloaded files needed."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmops.data import train_tokenizer

    out = tmp_path_factory.mktemp("own-tiny-gpt2")
    rows = [f"The module provides function number {i} for the history of testing." for i in range(200)]
    train_tokenizer(rows, 320, out, model_max_length=64)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)
                    ).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def own_served(own_tiny_model_dir):
    with server.BackgroundServer(server.LocalModel(own_tiny_model_dir), "tiny") as url:
        yield url


def _raw(url: str, request: bytes) -> tuple[int, dict, dict]:
    """Send raw bytes, read the whole answer (the connection is closed after it): (status,
    headers, JSON body). A dropped connection or a body that is not JSON fails the test."""
    import socket

    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data, "the server dropped the connection without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", len(body)))
    return int(lines[0].split()[1]), headers, json.loads(body[:n])


def _request(method: str, path: str, body: bytes | None = None, length: str | None = "auto",
             extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}"
    if body is not None and length == "auto":
        head += f"Content-Length: {len(body)}\r\n"
    elif length not in (None, "auto"):
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode() + (body or b"")


C = "/v1/completions"
MALFORMED = [
    ("not JSON", _request("POST", C, b"{not json"), 400, "body"),
    ("a JSON list", _request("POST", C, b"[1, 2]"), 400, "expected a JSON object"),
    ("a JSON string", _request("POST", C, b'"hi"'), 400, "expected a JSON object"),
    ("not UTF-8", _request("POST", C, b'{"prompt": "\xff\xfe"}'), 400, "UTF-8"),
    ("nested too deep", _request("POST", C, b"[" * 200000), 400, "body"),
    ("prompt a number", _request("POST", C, b'{"prompt": 5}'), 400, "prompt"),
    ("prompt a list of numbers", _request("POST", C, b'{"prompt": [1, 2]}'), 400, "prompt"),
    ("max_tokens a string", _request("POST", C, b'{"prompt": "x", "max_tokens": "3"}'), 400, "max_tokens"),
    ("max_tokens negative", _request("POST", C, b'{"prompt": "x", "max_tokens": -1}'), 400, "max_tokens"),
    ("max_tokens huge", _request("POST", C, b'{"prompt": "x", "max_tokens": 1000000000000}'), 400, "max_tokens"),
    ("max_tokens a float", _request("POST", C, b'{"prompt": "x", "max_tokens": 2.5}'), 400, "max_tokens"),
    ("max_tokens a bool", _request("POST", C, b'{"prompt": "x", "max_tokens": true}'), 400, "max_tokens"),
    ("temperature NaN", _request("POST", C, b'{"prompt": "x", "temperature": NaN}'), 400, "NaN"),
    ("temperature Infinity", _request("POST", C, b'{"prompt": "x", "temperature": Infinity}'), 400, "Infinity"),
    ("temperature overflowing to inf", _request("POST", C, b'{"prompt": "x", "temperature": 1e999}'), 400,
     "temperature"),
    ("temperature negative", _request("POST", C, b'{"prompt": "x", "temperature": -0.5}'), 400, "temperature"),
    ("temperature a string", _request("POST", C, b'{"prompt": "x", "temperature": "hot"}'), 400, "temperature"),
    ("seed a string", _request("POST", C, b'{"prompt": "x", "seed": "s"}'), 400, "seed"),
    ("prompt longer than the context", _request("POST", C, json.dumps({"prompt": "history " * 200}).encode()),
     400, "context"),
    ("unknown model", _request("POST", C, b'{"prompt": "x", "model": "other"}'), 404, "does not exist"),
    ("body too large", _request("POST", C, None, length=str(server.MAX_BODY + 1)), 413, "more than"),
    ("Content-Length not a number", _request("POST", C, None, length="lots"), 400, "Content-Length"),
    ("no Content-Length", _request("POST", C, None, length=None), 411, "Content-Length"),
    ("chunked body", _request("POST", C, b"5\r\nhello\r\n0\r\n\r\n", length=None,
                              extra="Transfer-Encoding: chunked\r\n"), 411, "Content-Length"),
    ("unknown path", _request("POST", "/v1/chat/nothing", b"{}"), 404, "no route"),
    ("unknown path GET", _request("GET", "/admin"), 404, "no route"),
    ("GET on completions", _request("GET", C), 405, "not allowed"),
    ("DELETE on completions", _request("DELETE", C), 405, "not allowed"),
    ("PUT on models", _request("PUT", "/v1/models", b"{}"), 405, "not allowed"),
    ("POST on health", _request("POST", "/health", b"{}"), 405, "not allowed"),
    ("garbage request line", b"HELLO THERE\r\n\r\n", 400, ""),
]


@pytest.mark.parametrize("what,request_bytes,code,says", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_a_4xx_json_error(own_served, what, request_bytes, code, says):
    status, headers, body = _raw(own_served, request_bytes)
    assert status == code, body
    assert headers["content-type"] == "application/json"
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str) and err["type"]
    assert says in err["message"]
    if code == 405:
        assert headers["allow"] in ("GET", "POST")


def test_server_still_serves_after_malformed_requests(own_served):
    for _, request_bytes, _, _ in MALFORMED:
        _raw(own_served, request_bytes)
    status, _, body = _raw(own_served, _request("POST", C, b'{"prompt": "The module", "max_tokens": 3, '
                                                          b'"temperature": 0}'))
    assert status == 200 and body["usage"]["completion_tokens"] <= 3
    assert isinstance(body["choices"][0]["text"], str)
