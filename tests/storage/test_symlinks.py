"""No store follows a symbolic link out of the folder it uploads (issue 14 point 5): local, S3
(moto's server), OCI (a real registry) and the Caikit layout copy. A link to a file inside the
folder is stored as a regular file with that file's content."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from llmops.core.errors import LLMOpsError
from llmops.storage.local import LocalStore
from llmops.storage.oci import OCIStore
from llmops.storage.oci_settings import OCISettings
from llmops.storage.s3 import S3Settings, S3Store
from llmops.training.export import build_caikit
from tests.fixtures.oci_registry import REGISTRY_BIN, oci_registry

__all__ = ["oci_registry"]


def model(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (root / "tokenizer_config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"w" * 1000)
    (root / "sub").mkdir()
    return root


def link_out_to_file(root: Path, tmp: Path) -> Path:
    (tmp / "secret.txt").write_text("outside the model")
    (root / "sub" / "leak.json").symlink_to(tmp / "secret.txt")
    return root / "sub" / "leak.json"


def link_out_to_folder(root: Path, tmp: Path) -> Path:
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "a.txt").write_text("outside")
    (root / "other").symlink_to(tmp / "elsewhere", target_is_directory=True)
    return root / "other"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(params=["local", "s3", "oci"])
def store(request, tmp_path):
    """(store, uri) of each kind against its real backend."""
    if request.param == "local":
        return LocalStore(), (tmp_path / "store" / "r1" / "hf").as_uri() + "/"
    if request.param == "s3":
        moto_s3 = request.getfixturevalue("moto_s3")
        moto_s3.client().create_bucket(Bucket="links")
        st = S3Store(S3Settings(bucket="links", endpoint_url=moto_s3.endpoint, region="us-east-1",
                                max_attempts=1))
        return st, "s3://links/m/r1/hf/"
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (apt-get install -y docker-registry busybox-static)")
    reg = request.getfixturevalue("oci_registry")
    s = OCISettings(repository=f"{reg.host}/models/links", plain_http=True, max_attempts=1)
    return OCIStore(s), f"oci://{reg.host}/models/links:r-{uuid.uuid4().hex[:8]}"  # the registry is shared


@pytest.mark.parametrize("make_link", [link_out_to_file, link_out_to_folder])
def test_a_link_out_of_the_folder_is_an_error_naming_it_and_nothing_is_stored(store, make_link, tmp_path):
    st, uri = store
    src = model(tmp_path / "src")
    link = make_link(src, tmp_path)
    with pytest.raises(LLMOpsError) as e:
        st.put_dir(src, uri)
    assert str(link) in str(e.value) and "outside the model folder" in str(e.value)
    assert "outside the model\n" not in str(e.value)
    assert not st.exists(uri)


def test_a_link_to_a_file_inside_is_stored_as_a_regular_file(store, tmp_path):
    st, uri = store
    src = model(tmp_path / "src")
    (src / "sub" / "config-link.json").symlink_to("../config.json")
    manifest = st.put_dir(src, uri)
    assert manifest["files"]["sub/config-link.json"]["sha256"] == sha(src / "config.json")
    back = Path(st.get_dir(manifest.get("uri", uri), tmp_path / "back"))
    got = back / "sub" / "config-link.json"
    assert got.is_file() and not got.is_symlink() and sha(got) == sha(src / "config.json")


def test_a_link_to_a_folder_inside_is_refused_naming_it(tmp_path):
    src = model(tmp_path / "src")
    (src / "again").symlink_to("sub", target_is_directory=True)
    with pytest.raises(LLMOpsError, match=r"again: a symbolic link to the folder 'sub'"):
        LocalStore().put_dir(src, (tmp_path / "store" / "hf").as_uri() + "/")


def test_the_caikit_layout_copy_does_not_follow_links_out(tmp_path):
    src = model(tmp_path / "hf")
    link = link_out_to_file(src, tmp_path)
    with pytest.raises(LLMOpsError, match=str(link)):
        build_caikit(src, tmp_path / "caikit")
    link.unlink()
    (src / "sub" / "config-link.json").symlink_to("../config.json")
    out = build_caikit(src, tmp_path / "caikit")
    got = out / "artifacts" / "sub" / "config-link.json"
    assert got.is_file() and not got.is_symlink() and sha(got) == sha(src / "config.json")
    assert (out / "config.yml").is_file() and sha(out / "artifacts" / "model.safetensors") == sha(
        src / "model.safetensors")
