"""storage=oci against a real registry on 127.0.0.1 (Debian's docker-registry, distribution 2.8).

Each test pushes a small model-like folder as a modelcar image and reads it back with llmops's
own pull code and, where installed, with skopeo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from llmops.core.errors import LLMOpsError
from llmops.storage.oci import OCIStore, pull_image, push_dir
from llmops.storage.oci_image import build_image, unpack
from llmops.storage.oci_registry import ENV_AUTH_FILE, ENV_PASSWORD, ENV_USERNAME
from llmops.storage.oci_settings import MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, OCISettings
from tests.fixtures.oci_registry import (REGISTRY_BIN, SKIP_REASON, TokenServer, free_port,
                                         oci_registry, start_registry)

pytestmark = pytest.mark.skipif(REGISTRY_BIN is None, reason=SKIP_REASON)
__all__ = ["oci_registry"]  # the fixture, imported for pytest

SKOPEO = shutil.which("skopeo")
USER, PASSWORD = "alice", "s3cret-Pa55word-for-tests"


@pytest.fixture(autouse=True)
def _no_oci_env(monkeypatch):
    for v in (ENV_USERNAME, ENV_PASSWORD, ENV_AUTH_FILE):
        monkeypatch.delenv(v, raising=False)


def model_dir(root: Path, seed: int = 0) -> Path:
    """config.json, tokenizer files, a 'weights' file, a nested folder, an empty file, a link inside."""
    rng = __import__("random").Random(seed)
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(300)}}))
    (root / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer"}')
    (root / "model.safetensors").write_bytes(rng.randbytes(300_000))
    (root / "sub").mkdir()
    (root / "sub" / "nested.txt").write_text("nested\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "sub" / "config-link.json").symlink_to("../config.json")
    return root


def digests(root: Path) -> dict[str, str]:
    """Every file (links read through) by relative path -> sha256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def settings(reg, repo: str, **kw) -> OCISettings:
    base = dict(repository=f"{reg.host}/{repo}", plain_http=True, max_attempts=2, retry_base_s=0.1,
                connect_timeout_s=2, read_timeout_s=20)
    base.update(kw)
    return OCISettings(**base)


def check_rootfs(rootfs: Path, src: Path) -> None:
    assert digests(rootfs / "models") == digests(src)
    for applet in ("sh", "ln", "sleep"):
        p = rootfs / "bin" / applet
        assert p.is_symlink() and os.readlink(p) == "busybox"
    assert os.access(rootfs / "bin" / "busybox", os.X_OK)
    # a link to a file inside the folder is stored as a regular file with that file's content
    link = rootfs / "models" / "sub" / "config-link.json"
    assert link.is_file() and not link.is_symlink()


# ------------------------------------------------------------------------------------ roundtrip
def test_push_then_pull_every_file_and_the_shell(oci_registry, tmp_path):
    src = model_dir(tmp_path / "src")
    s = settings(oci_registry, "models/quickstart")
    res = push_dir(src, s, "quickstart-20260101-000000")
    assert res.digest.startswith("sha256:") and res.blobs_uploaded == 3 and res.blobs_skipped == 0
    assert res.uri == f"oci://{oci_registry.host}/models/quickstart@{res.digest}"
    assert set(res.files) == set(digests(src))

    img = pull_image(s, res.digest, tmp_path / "pulled")
    manifest = json.loads(img.manifest)
    assert manifest["mediaType"] == MEDIA_MANIFEST and manifest["config"]["mediaType"] == MEDIA_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [MEDIA_LAYER_GZIP] * 2
    config = json.loads(img.config.path.read_bytes())
    assert config["os"] == "linux" and config["architecture"]
    assert config["config"]["Cmd"] == ["sh", "-c", "sleep infinity"]
    # diff_ids are the digests of the uncompressed layers
    import gzip
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(gzip.decompress(b.path.read_bytes())).hexdigest() for b in img.layers]

    check_rootfs(unpack(tmp_path / "pulled", tmp_path / "rootfs"), src)
    assert digests(unpack(tmp_path / "pulled", tmp_path / "models-only", subdir="models")) == digests(src)
    # the tag names the same manifest
    assert pull_image(s, "quickstart-20260101-000000", tmp_path / "by-tag").digest == res.digest


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (apt-get install -y skopeo)")
def test_skopeo_reads_the_image(oci_registry, tmp_path):
    src = model_dir(tmp_path / "src", seed=1)
    s = settings(oci_registry, "models/skopeo")
    res = push_dir(src, s, "r1")
    ref = f"docker://{oci_registry.host}/models/skopeo@{res.digest}"
    out = subprocess.run([SKOPEO, "inspect", "--tls-verify=false", ref], capture_output=True, text=True,
                         timeout=60, check=True)
    info = json.loads(out.stdout)
    assert info["Digest"] == res.digest and info["Os"] == "linux" and len(info["Layers"]) == 2
    subprocess.run([SKOPEO, "copy", "--quiet", "--src-tls-verify=false", ref, f"oci:{tmp_path / 'layout'}:r1"],
                   capture_output=True, text=True, timeout=60, check=True)
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == res.digest  # skopeo kept the bytes as they are
    check_rootfs(unpack(tmp_path / "layout", tmp_path / "rootfs"), src)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("chroot"), reason="chroot needs root")
