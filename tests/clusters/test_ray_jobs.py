"""cluster=ray: the Jobs API path, against a real local Ray head (and loopback fakes for errors)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from llmops.core.errors import LLMOpsError
from tests.clusters.helpers import ctx_with_prepared_data

PROBE = str(Path(__file__).parent / "probe" / "llmops_probe")
SECRET = "hf_s3cr3t_value_1234"


def _ctx(cfg, tmp_path):
    return ctx_with_prepared_data(cfg, tmp_path)


@pytest.fixture
def ray_cfg(compose, monkeypatch):
    monkeypatch.setenv("MY_HF_TOKEN", SECRET)

    def make(address, *overrides):
        return compose("quickstart", "cluster=ray", f"cluster.address={address}",
                       "cluster.poll_interval_s=0.3", "+cluster.envs.HF_TOKEN=${oc.env:MY_HF_TOKEN}",
                       *overrides)

    return make


# ------------------------------------------------------------------------------- no cluster needed
def test_payload_ships_references_not_secrets(ray_cfg, tmp_path):
    from llmops.clusters.ray_jobs import write_payload

    cfg = ray_cfg("http://127.0.0.1:1", "+cluster.headers.Authorization=Bearer abcdefgh12345")
    ctx = _ctx(cfg, tmp_path)
    path, env = write_payload(tmp_path / "job", cfg, ctx.training_task(), train_callable="m:f")
    text = path.read_text()
    assert SECRET not in text and "abcdefgh12345" not in text
    payload = json.loads(text)
    assert payload["config"]["cluster"]["envs"]["HF_TOKEN"] == "${oc.env:MY_HF_TOKEN}"
    assert payload["config"]["cluster"]["headers"]["Authorization"] == \
        "${oc.env:LLMOPS_SECRET_CLUSTER_HEADERS_AUTHORIZATION}"
    assert env == {}  # pass_secrets is false: no value leaves this machine
    assert payload["run"]["data"]["data_dir"] == str(tmp_path / "data")
    assert payload["config"]["run_id"] == str(cfg.run_id)  # interpolations resolved

    cfg2 = ray_cfg("http://127.0.0.1:1", "cluster.pass_secrets=true",
                   "+cluster.headers.Authorization=Bearer abcdefgh12345")
    _, env2 = write_payload(tmp_path / "job2", cfg2, _ctx(cfg2, tmp_path / "b").training_task(), train_callable="m:f")
    assert env2 == {"MY_HF_TOKEN": SECRET,
                    "LLMOPS_SECRET_CLUSTER_HEADERS_AUTHORIZATION": "Bearer abcdefgh12345"}


def test_job_entry_restores_a_typed_config(ray_cfg, tmp_path):
    from llmops.clusters.job_entry import typed_config
    from llmops.clusters.ray_jobs import job_config
    from llmops.config.schema import TrainMethod

    container, _ = job_config(ray_cfg("http://127.0.0.1:1"), pass_secrets=False)
    cfg = typed_config(json.loads(json.dumps(container)))
    assert cfg.training.method is TrainMethod.full
    assert cfg.cluster.envs.HF_TOKEN == SECRET  # resolved from the job's environment
    with pytest.raises(Exception):
        cfg.training.no_such_knob = 1  # struct mode, like the composed config


def test_unreachable_address_names_the_key(ray_cfg, tmp_path):
    from tests.fixtures.ray_head import free_port

    from llmops.clusters.ray_jobs import RayJobsBackend

    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LLMOpsError) as e:
        with RayJobsBackend(ray_cfg(addr)):
            pass
    assert "cluster.address" in str(e.value) and addr in str(e.value)


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"Unauthorized")

    do_POST = do_GET

    def log_message(self, *a):
        pass


def test_dashboard_401_is_a_clear_error(ray_cfg):
    from llmops.clusters.ray_jobs import RayJobsBackend

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        addr = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(LLMOpsError) as e:
            with RayJobsBackend(ray_cfg(addr, "+cluster.headers.Authorization=Bearer expired-tok-999")):
                pass
        msg = str(e.value)
        assert "401" in msg and "cluster.headers" in msg and addr in msg
        assert "expired-tok-999" not in msg
    finally:
        srv.shutdown()


def test_config_requires_an_address(compose):
    from llmops.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=ray", "cluster.address=null")
    assert "cluster.address" in str(e.value)
    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=ray", "cluster.address=127.0.0.1:8265")
    assert "http(s)://" in str(e.value)


# ------------------------------------------------------------------------------- real local head
@pytest.mark.slow
def test_job_runs_end_to_end_on_a_real_head(ray_head, ray_cfg, tmp_path):
    from llmops.clusters.ray_jobs import RayJobsBackend

    cfg = ray_cfg(ray_head.address, "cluster.pass_secrets=true", "training.lr=0.125")
    ctx = _ctx(cfg, tmp_path)
    lines = []
    with RayJobsBackend(cfg, train_callable="llmops_probe:fit", extra_py_modules=[PROBE],
                        echo=lines.append) as b:
        out = b.run_training(cfg, ctx.training_task())
    assert out.metrics["global_step"] == 2 and out.metrics["probe"]["method"] == "full"
    assert (Path(out.model_uri) / "weights.txt").read_text() == "lr=0.125\n"
    assert out.metrics["probe"]["token_len"] == len(SECRET)  # the secret reached the job through env_vars
    assert out.metrics["probe"]["data_dir"] == str(tmp_path / "data")
    text = "\n".join(lines)
    assert "probe: training step 1" in text  # logs streamed
    assert "RUNNING" in text and "SUCCEEDED" in text  # status changes reported
    assert SECRET not in text


@pytest.mark.slow
def test_failed_job_surfaces_last_lines_and_reason(ray_head, ray_cfg, tmp_path):
    from llmops.clusters.ray_jobs import RayJobsBackend

    cfg = ray_cfg(ray_head.address, "training.max_steps=999", "cluster.follow_logs=false")
    with pytest.raises(LLMOpsError) as e:
        with RayJobsBackend(cfg, train_callable="llmops_probe:fit", extra_py_modules=[PROBE],
                            echo=lambda s: None) as b:
            b.run_training(cfg, _ctx(cfg, tmp_path).training_task())
    msg = str(e.value)
    assert "FAILED" in msg and "loss is nan at step 3" in msg and "training diverged" in msg


@pytest.mark.slow
def test_ctrl_c_and_timeout_stop_the_job(ray_head, ray_cfg, tmp_path):
    from ray.job_submission import JobSubmissionClient

    from llmops.clusters.ray_jobs import RayJobsBackend

    client = JobSubmissionClient(ray_head.address)
    # Ctrl-C while the job logs: the job is stopped before the interrupt goes on
    cfg = ray_cfg(ray_head.address, "training.max_steps=777")

    def echo(line):
        if "long step 3" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with RayJobsBackend(cfg, train_callable="llmops_probe:fit", extra_py_modules=[PROBE],
                            echo=echo) as b:
            b.run_training(cfg, _ctx(cfg, tmp_path / "a").training_task())
    jobs = client.list_jobs()
    assert jobs and all(j.status.value in ("STOPPED", "SUCCEEDED", "FAILED") for j in jobs)
    assert any(j.status.value == "STOPPED" for j in jobs)

    # a time limit stops the job and says which key set it
    cfg = ray_cfg(ray_head.address, "training.max_steps=777", "cluster.job_timeout_s=3")
    with pytest.raises(LLMOpsError) as e:
        with RayJobsBackend(cfg, train_callable="llmops_probe:fit", extra_py_modules=[PROBE],
                            echo=lambda s: None) as b:
            b.run_training(cfg, _ctx(cfg, tmp_path / "b").training_task())
    assert "cluster.job_timeout_s" in str(e.value)
    assert sum(j.status.value == "STOPPED" for j in client.list_jobs()) == 2

    # cluster.confirm_stop: answering "no" leaves the job running and says how to follow it
    cfg = ray_cfg(ray_head.address, "training.max_steps=777", "cluster.confirm_stop=true")
    lines, asked = [], []

    def echo2(line):
        lines.append(line)
        if "long step 3" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with RayJobsBackend(cfg, train_callable="llmops_probe:fit", extra_py_modules=[PROBE],
                            echo=echo2, ask=lambda job: asked.append(job) or False) as b:
            b.run_training(cfg, _ctx(cfg, tmp_path / "c").training_task())
    assert len(asked) == 1 and client.get_job_status(asked[0]).value == "RUNNING"
    assert any("ray job logs" in ln and asked[0] in ln for ln in lines)
    client.stop_job(asked[0])


@pytest.mark.slow
def test_real_training_through_the_engine_on_a_real_head(ray_head, compose, tmp_path):
    """`llmops run quickstart cluster=ray ...` minus the CLI: prepare_data here, train as a job."""
    from llmops.pipeline import engine

    cfg = compose("quickstart", "cluster=ray", f"cluster.address={ray_head.address}",
                  "cluster.poll_interval_s=0.5", "stages=[prepare_data,train]",
                  "dataset.max_train_blocks=48", "dataset.max_eval_blocks=8",
                  "training.max_steps=4", "training.eval_steps=2", "training.logging_steps=2")
    out = engine.run(cfg, tmp_path / "run")
    train = out.state.data["stages"]["train"]
    assert train["status"] == "done"
    m = train["outputs"]["metrics"]
    assert m["global_step"] == 4 and m["eval_loss"] > 0 and m["tokens_per_s"] > 0
    assert abs(m["perplexity"] - 2.718281828 ** m["eval_loss"]) < 1e-3 * m["perplexity"]
    assert train["outputs"]["checkpoint_uri"]
    payload = json.loads((tmp_path / "run" / "train" / "job" / "payload.json").read_text())
    assert payload["callable"] == "llmops.training.loop:fit"


def test_relative_local_paths_travel_absolute(compose, tmp_path, monkeypatch):
    """A job's working dir is not the submitter's: `outputs/models` must mean the same folder."""
    from llmops.clusters.ray_jobs import job_config

    monkeypatch.chdir(tmp_path)
    cfg = compose("quickstart", "cluster=ray", "storage.root=models/here")
    container, _ = job_config(cfg, pass_secrets=False)
    assert container["storage"]["root"] == str(tmp_path / "models" / "here")
