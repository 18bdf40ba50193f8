"""Inference clients, one per API a runtime speaks, and `llmops call`.

    openai       POST {url}/v1/completions                (vLLM; `llmops serve`)
    hf-openai    POST {url}/openai/v1/completions         (KServe Hugging Face server)
    caikit-http  POST {url}/api/v1/task/text-generation   (Caikit+TGIS, REST)
    caikit-grpc  caikit.runtime.Nlp.NlpService/TextGenerationTaskPredict, metadata mm-model-id
    tgis-grpc    fmaas.GenerationService/Generate

Every client returns {"reply", "tokens", "prompt_tokens", "latency_s", "api", "url", "attempts"}
and retries while the server warms up (connection refused, 502/503/504, gRPC UNAVAILABLE).
HTTP uses the standard library; gRPC uses grpcio with the few protobuf fields it needs encoded by
hand (field numbers from caikit-nlp's and TGIS's .proto files), so no generated stubs are needed.
A bearer token for token-auth endpoints is read from $LLMOPS_SERVING_TOKEN.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from llmops.core.errors import LLMOpsError

log = logging.getLogger("llmops")

TOKEN_ENV = "LLMOPS_SERVING_TOKEN"
RETRY_HTTP = {502, 503, 504}

API_FOR = {("vllm", "http"): "openai", ("hf", "http"): "hf-openai",
           ("caikit_tgis", "http"): "caikit-http", ("caikit_tgis", "grpc"): "caikit-grpc",
           ("tgis", "grpc"): "tgis-grpc", ("local", "http"): "openai", ("llmisvc", "http"): "openai"}


APIS = tuple(sorted(set(API_FOR.values())))  # what `llmops call --api` accepts


def shown(prompt: str, reply: str) -> str:
    """The text to show for a completion: prompt + reply, or the reply alone when the server
    already echoed the prompt (Caikit's local backend does, `preserve_input_text`)."""
    return reply if prompt and reply.startswith(prompt) else prompt + reply


class Retryable(Exception):
    """A failure worth another attempt (the server is still starting)."""


def api_for(runtime: str, protocol: str) -> str:
    try:
        return API_FOR[(runtime, protocol)]
    except KeyError:
        raise LLMOpsError(f"no client for runtime {runtime!r} over {protocol!r}") from None


# ------------------------------------------------------------------------------------------ HTTP
def _headers() -> dict:
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        from llmops.core import secrets

        secrets.remember(token)
        h["Authorization"] = f"Bearer {token}"
    return h


def post_json(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=_headers(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        if e.code in RETRY_HTTP:
            raise Retryable(f"HTTP {e.code} from {url}: {detail}") from None
        raise LLMOpsError(f"HTTP {e.code} from {url}: {detail}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise Retryable(f"cannot reach {url}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise LLMOpsError(f"{url} answered with something that is not JSON: {raw[:200]!r}") from None


def endpoint(base: str, path: str) -> str:
    """base + path, where base may already end in the API's version prefix: the OpenAI client's
    convention is a base URL ending in /v1 (`http://host:8000/v1` + `/v1/completions` ->
    `http://host:8000/v1/completions`, not /v1/v1/completions)."""
    base = base.rstrip("/")
    prefix = path.rsplit("/", 1)[0]  # /v1, /openai/v1, /api/v1/task
    if prefix and base.endswith(prefix):
        base = base[: -len(prefix)]
    return base + path


def _openai(base: str, path: str, prompt: str, max_tokens: int, model: Optional[str], timeout: float,
            temperature: float = 0.0, seed: Optional[int] = None) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        body["seed"] = seed
    if model:
        body["model"] = model
    r = post_json(endpoint(base, path), body, timeout)
    try:
        choice = r["choices"][0]
        usage = r.get("usage") or {}
        return {"reply": choice["text"], "tokens": usage.get("completion_tokens"),
                "prompt_tokens": usage.get("prompt_tokens"), "model": r.get("model")}
    except (KeyError, IndexError, TypeError):
        raise LLMOpsError(f"unexpected completions answer: {json.dumps(r)[:300]}") from None


def _caikit_http(base: str, prompt: str, max_tokens: int, model: Optional[str], timeout: float) -> dict:
    body = {"model_id": model, "inputs": prompt, "parameters": {"max_new_tokens": max_tokens}}
    r = post_json(endpoint(base, "/api/v1/task/text-generation"), body, timeout)
    text = r.get("generated_text", r.get("text"))  # 2023 images answer `text`
    if text is None:
        raise LLMOpsError(f"unexpected Caikit answer: {json.dumps(r)[:300]}")
    return {"reply": text, "tokens": r.get("generated_tokens"), "prompt_tokens": r.get("input_token_count")}


# ------------------------------------------------------------------------------------ protobuf
def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num: int, value) -> bytes:
    """One protobuf field: int -> varint, str/bytes -> length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return _varint(num << 3) + _varint(int(value))
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def pb_decode(data: bytes) -> dict:
    """{field number: [values]}; varints as int, length-delimited as bytes."""
    out: dict = {}
    i = 0

    def read_varint():
        nonlocal i
        shift = result = 0
        while True:
            if i >= len(data):
                raise ValueError("truncated varint")
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = read_varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            v = read_varint()
        elif wt == 2:
            n = read_varint()
            v = data[i:i + n]
            if len(v) != n:
                raise ValueError("truncated field")
            i += n
        elif wt == 1:
            v = data[i:i + 8]
            i += 8
        elif wt == 5:
            v = data[i:i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def _first(d: dict, num: int, default=None):
    v = d.get(num)
    return v[0] if v else default


CAIKIT_METHOD = "/caikit.runtime.Nlp.NlpService/TextGenerationTaskPredict"
TGIS_METHOD = "/fmaas.GenerationService/Generate"


def caikit_request(prompt: str, max_tokens: int) -> bytes:
    # TextGenerationTaskRequest: text = 1, max_new_tokens = 2
    return pb_field(1, prompt) + pb_field(2, max_tokens)


def caikit_reply(data: bytes) -> dict:
    # GeneratedTextResult: generated_text = 1, generated_tokens = 2, input_token_count = 5
    d = pb_decode(data)
    return {"reply": _first(d, 1, b"").decode(), "tokens": _first(d, 2, 0),
            "prompt_tokens": _first(d, 5)}


def tgis_request(model: str, prompt: str, max_tokens: int) -> bytes:
    # BatchedGenerationRequest: model_id = 1, requests = 3 {text = 2},
    # params = 10 {method = 1 (GREEDY = 0, the default), stopping = 3 {max_new_tokens = 1}}
    params = pb_field(3, pb_field(1, max_tokens))
    return pb_field(1, model or "") + pb_field(3, pb_field(2, prompt)) + pb_field(10, params)


def tgis_reply(data: bytes) -> dict:
    # BatchedGenerationResponse: responses = 1 {generated_token_count = 2, text = 4,
    # input_token_count = 6, stop_reason = 7}
    first = _first(pb_decode(data), 1)
    if first is None:
        raise LLMOpsError("TGIS answered with no responses")
    r = pb_decode(first)
    return {"reply": _first(r, 4, b"").decode(), "tokens": _first(r, 2, 0),
            "prompt_tokens": _first(r, 6)}


def _grpc_target(url: str) -> tuple[str, bool]:
    u = urlparse(url if "://" in url else f"grpc://{url}")
    secure = u.scheme in ("https", "grpcs")
    port = u.port or (443 if secure else 80)
    return f"{u.hostname}:{port}", secure


def _grpc_call(url: str, method: str, payload: bytes, metadata: list, timeout: float) -> bytes:
    import grpc

    target, secure = _grpc_target(url)
    token = os.environ.get(TOKEN_ENV)
    if token:
        metadata = metadata + [("authorization", f"Bearer {token}")]
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if secure \
        else grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return call(payload, metadata=metadata, timeout=timeout)
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise Retryable(f"gRPC {code.name} from {target}{method}: {details}") from None
        raise LLMOpsError(f"gRPC {code.name} from {target}{method}: {details}") from None
    finally:
        channel.close()


# ------------------------------------------------------------------------------------- complete
def complete(url: str, prompt: str, *, api: str = "openai", max_tokens: int = 32,
             model: Optional[str] = None, timeout: float = 60.0, retries: int = 5,
             retry_interval_s: float = 2.0, temperature: float = 0.0,
             seed: Optional[int] = None) -> dict:
    """Send one completion request, retrying while the server warms up.

    temperature/seed reach the OpenAI-style APIs (vLLM, the HF server, `llmops serve`); the
    Caikit and TGIS calls decode greedily."""
    if not url:
        raise LLMOpsError("no URL to call")
    attempt = 0
    t_first = time.perf_counter()
    while True:
        attempt += 1
        t0 = time.perf_counter()
        try:
            if api == "openai":
                r = _openai(url, "/v1/completions", prompt, max_tokens, model, timeout, temperature, seed)
            elif api == "hf-openai":
                r = _openai(url, "/openai/v1/completions", prompt, max_tokens, model, timeout,
                            temperature, seed)
            elif api == "caikit-http":
                r = _caikit_http(url, prompt, max_tokens, model, timeout)
            elif api == "caikit-grpc":
                r = caikit_reply(_grpc_call(url, CAIKIT_METHOD, caikit_request(prompt, max_tokens),
                                            [("mm-model-id", model or "")], timeout))
            elif api == "tgis-grpc":
                r = tgis_reply(_grpc_call(url, TGIS_METHOD, tgis_request(model or "", prompt, max_tokens),
                                          [("mm-model-id", model or "")], timeout))
            else:
                raise LLMOpsError(f"unknown API {api!r}; expected one of {list(APIS)}")
        except Retryable as e:
            if attempt > retries:
                raise LLMOpsError(f"{e} (gave up after {attempt} attempts over "
                                  f"{time.perf_counter() - t_first:.1f} s)") from None
            log.info("call: %s; retrying in %.1f s (%d/%d)", e, retry_interval_s, attempt, retries)
            time.sleep(retry_interval_s)
            continue
        r.update({"latency_s": round(time.perf_counter() - t0, 4), "api": api, "url": url,
                  "attempts": attempt, "prompt": prompt})
        return r


# ------------------------------------------------------------------------------- `llmops call`
