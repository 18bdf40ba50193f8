"""The storage preflight (issue 14 point 1): before any cluster work, against a real S3 endpoint
(moto's server) started empty; failures come in seconds and name the key to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmops import storage
from llmops.core.errors import LLMOpsError
from tests.fixtures.s3 import free_port

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["training.max_steps=4", "dataset.max_train_blocks=48", "dataset.max_eval_blocks=8"]


def s3_cfg(compose, endpoint: str, *extra: str):
    return compose("quickstart", "storage=s3", "storage.bucket=models", f"storage.endpoint_url={endpoint}",
                   "storage.retry_base_s=0.1", *extra)


def keys(moto_s3, bucket: str) -> list[str]:
    return [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_empty_endpoint_with_create_bucket_gets_the_bucket_and_no_probe_left(compose, moto_s3, tmp_path):
    cfg = s3_cfg(compose, moto_s3.endpoint, "storage.create_bucket=true")
    assert moto_s3.client().list_buckets()["Buckets"] == []
    storage.preflight(cfg, tmp_path / "run", "run-1")
    assert [b["Name"] for b in moto_s3.client().list_buckets()["Buckets"]] == ["models"]
    assert not [k for k in keys(moto_s3, "models") if "preflight" in k]
    # Ray Train's checkpoint filesystem can now write under the run's prefix
    path, fs = storage.ray_storage(cfg, tmp_path / "run", "run-1")
    with fs.open_output_stream(path + "/x") as f:
        f.write(b"1")
    assert "models/run-1/checkpoints/x" in keys(moto_s3, "models")


def test_missing_bucket_without_create_bucket_names_the_keys(compose, moto_s3, tmp_path):
    cfg = s3_cfg(compose, moto_s3.endpoint)
    t0 = time.monotonic()
    with pytest.raises(LLMOpsError) as e:
        storage.preflight(cfg, tmp_path, "run-1")
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "storage.bucket='models'" in msg and "storage.create_bucket=true" in msg and "does not exist" in msg
    assert moto_s3.client().list_buckets()["Buckets"] == []  # nothing created


def test_unreachable_endpoint_fails_in_seconds_naming_endpoint_url(compose, moto_s3, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(LLMOpsError) as e:
        storage.preflight(s3_cfg(compose, endpoint, "storage.create_bucket=true"), tmp_path, "run-1")
    assert time.monotonic() - t0 < 5
    assert f"storage.endpoint_url='{endpoint}'" in str(e.value) and "cannot reach" in str(e.value)


def test_wrong_credentials_name_the_variables(compose, moto_s3_iam, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTKNOWN00000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-value-42")
    cfg = compose("quickstart", "storage=s3", f"storage.bucket={moto_s3_iam.BUCKET}",
                  f"storage.endpoint_url={moto_s3_iam.endpoint}")
    t0 = time.monotonic()
    with pytest.raises(LLMOpsError) as e:
        storage.preflight(cfg, tmp_path, "run-1")
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "rejected the credentials" in msg and "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in msg
    assert "not-the-secret-value-42" not in msg


def test_read_only_credentials_fail_at_the_write_probe(compose, moto_s3_iam, monkeypatch, tmp_path):
    key, secret = moto_s3_iam.users["reader"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    cfg = compose("quickstart", "storage=s3", f"storage.bucket={moto_s3_iam.BUCKET}",
                  f"storage.endpoint_url={moto_s3_iam.endpoint}")
    with pytest.raises(LLMOpsError) as e:
        storage.preflight(cfg, tmp_path, "run-1")
    assert "write a probe to" in str(e.value) and "access denied" in str(e.value)


def test_local_storage_root_under_a_file_names_storage_root(compose, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(LLMOpsError, match=r"storage.root: .*a-file is not a writable folder"):
        storage.preflight(compose("quickstart", f"storage.root={tmp_path / 'a-file' / 'models'}"), tmp_path, "r1")


# ------------------------------------------------------------------------- through the CLI
def llmops(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_run_against_an_unreachable_endpoint_fails_in_train_in_seconds(tmp_path, moto_s3):
    endpoint = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    p = llmops("run", "quickstart", "storage=s3", "storage.bucket=models", f"storage.endpoint_url={endpoint}",
               "stages=[train]", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 30  # the interpreter and compose included
    assert "storage preflight" in p.stderr and f"storage.endpoint_url='{endpoint}'" in p.stderr
    st = json.loads((tmp_path / "run" / "state.json").read_text())["stages"]
    assert st["train"]["status"] == "failed" and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_cli_first_run_on_an_empty_endpoint_with_create_bucket(tmp_path, moto_s3):
    """The exact command of issue 14 (small training): it used to fail in train with
    "Bucket 'models' not found" (Ray's pyarrow filesystem needs the bucket before export)."""
    p = llmops("run", "quickstart", "storage=s3", "storage.bucket=models",
               f"storage.endpoint_url={moto_s3.endpoint}", "storage.create_bucket=true", *SMALL,
               f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    st = json.loads((tmp_path / "run" / "state.json").read_text())["stages"]
    ex = st["export"]["outputs"]
    assert ex["model_uri"].startswith("s3://models/models/quickstart-") and ex["model_uri"].endswith("/hf/")
    got = set(keys(moto_s3, "models"))
    prefix = ex["model_uri"][len("s3://models/"):]
    assert prefix + "llmops-manifest.json" in got and prefix + "model.safetensors" in got
    assert not [k for k in got if "llmops-preflight" in k]