def test_kserve_modelcar_command_runs_in_the_image(oci_registry, tmp_path):
    src = model_dir(tmp_path / "src", seed=2)
    s = settings(oci_registry, "models/chroot")
    res = push_dir(src, s, "r1")
    pull_image(s, res.digest, tmp_path / "pulled")
    rootfs = unpack(tmp_path / "pulled", tmp_path / "rootfs")
    # KServe's sidecar command (pkg/utils/storage.go), with sleep 0 instead of infinity
    cmd = "ln -sf /proc/$$/root/models /mnt/models && sleep 0"
    subprocess.run([shutil.which("chroot"), str(rootfs), "/bin/sh", "-c", cmd], check=True, timeout=30, env={"PATH": "/bin"})
    link = os.readlink(rootfs / "mnt" / "models")
    assert link.startswith("/proc/") and link.endswith("/root/models")


# -------------------------------------------------------------------------------- deterministic
def test_same_folder_same_digest_and_no_upload_the_second_time(oci_registry, tmp_path):
    src = model_dir(tmp_path / "src", seed=3)
    s = settings(oci_registry, "models/twice")
    first = push_dir(src, s, "run-a")
    blobs_before = oci_registry.blob_files()
    second = push_dir(src, s, "run-b")
    assert second.digest == first.digest
    assert (second.blobs_uploaded, second.blobs_skipped, second.bytes_uploaded) == (0, 3, 0)
    assert oci_registry.blob_files() == blobs_before

    # a copy elsewhere, with other mtimes, gives the same image; one changed byte does not
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(src, copy, symlinks=True)
    for p in copy.rglob("*"):
        if not p.is_symlink():
            os.utime(p, (1e9, 1e9))
    assert build_image(copy, tmp_path / "l1").digest == first.digest
    (copy / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    assert build_image(copy, tmp_path / "l2").digest != first.digest


# ---------------------------------------------------------------------------------------- links
def test_symlink_outside_the_folder_is_refused_naming_the_file(oci_registry, tmp_path):
    src = model_dir(tmp_path / "src", seed=4)
    (tmp_path / "secret.txt").write_text("outside")
    (src / "sub" / "leak.json").symlink_to(tmp_path / "secret.txt")
    s = settings(oci_registry, "models/links")
    with pytest.raises(LLMOpsError) as e:
        push_dir(src, s, "r1")
    assert str(src / "sub" / "leak.json") in str(e.value) and "outside the model folder" in str(e.value)
    assert OCIStore(s).exists(f"oci://{s.repository}:r1") is False
    (src / "sub" / "leak.json").unlink()
    (src / "up").symlink_to("..")  # a folder link that climbs out
    with pytest.raises(LLMOpsError, match="up"):
        build_image(src, tmp_path / "layout")


# -------------------------------------------------------------------------------------- errors
def test_unreachable_registry_fails_in_seconds_naming_the_key(tmp_path):
    s = OCISettings(repository=f"127.0.0.1:{free_port()}/models/x", plain_http=True, max_attempts=2,
                    retry_base_s=0.1, connect_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(LLMOpsError) as e:
        push_dir(model_dir(tmp_path / "src"), s, "r1")
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert f"storage.repository={s.repository!r}" in msg and "cannot reach" in msg and "storage.plain_http" in msg


def test_https_against_a_plain_http_registry_names_plain_http(oci_registry, tmp_path):
    s = settings(oci_registry, "models/tls", plain_http=False)
    with pytest.raises(LLMOpsError, match="storage.plain_http"):
        push_dir(model_dir(tmp_path / "src"), s, "r1")


def test_bad_repository_and_unknown_image(oci_registry, tmp_path):
    with pytest.raises(LLMOpsError, match="storage.repository"):
        push_dir(model_dir(tmp_path / "src"), OCISettings(repository="no-registry-here"), "r1")
    with pytest.raises(LLMOpsError, match="storage.repository.*not a repository name"):
        push_dir(tmp_path / "src", OCISettings(repository=f"{oci_registry.host}/Models/Upper"), "r1")
    s = settings(oci_registry, "models/never-pushed")
    with pytest.raises(LLMOpsError) as e:
        pull_image(s, "r1", tmp_path / "pulled")
    assert "storage.repository" in str(e.value) and "never-pushed" in str(e.value)


# ---------------------------------------------------------------------------------------- auth
@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry-auth"), auth=("htpasswd", {USER: PASSWORD}))
    yield reg
    reg.stop()


def test_htpasswd_registry_refuses_wrong_credentials_and_accepts_right_ones(
        htpasswd_registry, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    src = model_dir(tmp_path / "src", seed=5)
    s = settings(htpasswd_registry, "models/private")
    with pytest.raises(LLMOpsError) as e:  # none at all
        push_dir(src, s, "r1")
    assert "asks for credentials" in str(e.value) and ENV_USERNAME in str(e.value) and ENV_PASSWORD in str(e.value)

    wrong = "not-the-Pa55word"
    monkeypatch.setenv(ENV_USERNAME, USER)
    monkeypatch.setenv(ENV_PASSWORD, wrong)
    with pytest.raises(LLMOpsError) as e:
        push_dir(src, s, "r1")
    msg = str(e.value)
    assert "refused the credentials" in msg and ENV_USERNAME in msg and ENV_PASSWORD in msg
    assert "storage.repository" in msg and wrong not in msg

    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
    res = push_dir(src, s, "r1")
    pull_image(s, res.digest, tmp_path / "pulled")
    assert digests(unpack(tmp_path / "pulled", tmp_path / "m", subdir="models")) == digests(src)
    assert PASSWORD not in caplog.text and wrong not in caplog.text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in caplog.text
    for f in tmp_path.rglob("*"):  # nor in any file the push and pull wrote
        if f.is_file() and not f.is_symlink():
            assert PASSWORD.encode() not in f.read_bytes(), f


def test_auth_file_from_registry_auth_file(htpasswd_registry, tmp_path, monkeypatch):
    src = model_dir(tmp_path / "src", seed=6)
    s = settings(htpasswd_registry, "models/authfile")
    auth = tmp_path / "auth.json"
    token = base64.b64encode(f"{USER}:wrong-password".encode()).decode()
    auth.write_text(json.dumps({"auths": {htpasswd_registry.host: {"auth": token}}}))
    monkeypatch.setenv(ENV_AUTH_FILE, str(auth))
    with pytest.raises(LLMOpsError) as e:
        push_dir(src, s, "r1")
    assert ENV_AUTH_FILE in str(e.value) and "refused" in str(e.value) and "wrong-password" not in str(e.value)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {f"http://{htpasswd_registry.host}/v2/": {"auth": token}}}))
    assert push_dir(src, s, "r1").blobs_uploaded == 3
    monkeypatch.setenv(ENV_AUTH_FILE, str(tmp_path / "missing.json"))
    with pytest.raises(LLMOpsError, match=ENV_AUTH_FILE):
        push_dir(src, s, "r1")


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry-token")
    ts = TokenServer(tmp, {USER: PASSWORD})
    reg = start_registry(tmp, auth=("token", ts))
    yield reg, ts
    reg.stop()
    ts.stop()


