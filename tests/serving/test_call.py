"""`llmops call URL`: the OpenAI base-URL form (ending in /v1), --api for the other clients, and a
server that echoes the prompt printed once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from llmops import cli
from llmops.serving import client, server


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    model = server.LocalModel(tiny_model_dir)
    with server.BackgroundServer(model, "tiny") as url:
        yield url


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_openai_base_url_forms(served, suffix, capsys):
    assert cli.main(["call", served + suffix, "Once upon", "--max-tokens", "3", "--model", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once upon") and "3 tokens" in err and f"from {served + suffix} (openai)" in err


@pytest.fixture
def caikit_http():
    """A Caikit REST endpoint whose local backend echoes the prompt (preserve_input_text)."""
    seen = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            if self.path != "/api/v1/task/text-generation":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            echo = body["model_id"] == "echo"
            text = (body["inputs"] if echo else "") + " of the world"
            data = json.dumps({"generated_text": text, "generated_tokens": 3, "input_token_count": 2}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("model", ["echo", "tgis-backend"])
def test_caikit_over_http_prints_the_prompt_once(caikit_http, model, capsys):
    url, seen = caikit_http
    assert cli.main(["call", url, "The history", "--api", "caikit-http", "--model", model,
                     "--max-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert out == "The history of the world\n"  # whether or not the backend echoed it
    assert seen[-1] == ("/api/v1/task/text-generation",
                        {"model_id": model, "inputs": "The history", "parameters": {"max_new_tokens": 3}})
    assert "(caikit-http)" in err


def test_api_choices_and_run_directories(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["call", "http://127.0.0.1:1", "x", "--api", "soap"])
    assert "invalid choice: 'soap'" in capsys.readouterr().err
    assert set(client.APIS) >= {"openai", "caikit-http", "caikit-grpc", "tgis-grpc"}
    assert cli.main(["call", str(tmp_path), "x", "--api", "openai"]) == 2
    assert "--api is for URL targets" in capsys.readouterr().err


def test_grpc_url_with_api(free_port, capsys):
    assert cli.main(["call", f"grpc://127.0.0.1:{free_port}", "x", "--api", "tgis-grpc"]) == 1
    assert "gRPC UNAVAILABLE" in capsys.readouterr().err  # the TGIS client was used, not OpenAI
