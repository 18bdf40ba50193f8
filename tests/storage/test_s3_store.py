"""S3Store against a real S3 HTTP endpoint on 127.0.0.1 (moto's server)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from llmops.core.errors import LLMOpsError
from llmops.storage import MANIFEST
from llmops.storage.s3 import SHA_META, S3Error, S3Settings, S3Store
from tests.fixtures.s3 import TEST_ACCESS_KEY, TEST_SECRET_KEY

MiB = 1024 * 1024


def model_dir(root: Path, big_mb: int = 0, n_small: int = 3, seed: int = 0) -> Path:
    """A model-like folder: config/tokenizer json files and optionally a big weights file."""
    root.mkdir(parents=True, exist_ok=True)
    rng = __import__("random").Random(seed)
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "seed": seed}))
    for i in range(n_small):
        (root / f"tokenizer_{i}.json").write_bytes(rng.randbytes(1000 + 317 * i))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "nested.txt").write_text("nested file\n")
    (root / "empty.txt").write_bytes(b"")
    if big_mb:
        (root / "model.safetensors").write_bytes(rng.randbytes(big_mb * MiB))
    return root


def store_for(srv, bucket: str, **kw) -> S3Store:
    base = dict(bucket=bucket, endpoint_url=srv.endpoint, region="us-east-1", addressing_style="path",
                multipart_threshold_mb=5, multipart_chunk_mb=5, max_concurrency=4, max_attempts=3,
                retry_base_s=0.05, connect_timeout_s=2, read_timeout_s=20)
    base.update(kw)
    return S3Store(S3Settings(**base))


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- roundtrip
def test_put_get_roundtrip_manifest_and_metadata(moto_s3, s3_bucket, tmp_path):
    src = model_dir(tmp_path / "src", big_mb=11)
    st = store_for(moto_s3, s3_bucket)
    uri = f"s3://{s3_bucket}/models/run-1/hf/"
    assert not st.exists(uri)
    manifest = st.put_dir(src, uri)
    assert st.exists(uri)
    assert set(manifest["files"]) == set(tree(src))
    assert manifest["files"]["model.safetensors"]["size"] == 11 * MiB
    assert st.last_stats.bytes_sent == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())

    c = moto_s3.client()
    stored = json.loads(c.get_object(Bucket=s3_bucket, Key=f"models/run-1/hf/{MANIFEST}")["Body"].read())
    assert stored == manifest
    head = c.head_object(Bucket=s3_bucket, Key="models/run-1/hf/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # 11 MB in 5 MB parts: a multipart object
    assert head["Metadata"][SHA_META] == manifest["files"]["model.safetensors"]["sha256"]

    out = st.get_dir(uri, tmp_path / "dst")
    assert tree(out) == tree(src)
    assert not [p for p in out.rglob(".llmops-tmp-*")]
    # a parent prefix is not a model: no manifest there
    assert not st.exists(f"s3://{s3_bucket}/models/run-1/")


def test_rerun_sends_only_what_changed_and_removes_stale(moto_s3, s3_bucket, tmp_path):
    src = model_dir(tmp_path / "src", big_mb=6)
    st = store_for(moto_s3, s3_bucket)
    uri = f"s3://{s3_bucket}/m/r/hf/"
    st.put_dir(src, uri)
    st.put_dir(src, uri)
    assert st.last_stats.bytes_sent == 0  # identical: nothing sent

    (src / "config.json").write_text('{"model_type": "gpt2", "changed": true}')
    (src / "tokenizer_1.json").unlink()
    st.put_dir(src, uri)
    assert st.last_stats.files_sent == 1
    assert st.last_stats.bytes_sent == (src / "config.json").stat().st_size
    assert st.last_stats.deleted == 1
    keys = {o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=s3_bucket, Prefix="m/r/hf/")["Contents"]}
    assert "m/r/hf/tokenizer_1.json" not in keys
    assert tree(st.get_dir(uri, tmp_path / "dst")) == tree(src)


def test_same_size_different_content_is_resent(moto_s3, s3_bucket, tmp_path):
    src = model_dir(tmp_path / "src")
    st = store_for(moto_s3, s3_bucket)
    uri = f"s3://{s3_bucket}/m/r/hf/"
    st.put_dir(src, uri)
    data = bytearray((src / "tokenizer_0.json").read_bytes())
    data[10] ^= 0xFF
    (src / "tokenizer_0.json").write_bytes(bytes(data))
    st.put_dir(src, uri)
    assert st.last_stats.files_sent == 1 and st.last_stats.bytes_sent == len(data)
    assert (st.get_dir(uri, tmp_path / "dst") / "tokenizer_0.json").read_bytes() == bytes(data)


def test_manifest_is_written_last_and_removed_first(moto_s3, s3_bucket, tmp_path):
    """While a prefix is being (re)written it has no manifest: never treated as complete."""
    src = model_dir(tmp_path / "src", big_mb=11)
    st = store_for(moto_s3, s3_bucket, max_concurrency=1)
    uri = f"s3://{s3_bucket}/m/r/hf/"
    st.put_dir(src, uri)
    (src / "model.safetensors").write_bytes(os.urandom(11 * MiB))
    seen = []
    t = threading.Thread(target=lambda: seen.append(st.put_dir(src, uri)))
    t.start()
    # watch from another client while the upload runs
    saw_incomplete = False
    while t.is_alive():
        if not S3Store(st.s).exists(uri):
            saw_incomplete = True
        time.sleep(0.02)
    t.join()
    assert seen and saw_incomplete
    assert st.exists(uri)


def test_get_dir_rejects_corrupt_object(moto_s3, s3_bucket, tmp_path):
    src = model_dir(tmp_path / "src")
    st = store_for(moto_s3, s3_bucket)
    uri = f"s3://{s3_bucket}/m/r/hf/"
    st.put_dir(src, uri)
    moto_s3.client().put_object(Bucket=s3_bucket, Key="m/r/hf/config.json", Body=b'{"tampered": 1}')
    dst = tmp_path / "dst"
    with pytest.raises(S3Error, match=r"s3://.*/m/r/hf/config.json: downloaded .* sha256"):
        st.get_dir(uri, dst)
    assert not (dst / "config.json").exists()  # nothing half-written or wrong left behind
    assert not list(dst.rglob(".llmops-tmp-*"))


def test_get_dir_without_manifest_is_incomplete(moto_s3, s3_bucket, tmp_path):
    moto_s3.client().put_object(Bucket=s3_bucket, Key="m/half/hf/model.safetensors", Body=b"x" * 100)
    st = store_for(moto_s3, s3_bucket)
    assert not st.exists(f"s3://{s3_bucket}/m/half/hf/")
    with pytest.raises(S3Error, match="no llmops-manifest.json.*incomplete"):
        st.get_dir(f"s3://{s3_bucket}/m/half/hf/", tmp_path / "dst")


def test_get_dir_skips_files_already_correct(moto_s3, s3_bucket, tmp_path):
    src = model_dir(tmp_path / "src")
    st = store_for(moto_s3, s3_bucket)
    uri = f"s3://{s3_bucket}/m/r/hf/"
    st.put_dir(src, uri)
    dst = st.get_dir(uri, tmp_path / "dst")
    (dst / "config.json").write_text("local garbage")
    st.get_dir(uri, dst)
    assert st.last_stats.bytes_sent == (src / "config.json").stat().st_size
    assert tree(dst) == tree(src)


# ---------------------------------------------------------------------------------- bad inputs
def test_missing_bucket_without_create(moto_s3, tmp_path):
    st = store_for(moto_s3, "no-such-bucket")
    with pytest.raises(S3Error) as e:
        st.put_dir(model_dir(tmp_path / "src"), "s3://no-such-bucket/m/r/hf/")
    assert "bucket 'no-such-bucket' does not exist" in str(e.value)
    assert "storage.create_bucket=true" in str(e.value)
    assert not st.exists("s3://no-such-bucket/m/r/hf/")


def test_missing_bucket_is_created_when_asked(moto_s3, tmp_path):
    st = store_for(moto_s3, "made-by-llmops", create_bucket=True)
    st.put_dir(model_dir(tmp_path / "src"), "s3://made-by-llmops/m/r/hf/")
    assert st.exists("s3://made-by-llmops/m/r/hf/")


def test_wrong_endpoint_names_endpoint_and_key(tmp_path, monkeypatch):
    from tests.fixtures.s3 import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    port = free_port()  # nothing listens there
    st = S3Store(S3Settings(bucket="bkt", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2,
                            retry_base_s=0.01, connect_timeout_s=1))
    t0 = time.time()
    with pytest.raises(S3Error) as e:
        st.put_dir(model_dir(tmp_path / "src"), "s3://bkt/m/r/hf/")
    msg = str(e.value)
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in msg
    assert "s3://bkt/" in msg and "storage.endpoint_url" in msg and "after 2 attempts" in msg
    assert time.time() - t0 < 10


def test_no_credentials(moto_s3, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(S3Error, match="no S3 credentials in the environment; set AWS_ACCESS_KEY_ID"):
        store_for(moto_s3, s3_bucket).put_dir(model_dir(tmp_path / "src"), f"s3://{s3_bucket}/m/r/hf/")


def test_unknown_profile(moto_s3, s3_bucket, tmp_path):
    with pytest.raises(LLMOpsError, match="storage.profile = 'nope': no such profile"):
        store_for(moto_s3, s3_bucket, profile="nope").exists(f"s3://{s3_bucket}/m/")


def test_named_profile_supplies_credentials(moto_s3, s3_bucket, tmp_path, monkeypatch):
    creds = tmp_path / "no-aws-credentials"  # the file the fixture points boto at
    creds.write_text(f"[minio]\naws_access_key_id = {TEST_ACCESS_KEY}\n"
                     f"aws_secret_access_key = {TEST_SECRET_KEY}\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    st = store_for(moto_s3, s3_bucket, profile="minio")
    st.put_dir(model_dir(tmp_path / "src"), f"s3://{s3_bucket}/m/p/hf/")
    assert st.exists(f"s3://{s3_bucket}/m/p/hf/")


def test_bad_uri():
    st = S3Store(S3Settings(bucket="bkt"))
    with pytest.raises(LLMOpsError, match="expected an s3://BUCKET/PREFIX/ URI"):
        st.exists("file:///tmp/x/")


def test_unsafe_manifest_path_rejected(moto_s3, s3_bucket, tmp_path):
    c = moto_s3.client()
    c.put_object(Bucket=s3_bucket, Key=f"m/evil/{MANIFEST}",
                 Body=json.dumps({"version": 1, "files": {"../../escape.txt": {"size": 1, "sha256": "0"}}}))
    with pytest.raises(LLMOpsError, match="unsafe path '../../escape.txt'"):
        store_for(moto_s3, s3_bucket).get_dir(f"s3://{s3_bucket}/m/evil/", tmp_path / "dst")
    assert not (tmp_path / "escape.txt").exists()


# ------------------------------------------------------------------------- credentials and IAM
def iam_store(srv, user: str | None, monkeypatch, key=None, secret=None) -> S3Store:
    k, s = srv.users[user] if user else (key, secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", k)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return S3Store(S3Settings(bucket=srv.BUCKET, endpoint_url=srv.endpoint, region="us-east-1",
                              max_attempts=2, retry_base_s=0.01))


def test_iam_writer_can_upload(moto_s3_iam, monkeypatch, tmp_path):
    st = iam_store(moto_s3_iam, "writer", monkeypatch)
    uri = f"s3://{moto_s3_iam.BUCKET}/m/w/hf/"
    st.put_dir(model_dir(tmp_path / "src"), uri)
    assert st.exists(uri)
    assert tree(st.get_dir(uri, tmp_path / "dst")) == tree(tmp_path / "src")


def test_unknown_access_key(moto_s3_iam, monkeypatch, tmp_path):
    st = iam_store(moto_s3_iam, None, monkeypatch, "AKIANOTKNOWN00000000", "whatever-secret-value")
    with pytest.raises(S3Error) as e:
        st.put_dir(model_dir(tmp_path / "src"), f"s3://{moto_s3_iam.BUCKET}/m/x/hf/")
    assert e.value.code == "InvalidAccessKeyId", str(e.value)
    assert "rejected the credentials" in str(e.value)
    assert f"s3://{moto_s3_iam.BUCKET}/" in str(e.value)
    assert "whatever-secret-value" not in str(e.value)


def test_wrong_secret_key(moto_s3_iam, monkeypatch, tmp_path):
    key, _ = moto_s3_iam.users["writer"]
    st = iam_store(moto_s3_iam, None, monkeypatch, key, "definitely-the-wrong-secret")
    with pytest.raises(S3Error) as e:
        st.put_dir(model_dir(tmp_path / "src"), f"s3://{moto_s3_iam.BUCKET}/m/x/hf/")
    assert e.value.code == "SignatureDoesNotMatch", str(e.value)
    assert "rejected the credentials" in str(e.value) and "AWS_ACCESS_KEY_ID" in str(e.value)


def test_read_only_user_gets_access_denied(moto_s3_iam, monkeypatch, tmp_path):
    st = iam_store(moto_s3_iam, "reader", monkeypatch)
    with pytest.raises(S3Error) as e:
        st.put_dir(model_dir(tmp_path / "src"), f"s3://{moto_s3_iam.BUCKET}/m/ro/hf/")
    assert e.value.code == "AccessDenied", str(e.value)
    assert f"s3://{moto_s3_iam.BUCKET}/m/ro/hf/" in str(e.value)
    assert "access denied" in str(e.value)
    assert not st.exists(f"s3://{moto_s3_iam.BUCKET}/m/ro/hf/")


# ---------------------------------------------------------------------------------------- faults
def _run_in_thread(fn):
    box: dict = {}

    def go():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=go)
    t.start()
    return t, box


@pytest.mark.slow
def test_endpoint_goes_away_mid_upload_then_rerun_resumes(moto_s3, s3_bucket, tmp_path, caplog):
    """Stop the server mid-upload: a clear error, no manifest; restart and rerun: only the rest is sent."""
    src = tmp_path / "src"
    model_dir(src)
    for i in range(4):  # 4 multipart files (3 parts each) + 12 small ones
        (src / f"model-{i:05d}-of-00004.safetensors").write_bytes(os.urandom(11 * MiB))
    for i in range(12):
        (src / f"shard_{i}.json").write_bytes(os.urandom(300_000))
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    uri = f"s3://{s3_bucket}/models/r/hf/"
    st = store_for(moto_s3, s3_bucket, max_concurrency=2, max_attempts=2)
    caplog.set_level(logging.INFO, logger="llmops")

    t, box = _run_in_thread(lambda: st.put_dir(src, uri))
    while st.last_stats.bytes_sent < total * 0.4 and t.is_alive():
        time.sleep(0.01)
    assert t.is_alive(), "upload finished before the fault could be injected"
    moto_s3.stop()
    t.join(60)
    assert not t.is_alive()
    err = box.get("error")
    assert isinstance(err, S3Error), box
    assert f"s3://{s3_bucket}/models/r/hf/" in str(err) and moto_s3.endpoint in str(err)
    first_sent = st.last_stats.bytes_sent + st.last_stats.bytes_failed  # failed: an answer may be lost

    moto_s3.start()
    assert not st.exists(uri)  # no partial model is complete
    with pytest.raises(S3Error, match="incomplete"):
        st.get_dir(uri, tmp_path / "never")
    c = moto_s3.client()
    before = {o["Key"]: o["LastModified"] for o in
              c.list_objects_v2(Bucket=s3_bucket, Prefix="models/r/hf/").get("Contents", [])}
    ups = c.list_multipart_uploads(Bucket=s3_bucket, Prefix="models/r/hf/").get("Uploads", [])
    listed = [p for u in ups for p in
              c.list_parts(Bucket=s3_bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])]
    parts_before, part_bytes_before = len(listed), sum(p["Size"] for p in listed)
    assert before or parts_before

    st2 = store_for(moto_s3, s3_bucket, max_concurrency=2)
    st2.put_dir(src, uri)
    assert st2.exists(uri)
    resent = st2.last_stats.bytes_sent
    done_bytes = sum((src / k[len("models/r/hf/"):]).stat().st_size for k in before)
    # exactly what was missing went over the wire: finished files and stored parts were not resent
    assert st2.last_stats.parts_reused == parts_before
    assert resent == total - done_bytes - part_bytes_before
    assert resent < total
    after = {o["Key"]: o["LastModified"] for o in c.list_objects_v2(Bucket=s3_bucket, Prefix="models/r/hf/")["Contents"]}
    for k, lm in before.items():  # files finished before the fault were not rewritten
        assert after[k] == lm, k
    assert tree(st2.get_dir(uri, tmp_path / "dst")) == tree(src)
    assert not c.list_multipart_uploads(Bucket=s3_bucket, Prefix="models/r/hf/").get("Uploads")
    assert first_sent + resent >= total
    # the log tells what happened, and carries no credential
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry" in text and "resuming an interrupted upload" in text or parts_before == 0
    assert TEST_SECRET_KEY not in text and TEST_ACCESS_KEY not in text


def test_transient_5xx_is_retried(moto_s3, s3_bucket, tmp_path, monkeypatch, caplog):
    """A 503 SlowDown from the endpoint is retried with backoff, then the upload completes."""
    from botocore.exceptions import ClientError

    st = store_for(moto_s3, s3_bucket, max_attempts=4)
    real = st.client.put_object
    calls = {"n": 0}

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        return real(**kw)

    monkeypatch.setattr(st.client, "put_object", flaky)
    caplog.set_level(logging.WARNING, logger="llmops")
    st.put_dir(model_dir(tmp_path / "src", n_small=1), f"s3://{s3_bucket}/m/r/hf/")
    assert st.exists(f"s3://{s3_bucket}/m/r/hf/")
    assert st.last_stats.retries == 2
    assert sum("SlowDown; retry" in r.getMessage() for r in caplog.records) == 2


def test_full_disk_while_downloading(moto_s3, s3_bucket, tmp_path):
    """ENOSPC from a real 1 MB tmpfs (private mount namespace): error names key and local path."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs `unshare -rm` (user + mount namespaces) to mount a small tmpfs")
    src = model_dir(tmp_path / "src", big_mb=2)
    uri = f"s3://{s3_bucket}/m/r/hf/"
    store_for(moto_s3, s3_bucket).put_dir(src, uri)
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from llmops.storage.s3 import S3Store, S3Settings
from llmops.core.errors import LLMOpsError
st = S3Store(S3Settings(bucket={s3_bucket!r}, endpoint_url={moto_s3.endpoint!r}, region="us-east-1"))
try:
    st.get_dir({uri!r}, Path({str(mnt / "model")!r}))