def test_bearer_token_flow(token_registry, tmp_path, monkeypatch):
    reg, ts = token_registry
    src = model_dir(tmp_path / "src", seed=7)
    s = settings(reg, "models/bearer")
    monkeypatch.setenv(ENV_USERNAME, USER)
    monkeypatch.setenv(ENV_PASSWORD, "wrong-Pa55word")
    with pytest.raises(LLMOpsError) as e:
        push_dir(src, s, "r1")
    assert "refused the credentials" in str(e.value) and ENV_PASSWORD in str(e.value)
    assert "wrong-Pa55word" not in str(e.value)

    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
    res = push_dir(src, s, "r1")
    assert res.blobs_uploaded == 3
    granted = [r for r in ts.requests if r["ok"]]
    assert granted and "repository:models/bearer:pull,push" in granted[-1]["scopes"]
    pull_image(s, res.digest, tmp_path / "pulled")
    check_rootfs(unpack(tmp_path / "pulled", tmp_path / "rootfs"), src)


# ------------------------------------------------------------------------------ base image, store
def test_base_image_layers_are_mounted_not_sent(oci_registry, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = push_dir(empty, settings(oci_registry, "base/shell"), "1")  # busybox + an empty /models
    src = model_dir(tmp_path / "src", seed=8)
    s = settings(oci_registry, "models/with-base", base_image=f"{oci_registry.host}/base/shell:1")
    res = push_dir(src, s, "r1")
    assert res.blobs_mounted == 2 and res.blobs_uploaded == 2  # model layer + config
    pull_image(s, res.digest, tmp_path / "pulled")
    manifest = json.loads((tmp_path / "pulled" / "blobs" / "sha256" / res.digest[7:]).read_bytes())
    assert len(manifest["layers"]) == 3 and base.digest != res.digest
    check_rootfs(unpack(tmp_path / "pulled", tmp_path / "rootfs"), src)


def test_store_put_get_exists_serving_uri(oci_registry, tmp_path):
    src = model_dir(tmp_path / "src", seed=9)
    store = OCIStore(settings(oci_registry, "models/store"))
    uri = f"oci://{oci_registry.host}/models/store:run-1"
    assert not store.exists(uri)
    manifest = store.put_dir(src, uri)
    digest = manifest["oci"]["digest"]
    assert store.exists(uri) and store.exists(f"oci://{oci_registry.host}/models/store@{digest}")
    assert store.serving_uri(uri) == f"oci://{oci_registry.host}/models/store@{digest}"
    assert OCIStore(store.settings).serving_uri(uri) == store.serving_uri(uri)  # resolved by the registry
    out = store.get_dir(uri, tmp_path / "out")
    assert digests(out) == digests(src)
