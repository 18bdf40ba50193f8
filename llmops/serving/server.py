"""`llmops serve RUN_DIR`: the run's exported model behind vLLM's OpenAI completions API.

    POST /v1/completions  {"model", "prompt", "max_tokens", "temperature"}  (also /openai/v1/...)
    GET  /v1/models       GET /health

Standard library HTTP server plus transformers ``generate``; one request generates at a time.
A request it cannot serve gets a 4xx and a JSON error as vLLM and OpenAI send it,
``{"error": {"message", "type", "param", "code"}}``: a body that is not a JSON object (NaN and
Infinity literals included), a field of the wrong type or out of range, an unknown model (404), a
body over MAX_BODY (413) or without Content-Length (411), an unknown path (404), a wrong method
(405). Nothing a client sends makes it answer 500 or drop the connection unanswered.
The served model name is the InferenceService name the run uses, so ``llmops call`` sends the
same request to this server as to vLLM on KServe.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from llmops.core.errors import LLMOpsError

log = logging.getLogger("llmops")

MAX_BODY = 1 << 20  # bytes of a request body
MAX_TEMPERATURE = 100.0
READ_TIMEOUT_S = 30  # a request's headers and body arrive within this


class LocalModel:
    """An exported HF folder loaded with transformers, completing prompts. `threads`: torch's
    intra-op threads (None leaves torch's default)."""

    def __init__(self, path: Path, threads: Optional[int] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
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
            raise BadRequest(400, "prompt: empty after tokenization", param="prompt")
        if n_in >= self.max_positions:
            raise BadRequest(400, f"prompt: {n_in} tokens, the model's context holds "
                                  f"{self.max_positions}", param="prompt")
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


class BadRequest(ValueError):
    """A request the server cannot serve as asked: answered 4xx with the reason, never 500."""

    def __init__(self, code: int, message: str, typ: str = "BadRequestError", param: Optional[str] = None):
        super().__init__(message)
        self.code, self.message, self.type, self.param = code, message, typ, param


def _no_constant(name: str):
    raise BadRequest(400, f"body: {name} is not a JSON number (expected finite numbers only)")


def parse_body(raw: bytes) -> dict:
    """The request body as a JSON object; NaN/Infinity literals and anything else refused."""
    try:
        req = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadRequest(400, "body: not UTF-8 text (expected a JSON object)") from None
    except RecursionError:
        raise BadRequest(400, "body: JSON nested too deep") from None
    except ValueError as e:
        if isinstance(e, BadRequest):
            raise
        raise BadRequest(400, f"body: not JSON ({e}); expected a JSON object") from None
    if not isinstance(req, dict):
        raise BadRequest(400, f"body: a JSON {type(req).__name__}; expected a JSON object "
                              f'like {{"prompt": "...", "max_tokens": 16}}')
    return req


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def completion_args(req: dict, name: str, max_positions: int) -> dict:
    """The checked arguments of a completions request (OpenAI / vLLM field names)."""
    model = req.get("model")
    if model is not None and model != name:
        raise BadRequest(404, f"The model `{model}` does not exist; this server serves `{name}`",
                         "NotFoundError", "model")
    prompt = req.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest(400, f"prompt: expected a non-empty string, got {_kind(prompt)}", param="prompt")
    max_tokens = req.get("max_tokens", 16)
    if not _is_int(max_tokens) or not 0 <= max_tokens <= max_positions:
        raise BadRequest(400, f"max_tokens: expected an integer from 0 to {max_positions} (the "
                              f"model's context), got {_kind(max_tokens)}", param="max_tokens")
    temperature = req.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
            or not math.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise BadRequest(400, f"temperature: expected a number from 0 to {MAX_TEMPERATURE}, got "
                              f"{_kind(temperature)}", param="temperature")
    seed = req.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2 ** 63):
        raise BadRequest(400, f"seed: expected an integer from 0 to 2**63-1, got {_kind(seed)}", param="seed")
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": float(temperature), "seed": seed}


def _kind(v) -> str:
    text = json.dumps(v) if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _handler(model: LocalModel, name: str):
    routes = {"/health": "GET", "/v1/health": "GET", "": "GET", "/v1/models": "GET",
              "/openai/v1/models": "GET", "/v1/completions": "POST", "/openai/v1/completions": "POST"}

    class Handler(BaseHTTPRequestHandler):
        server_version = "llmops-serve"
        protocol_version = "HTTP/1.1"
        default_request_version = "HTTP/1.0"  # a garbled request line still gets a status line
        timeout = READ_TIMEOUT_S  # a client that stops sending mid-body does not hold a thread

        def log_message(self, fmt, *args):  # quiet: requests go to the llmops logger at DEBUG
            log.debug("serve: " + fmt, *args)

        def _send(self, code: int, body: dict, headers: Optional[dict] = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, code: int, message: str, typ: str = "BadRequestError",
                   param: Optional[str] = None, headers: Optional[dict] = None) -> None:
            self._send(code, {"error": {"message": message, "type": typ, "param": param, "code": code}},
                       headers)

        def send_error(self, code, message=None, explain=None):
            # the standard library's own refusals (bad request line, headers too long, ...): JSON too
            self.close_connection = True
            try:
                self._error(int(code), str(message or explain or HTTPStatus(code).phrase),
                            HTTPStatus(code).phrase.replace(" ", ""))
            except OSError:
                pass

        def _route(self) -> Optional[str]:
            path = self.path.split("?")[0].rstrip("/")
            want = routes.get(path)
            if want is None:
                self._error(404, f"no route {self.path}; this server answers {sorted(p for p in routes if p)}",
                            "NotFoundError")
                return None
            if self.command != want and not (self.command == "HEAD" and want == "GET"):
                self._error(405, f"{self.command} {path}: method not allowed (expected {want})",
                            "MethodNotAllowed", headers={"Allow": want})
                return None
            return path

        def _serve(self) -> None:
            keep = self.close_connection
            if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # a body left unread would be taken for the next request
            path = self._route()
            if path is None:
                return
            if want_get(path):
                self._get(path)
                return
            try:
                req = parse_body(self._read_body())
                self.close_connection = keep  # the body is read: the connection can go on
                args = completion_args(req, name, model.max_positions)
                r = model.complete(args["prompt"], args["max_tokens"], args["temperature"], args["seed"])
            except BadRequest as e:
                self._error(e.code, e.message, e.type, e.param)
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

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise BadRequest(411, "Transfer-Encoding is not supported: send the body with a "
                                      "Content-Length", "LengthRequired")
            raw = self.headers.get("Content-Length")
            if raw is None:
                raise BadRequest(411, "Content-Length: required (the JSON body's size in bytes)",
                                 "LengthRequired")
            try:
                length = int(raw)
            except ValueError:
                length = -1
            if length < 0:
                raise BadRequest(400, f"Content-Length: {raw!r} is not a size in bytes")
            if length > MAX_BODY:
                raise BadRequest(413, f"body: {length} bytes, more than the {MAX_BODY} this server "
                                      "accepts", "PayloadTooLarge")
            try:
                data = self.rfile.read(length)
            except (TimeoutError, OSError):
                raise BadRequest(408, f"body: not received within {READ_TIMEOUT_S} s", "RequestTimeout") from None
            if len(data) < length:
                raise BadRequest(400, f"body: {len(data)} bytes received, Content-Length said {length}")
            return data

        def _get(self, path: str) -> None:
            if path in ("/health", "/v1/health", ""):
                self._send(200, {"status": "ok", "model": name})
            else:
                self._send(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "llmops", "root": str(model.path)}]})

        def _handle(self) -> None:
            try:
                self._serve()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as e:  # the server keeps serving; the client learns what failed
                log.warning("serve: %s %s failed: %s", self.command, self.path, e)
                self.close_connection = True
                try:
                    self._error(500, f"generation failed: {type(e).__name__}: {e}", "InternalServerError")
                except OSError:
                    pass

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def want_get(path: str) -> bool:
        return routes[path] == "GET"

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
