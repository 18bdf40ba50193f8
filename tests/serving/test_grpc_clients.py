"""The gRPC clients (Caikit TextGenerationTaskPredict, TGIS Generate) against a grpcio server on
127.0.0.1 that decodes and encodes with protobuf message classes built from the upstream .proto
field definitions (caikit-nlp TextGenerationTaskRequest / GeneratedTextResult, TGIS
generation.proto) -- an encoder independent of the client's hand-written one."""

from __future__ import annotations

from concurrent import futures

import pytest

from llmops.core.errors import LLMOpsError
from llmops.serving import client

grpc = pytest.importorskip("grpc")


def _classes():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="llmops_test.proto", package="t", syntax="proto3")

    def msg(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, num, typ, *rest in fields:
            f = m.field.add(name=fname, number=num, type=typ,
                            label=F.LABEL_REPEATED if rest and rest[0] == "rep" else F.LABEL_OPTIONAL)
            if typ == F.TYPE_MESSAGE:
                f.type_name = f".t.{rest[-1]}"

    msg("TextGenerationTaskRequest", ("text", 1, F.TYPE_STRING), ("max_new_tokens", 2, F.TYPE_INT64))
    msg("GeneratedTextResult", ("generated_text", 1, F.TYPE_STRING), ("generated_tokens", 2, F.TYPE_INT64),
        ("finish_reason", 3, F.TYPE_INT32), ("input_token_count", 5, F.TYPE_INT64))
    msg("GenerationRequest", ("text", 2, F.TYPE_STRING))
    msg("StoppingCriteria", ("max_new_tokens", 1, F.TYPE_UINT32), ("min_new_tokens", 2, F.TYPE_UINT32))
    msg("Parameters", ("method", 1, F.TYPE_INT32), ("stopping", 3, F.TYPE_MESSAGE, "StoppingCriteria"))
    msg("BatchedGenerationRequest", ("model_id", 1, F.TYPE_STRING),
        ("requests", 3, F.TYPE_MESSAGE, "rep", "GenerationRequest"), ("params", 10, F.TYPE_MESSAGE, "Parameters"))
    msg("GenerationResponse", ("generated_token_count", 2, F.TYPE_UINT32), ("text", 4, F.TYPE_STRING),
        ("input_token_count", 6, F.TYPE_UINT32), ("stop_reason", 7, F.TYPE_INT32))
    msg("BatchedGenerationResponse", ("responses", 1, F.TYPE_MESSAGE, "rep", "GenerationResponse"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"t.{m.name}"))
            for m in fdp.message_type}


@pytest.fixture(scope="module")
def grpc_server():
    C = _classes()
    seen = []

    def caikit(raw, ctx):
        req = C["TextGenerationTaskRequest"].FromString(raw)
        md = dict(ctx.invocation_metadata())
        seen.append(("caikit", req.text, req.max_new_tokens, md.get("mm-model-id")))
        if md.get("mm-model-id") != "gpt2-demo":
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Model '{md.get('mm-model-id')}' not loaded")
        return C["GeneratedTextResult"](generated_text=" ünïcødé reply", generated_tokens=req.max_new_tokens,
                                        input_token_count=3).SerializeToString()

    def tgis(raw, ctx):
        req = C["BatchedGenerationRequest"].FromString(raw)
        seen.append(("tgis", req.model_id, [r.text for r in req.requests], req.params.stopping.max_new_tokens,
                     req.params.method))
        resp = C["GenerationResponse"](generated_token_count=req.params.stopping.max_new_tokens,
                                       text=" from tgis", input_token_count=4, stop_reason=1)
        return C["BatchedGenerationResponse"](responses=[resp]).SerializeToString()

    handlers = [
        grpc.method_handlers_generic_handler("caikit.runtime.Nlp.NlpService", {
            "TextGenerationTaskPredict": grpc.unary_unary_rpc_method_handler(caikit)}),
        grpc.method_handlers_generic_handler("fmaas.GenerationService", {
            "Generate": grpc.unary_unary_rpc_method_handler(tgis)}),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"grpc://127.0.0.1:{port}", seen
    server.stop(0)


def test_caikit_grpc(grpc_server):
    url, seen = grpc_server
    r = client.complete(url, "The history of", api="caikit-grpc", max_tokens=7, model="gpt2-demo")
    assert r["reply"] == " ünïcødé reply" and r["tokens"] == 7 and r["prompt_tokens"] == 3
    assert seen[-1] == ("caikit", "The history of", 7, "gpt2-demo")
    with pytest.raises(LLMOpsError, match="gRPC NOT_FOUND .*Model 'other' not loaded"):
        client.complete(url, "x", api="caikit-grpc", model="other", retries=0)


def test_tgis_grpc(grpc_server):
    url, seen = grpc_server
    r = client.complete(url, "Once", api="tgis-grpc", max_tokens=5, model="gpt2-demo")
    assert r["reply"] == " from tgis" and r["tokens"] == 5 and r["prompt_tokens"] == 4
    assert seen[-1] == ("tgis", "gpt2-demo", ["Once"], 5, 0)


def test_grpc_unavailable_is_retried_then_reported(free_port):
    with pytest.raises(LLMOpsError, match=r"gRPC UNAVAILABLE .*gave up after 2 attempts"):
        client.complete(f"grpc://127.0.0.1:{free_port}", "x", api="tgis-grpc", retries=1,
                        retry_interval_s=0.01, timeout=2)


def test_varint_round_trip():
    for n in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        assert client.pb_decode(client.pb_field(1, n)) == {1: [n]}


@pytest.mark.parametrize("field", ["generated_text", "text"])  # current images / 2023 images
def test_caikit_http(field):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            data = json.dumps({field: " ok", "generated_tokens": 2, "input_token_count": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = client.complete(f"http://127.0.0.1:{srv.server_address[1]}", "Hi", api="caikit-http",
                            max_tokens=2, model="gpt2-demo")
    finally:
        srv.shutdown()
        srv.server_close()
    assert r["reply"] == " ok" and r["tokens"] == 2
    assert got == [("/api/v1/task/text-generation",
                    {"model_id": "gpt2-demo", "inputs": "Hi", "parameters": {"max_new_tokens": 2}})]
