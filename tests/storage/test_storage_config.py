"""storage=local|s3|pvc: composed configs, validation, URIs, the store chosen, Ray Train storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.errors import ConfigError, LLMOpsError
from llmops.storage import get_store, model_uris, ray_storage, run_prefix, serving_uri
from tests.fixtures.s3 import TEST_SECRET_KEY


def s3_overrides(endpoint: str = "http://127.0.0.1:9000", bucket: str = "models-bkt") -> list[str]:
    return ["storage=s3", f"storage.bucket={bucket}", f"storage.endpoint_url={endpoint}",
            "storage.addressing_style=path"]


def test_s3_uris_are_unique_prefixes_ending_in_slash(compose):
    cfg = compose("quickstart", *s3_overrides(), "storage.prefix=/team/llm/")
    assert run_prefix(cfg, "gpt2-1") == "s3://models-bkt/team/llm/gpt2-1/"
    uris = model_uris(cfg, "gpt2-1")
    assert uris == {"hf": "s3://models-bkt/team/llm/gpt2-1/hf/",
                    "caikit": "s3://models-bkt/team/llm/gpt2-1/caikit/",
                    "adapter": "s3://models-bkt/team/llm/gpt2-1/adapter/"}
    # gpt2-1 is not a prefix of gpt2-10's keys
    assert not model_uris(cfg, "gpt2-10")["hf"].startswith(run_prefix(cfg, "gpt2-1"))
    assert serving_uri(cfg, uris["hf"]) == uris["hf"]
    from llmops.storage.s3 import S3Store

    st = get_store(cfg)
    assert isinstance(st, S3Store)
    assert st.s.endpoint_url == "http://127.0.0.1:9000" and st.s.addressing_style == "path"
    assert st.s.chunk == 16 * 1024 * 1024 and st.s.max_concurrency == 8


def test_pvc_layout_and_serving_uri(compose, tmp_path):
    mount = tmp_path / "mnt" / "models"
    mount.mkdir(parents=True)
    cfg = compose("quickstart", "storage=pvc", "storage.pvc_name=model-store", f"storage.mount_path={mount}")
    uris = model_uris(cfg, "run-7")
    assert uris["hf"] == (mount / "run-7" / "hf").as_uri() + "/"
    assert serving_uri(cfg, uris["hf"]) == "pvc://model-store/run-7/hf/"
    assert serving_uri(cfg, uris["caikit"]) == "pvc://model-store/run-7/caikit/"
    src = tmp_path / "export"
    src.mkdir()
    (src / "config.json").write_text("{}")
    st = get_store(cfg)
    m = st.put_dir(src, uris["hf"])
    assert (mount / "run-7" / "hf" / "config.json").is_file()
    assert st.exists(uris["hf"]) and set(m["files"]) == {"config.json"}
    path, fs = ray_storage(cfg, tmp_path / "run", "run-7")
    assert (path, fs) == (str(mount / "run-7" / "checkpoints"), None)


def test_local_ray_storage(compose, tmp_path):
    cfg = compose("quickstart")
    assert ray_storage(cfg, tmp_path / "run", "r1") == (str(tmp_path / "run" / "checkpoints"), None)


@pytest.mark.parametrize("overrides, key, expected", [
    (["storage=s3"], "storage.bucket", "a bucket name"),
    (["storage=s3", "storage.bucket=Bad_Bucket"], "storage.bucket", "an S3 bucket name"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.endpoint_url=minio:9000"], "storage.endpoint_url",
     "an http:// or https:// URL"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.endpoint_url=http://u:p@minio:9000"],
     "storage.endpoint_url", "without user:password"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.addressing_style=dns"], "storage.addressing_style",
     "'path' (MinIO)"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.multipart_chunk_mb=1"], "storage.multipart_chunk_mb",
     "between 5 (the S3 minimum)"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.max_concurrency=0"], "storage.max_concurrency",
     "between 1 and 256"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.max_attempts=0"], "storage.max_attempts", "between 1"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.ca_bundle=/nonexistent/ca.pem"], "storage.ca_bundle",
     "an existing PEM file"),
    (["storage=s3", "storage.bucket=ok-bkt", "storage.prefix=a/../b"], "storage.prefix", "no '//'"),
    (["storage=pvc", "storage.mount_path=/mnt/m"], "storage.pvc_name", "PersistentVolumeClaim"),
    (["storage=pvc", "storage.pvc_name=Bad_Name", "storage.mount_path=/mnt/m"], "storage.pvc_name", "DNS-1123"),
    (["storage=pvc", "storage.pvc_name=ok", "storage.mount_path=relative/dir"], "storage.mount_path",
     "absolute path"),
])
def test_bad_storage_config_names_the_key(compose, overrides, key, expected):
    with pytest.raises(ConfigError) as e:
        compose("quickstart", *overrides)
    lines = [p for p in e.value.problems if p.startswith(key)]
    assert lines and expected in lines[0], e.value.problems


def test_literal_credential_in_config_is_an_error_without_echoing_it(compose):
    with pytest.raises(ConfigError) as e:
        compose("quickstart", *s3_overrides(), f"+cluster.envs.AWS_SECRET_ACCESS_KEY={TEST_SECRET_KEY}")
    msg = str(e.value)
    assert "cluster.envs.AWS_SECRET_ACCESS_KEY" in msg and "literal credential" in msg
    assert "${oc.env:AWS_SECRET_ACCESS_KEY}" in msg
    assert TEST_SECRET_KEY not in msg


def test_credential_from_environment_is_accepted(compose, monkeypatch):
    monkeypatch.setenv("MY_S3_SECRET", TEST_SECRET_KEY)
    cfg = compose("quickstart", *s3_overrides(),
                  "+cluster.envs.AWS_SECRET_ACCESS_KEY=${oc.env:MY_S3_SECRET}")
    assert cfg.cluster.envs.AWS_SECRET_ACCESS_KEY == TEST_SECRET_KEY


def test_unknown_storage_key_is_rejected(compose):
    with pytest.raises(Exception, match="secret_access_key"):
        compose("quickstart", *s3_overrides(), "storage.secret_access_key=abc")


def test_ray_storage_s3_writes_through_pyarrow(compose, moto_s3, s3_bucket, tmp_path):
    """The (path, filesystem) pair Ray Train gets really writes to the endpoint."""
    cfg = compose("quickstart", *s3_overrides(moto_s3.endpoint, s3_bucket), "storage.prefix=ckpt")
    path, fs = ray_storage(cfg, tmp_path / "run", "run-1")
    assert path == f"{s3_bucket}/ckpt/run-1/checkpoints"
    with fs.open_output_stream(f"{path}/checkpoint_000000/model.bin") as f:
        f.write(b"weights")
    obj = moto_s3.client().get_object(Bucket=s3_bucket, Key="ckpt/run-1/checkpoints/checkpoint_000000/model.bin")
    assert obj["Body"].read() == b"weights"


def test_ray_storage_s3_needs_credentials(compose, moto_s3, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = compose("quickstart", *s3_overrides(moto_s3.endpoint))
    with pytest.raises(LLMOpsError, match="no S3 credentials"):
        ray_storage(cfg, tmp_path, "r")


def test_ray_storage_s3_verify_off_is_refused(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAX")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 10)
    cfg = compose("quickstart", *s3_overrides(), "storage.verify=false")
    with pytest.raises(LLMOpsError, match="storage.verify=false.*storage.ca_bundle"):
        ray_storage(cfg, tmp_path, "r")
