"""storage=local|s3|pvc: composed configs, validation, URIs, the store chosen, Ray Train storage."""

from __future__ import annotations


import pytest

from llmops.core.errors import ConfigError, LLMOpsError
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


@pytest.fixture(scope="module")
def base_cfgs(tmp_path_factory):
    """quickstart composed once per storage kind (composing is slow); cases edit a copy."""
    from llmops.pipeline.checks import compose as _compose

    out = tmp_path_factory.mktemp("cfg")
    base = [f"paths.output_root={out}", f"paths.cache_dir={out / 'cache'}"]
    return {kind: _compose("quickstart", base + [f"storage={kind}"], check=False)[0]
            for kind in ("s3", "pvc")}


@pytest.mark.parametrize("kind, edits, key, expected", [
    ("s3", {}, "storage.bucket", "a bucket name"),
    ("s3", {"bucket": "Bad_Bucket"}, "storage.bucket", "an S3 bucket name"),
    ("s3", {"bucket": "ab"}, "storage.bucket", "an S3 bucket name"),
    ("s3", {"endpoint_url": "minio:9000"}, "storage.endpoint_url", "an http:// or https:// URL"),
    ("s3", {"endpoint_url": "http://u:p@minio:9000"}, "storage.endpoint_url", "without user:password"),
    ("s3", {"addressing_style": "dns"}, "storage.addressing_style", "'path' (MinIO)"),
    ("s3", {"multipart_chunk_mb": 1}, "storage.multipart_chunk_mb", "between 5 (the S3 minimum)"),
    ("s3", {"multipart_threshold_mb": 0}, "storage.multipart_threshold_mb", ">= 5"),
    ("s3", {"max_concurrency": 0}, "storage.max_concurrency", "between 1 and 256"),
    ("s3", {"max_attempts": 0}, "storage.max_attempts", "between 1"),
    ("s3", {"retry_base_s": -1.0}, "storage.retry_base_s", ">= 0"),
    ("s3", {"read_timeout_s": 0.0}, "storage.read_timeout_s", "> 0"),
    ("s3", {"ca_bundle": "/nonexistent/ca.pem"}, "storage.ca_bundle", "an existing PEM file"),
    ("s3", {"prefix": "a/../b"}, "storage.prefix", "no '//'"),
    ("s3", {"prefix": "a//b"}, "storage.prefix", "no '//'"),
    ("pvc", {"mount_path": "/mnt/m"}, "storage.pvc_name", "PersistentVolumeClaim"),
    ("pvc", {"pvc_name": "Bad_Name", "mount_path": "/mnt/m"}, "storage.pvc_name", "DNS-1123"),
    ("pvc", {"pvc_name": "ok", "mount_path": "relative/dir"}, "storage.mount_path", "absolute path"),
])
def test_bad_storage_config_names_the_key(base_cfgs, kind, edits, key, expected):
    from omegaconf import OmegaConf

    from llmops.pipeline.checks import validate

    cfg = base_cfgs[kind].copy()
    if kind == "s3" and "bucket" not in edits and key != "storage.bucket":
        edits = {"bucket": "ok-bucket", **edits}
    for k, v in edits.items():
        OmegaConf.update(cfg, f"storage.{k}", v)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    lines = [p for p in e.value.problems if p.startswith(key)]
    assert lines and expected in lines[0], e.value.problems
    assert len(e.value.problems) == 1, e.value.problems  # nothing else wrong with the config


@pytest.mark.parametrize("kind, edits", [
    ("s3", {"bucket": "my.models-2024", "endpoint_url": "https://minio.example.com:9000", "prefix": "team/llm"}),
    ("pvc", {"pvc_name": "model-store", "mount_path": "/mnt/models"}),
])
def test_good_storage_config_passes(base_cfgs, kind, edits):
    from omegaconf import OmegaConf

    from llmops.pipeline.checks import validate

    cfg = base_cfgs[kind].copy()
    for k, v in edits.items():
        OmegaConf.update(cfg, f"storage.{k}", v)
    validate(cfg)


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


def test_ray_storage_s3_over_tls_with_ca_bundle(compose, moto_s3_tls, tmp_path):
    srv = moto_s3_tls
    srv.client().create_bucket(Bucket="tls-ckpt")
    cfg = compose("quickstart", *s3_overrides(srv.endpoint, "tls-ckpt"), f"storage.ca_bundle={srv.ca_path}")
    path, fs = ray_storage(cfg, tmp_path / "run", "run-tls")
    with fs.open_output_stream(f"{path}/checkpoint_000001/state.pt") as f:
        f.write(b"state")
    got = srv.client().get_object(Bucket="tls-ckpt", Key="models/run-tls/checkpoints/checkpoint_000001/state.pt")
    assert got["Body"].read() == b"state"


def test_worker_env_carries_credentials_from_env_or_profile(compose, tmp_path, monkeypatch):
    from llmops.core import secrets
    from llmops.storage import worker_env

    assert worker_env(compose("quickstart")) == {}
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    creds = tmp_path / "creds"
    creds.write_text("[minio]\naws_access_key_id = AKIAPROFILEKEY000001\n"
                     "aws_secret_access_key = profileSecret-0a1b2c3d\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    cfg = compose("quickstart", *s3_overrides(), "storage.profile=minio", "storage.region=eu-west-1")
    env = worker_env(cfg)
    assert env == {"AWS_ACCESS_KEY_ID": "AKIAPROFILEKEY000001", "AWS_SECRET_ACCESS_KEY": "profileSecret-0a1b2c3d",
                   "AWS_DEFAULT_REGION": "eu-west-1"}
    assert secrets.scrub(f"env {env}").count(secrets.MASK) == 2
    cfg = compose("quickstart", *s3_overrides())
    with pytest.raises(LLMOpsError, match="no S3 credentials to hand to the workers"):
        worker_env(cfg)