except LLMOpsError as e:
    print("ERROR:", e)
    left = [p.name for p in Path({str(mnt)!r}).rglob("*") if p.is_file()]
    print("LEFT:", sorted(left))
    sys.exit(3)
"""
    r = subprocess.run(["unshare", "-rm", "sh", "-c",
                        f"mount -t tmpfs -o size=1m tmpfs {mnt} && exec {sys.executable} -c \"$0\"", script],
                       capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert r.returncode == 3, r.stdout + r.stderr
    import re

    # several files are written in parallel: whichever hits the full disk first is named
    m = re.search(rf"no space left on the device for {re.escape(str(mnt / 'model'))}/(\S+) while "
                  rf"downloading s3://{s3_bucket}/m/r/hf/(\S+) ", r.stdout)
    assert m and m.group(1) == m.group(2), r.stdout
    assert ".llmops-tmp-" not in r.stdout.split("LEFT:")[1]  # temporary files removed


def test_empty_folder_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    st = S3Store(S3Settings(bucket="bkt", endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(LLMOpsError, match="an empty folder is not a model"):
        st.put_dir(tmp_path / "empty", "s3://bkt/m/r/hf/")


def test_interrupted_multipart_upload_resumes_by_part(moto_s3, s3_bucket, tmp_path):
    """Parts already stored (matching MD5) are kept; a part whose bytes changed is sent again."""
    src = model_dir(tmp_path / "src", big_mb=17)  # 4 parts of 5 MB (the last 2 MB)
    path, key = src / "model.safetensors", "m/r/hf/model.safetensors"
    data = path.read_bytes()
    c = moto_s3.client()
    up = c.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    c.upload_part(Bucket=s3_bucket, Key=key, UploadId=up, PartNumber=1, Body=data[:5 * MiB])
    c.upload_part(Bucket=s3_bucket, Key=key, UploadId=up, PartNumber=2, Body=data[5 * MiB:10 * MiB])
    c.upload_part(Bucket=s3_bucket, Key=key, UploadId=up, PartNumber=3, Body=b"\0" * (5 * MiB))  # stale bytes
    st = store_for(moto_s3, s3_bucket)
    st.put_dir(src, f"s3://{s3_bucket}/m/r/hf/")
    small = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and p != path)
    assert st.last_stats.parts_reused == 2
    assert st.last_stats.bytes_sent == small + len(data) - 10 * MiB
    assert (st.get_dir(f"s3://{s3_bucket}/m/r/hf/", tmp_path / "dst") / "model.safetensors").read_bytes() == data
    assert not c.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_short_outage_is_ridden_out_by_retries(moto_s3, s3_bucket, tmp_path, caplog):
    """The endpoint disappears for a moment mid-upload: requests are retried and the upload completes."""
    src = model_dir(tmp_path / "src", big_mb=16, n_small=20)
    st = store_for(moto_s3, s3_bucket, max_concurrency=2, max_attempts=8, retry_base_s=0.2)
    caplog.set_level(logging.WARNING, logger="llmops")
    t, box = _run_in_thread(lambda: st.put_dir(src, f"s3://{s3_bucket}/m/r/hf/"))
    while st.last_stats.bytes_sent < 5 * MiB and t.is_alive():
        time.sleep(0.005)
    moto_s3.stop()
    time.sleep(1.0)
    moto_s3.start()
    t.join(120)
    assert "error" not in box, box.get("error")
    assert st.last_stats.retries >= 1
    assert any("retry" in r.getMessage() for r in caplog.records)
    assert tree(st.get_dir(f"s3://{s3_bucket}/m/r/hf/", tmp_path / "dst")) == tree(src)


def test_bucket_root_is_refused(tmp_path):
    st = S3Store(S3Settings(bucket="bkt", endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(LLMOpsError, match="needs its own prefix"):
        st.put_dir(model_dir(tmp_path / "src"), "s3://bkt/")


# ------------------------------------------------------------------------------------------- TLS
def test_tls_with_ca_bundle(moto_s3_tls, tmp_path):
    srv = moto_s3_tls
    srv.client().create_bucket(Bucket="tls-bkt")
    st = store_for(srv, "tls-bkt", ca_bundle=str(srv.ca_path))
    st.put_dir(model_dir(tmp_path / "src"), "s3://tls-bkt/m/r/hf/")
    assert tree(st.get_dir("s3://tls-bkt/m/r/hf/", tmp_path / "dst")) == tree(tmp_path / "src")


def test_tls_unknown_ca_is_a_clear_error(moto_s3_tls, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    st = store_for(moto_s3_tls, "tls-bkt", max_attempts=1)
    with pytest.raises(S3Error) as e:
        st.exists("s3://tls-bkt/m/r/hf/")
    assert "TLS verification failed" in str(e.value) and "storage.ca_bundle" in str(e.value)
    assert "s3://tls-bkt/" in str(e.value)


def test_tls_verify_off(moto_s3_tls, tmp_path):
    moto_s3_tls.client().create_bucket(Bucket="tls-bkt")
    st = store_for(moto_s3_tls, "tls-bkt", verify=False)
    st.put_dir(model_dir(tmp_path / "src"), "s3://tls-bkt/m/r/hf/")
    assert st.exists("s3://tls-bkt/m/r/hf/")


def test_files_put_before_by_the_same_store_are_copied_by_the_server(moto_s3, s3_bucket, tmp_path):
    """The Caikit layout repeats the HF weights under artifacts/: they are not sent twice."""
    st = store_for(moto_s3, s3_bucket)
    hf = model_dir(tmp_path / "hf")
    st.put_dir(hf, f"s3://{s3_bucket}/m/r/hf/")
    caikit = tmp_path / "caikit"
    shutil.copytree(hf, caikit / "artifacts")
    (caikit / "config.yml").write_text("module_id: x\n")
    uri = f"s3://{s3_bucket}/m/r/caikit/"
    st.put_dir(caikit, uri)
    assert st.last_stats.bytes_sent == len("module_id: x\n")
    assert st.last_stats.files_copied == len([p for p in hf.rglob("*") if p.is_file()])
    assert tree(S3Store(st.s).get_dir(uri, tmp_path / "back")) == tree(caikit)
