"""`llmops serve RUN_DIR`: the run's exported model behind vLLM's OpenAI completions API.

    POST /v1/completions  {"model", "prompt", "max_tokens", "temperature"}  (also /openai/v1/...)
    GET  /v1/models       GET /health

Standard library HTTP server plus transformers ``generate``; one request generates at a time.
The served model name is the InferenceService name the run uses, so ``llmops call`` sends the
same request to this server as to vLLM on KServe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from llmops.core.errors import LLMOpsError

log = logging.getLogger("llmops")

MAX_BODY = 1 << 20


class LocalModel:
    """An exported HF folder loaded with transformers, completing prompts."""

    def __init__(self, path: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise LLMOpsError(f"{path}: not an exported model (no config.json)")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path))
        self.model.eval()
        self._torch = torch
        self._lock = threading.Lock()
        self.max_positions = int(getattr(self.model.config, "n_positions", 0)
                                 or getattr(self.model.config, "max_position_embeddings", 0) or 1024)

    def complete(self, prompt: str, max_tokens: int, temperature: float = 0.0, seed: Optional[int] = None) -> dict:
        """Greedy when temperature is 0, sampled otherwise. Returns text and token counts."""
        torch = self._torch
        enc = self.tokenizer(prompt, return_tensors="pt")
        n_in = int(enc["input_ids"].shape[1])
        if n_in == 0:
            raise ValueError("prompt: empty after tokenization")
        max_tokens = max(0, min(int(max_tokens), self.max_positions - n_in))
        kwargs = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.eos_token_id}
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=0)
        else:
            kwargs.update(do_sample=False)
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(**enc, **kwargs) if max_tokens else enc["input_ids"]
        new = out[0, n_in:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        eos = self.tokenizer.eos_token_id
        stopped = len(new) < max_tokens or (len(new) and int(new[-1]) == eos)
        return {"text": text, "prompt_tokens": n_in, "completion_tokens": int(len(new)),
                "finish_reason": "stop" if stopped else "length"}


def _handler(model: LocalModel, name: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = "llmops-serve"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: requests go to the llmops logger at DEBUG
            log.debug("serve: " + fmt, *args)

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, typ: str = "invalid_request_error") -> None:
            self._send(code, {"object": "error", "message": message, "type": typ, "code": code})

        def do_GET(self):
            path = self.path.split("?")[0].rstrip("/")
            if path in ("/health", "/v1/health", ""):
                self._send(200, {"status": "ok", "model": name})
            elif path in ("/v1/models", "/openai/v1/models"):
                self._send(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "llmops", "root": str(model.path)}]})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self):
            path = self.path.split("?")[0].rstrip("/")
            if path not in ("/v1/completions", "/openai/v1/completions"):
                self._error(404, f"no route {self.path}", "not_found")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._error(413 if length > MAX_BODY else 400, "body too large or unreadable")
                return
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(req, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as e:
                self._error(400, f"body is not a JSON object: {e}")
                return
            if req.get("model") not in (None, name):
                self._error(404, f"The model `{req.get('model')}` does not exist; this server serves "
                                 f"`{name}`", "NotFoundError")
                return
            prompt = req.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            max_tokens = req.get("max_tokens", 16)
            temperature = req.get("temperature", 1.0)
            if not isinstance(prompt, str) or not prompt:
                self._error(400, "prompt: expected a non-empty string")
                return
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
                self._error(400, "max_tokens: expected an integer >= 0")
                return
            if not isinstance(temperature, (int, float)) or temperature < 0:
                self._error(400, "temperature: expected a number >= 0")
                return
            try:
                r = model.complete(prompt, max_tokens, float(temperature), req.get("seed"))
            except Exception as e:  # the request failed; the server keeps serving
                log.warning("serve: generation failed: %s", e)
                self._error(500, f"generation failed: {e}", "InternalServerError")
                return
            self._send(200, {
                "id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
                "created": int(time.time()), "model": name,
                "choices": [{"index": 0, "text": r["text"], "logprobs": None,
                             "finish_reason": r["finish_reason"]}],
                "usage": {"prompt_tokens": r["prompt_tokens"],
                          "completion_tokens": r["completion_tokens"],
                          "total_tokens": r["prompt_tokens"] + r["completion_tokens"]},
            })

    return Handler


def make_server(model: LocalModel, name: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to (host, port); port 0 picks a free one (server.server_address[1])."""
    try:
        srv = ThreadingHTTPServer((host, port), _handler(model, name))
    except OSError as e:
        raise LLMOpsError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    srv.daemon_threads = True
    return srv


class BackgroundServer:
    """`with BackgroundServer(model, name) as url:` serves on a free loopback port in a thread."""

    def __init__(self, model: LocalModel, name: str, host: str = "127.0.0.1", port: int = 0):
        self.srv = make_server(model, name, host, port)
        self.thread = threading.Thread(target=self.srv.serve_forever, name="llmops-serve", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.srv.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=10)


def local_model_dir(cfg, model_uri: str, tmp: Path) -> Path:
    """A local folder holding the exported HF model at `model_uri` (verified by its manifest)."""
    if str(model_uri).startswith("file://"):  # a local folder whatever storage the run used
        from llmops.storage.local import LocalStore

        return Path(LocalStore().get_dir(model_uri, tmp))
    if cfg is None:
        raise LLMOpsError(f"{model_uri}: the run's config.yaml is needed to read this storage")
    from llmops.storage import get_store

    return Path(get_store(cfg).get_dir(model_uri, tmp))
