"""LocalStore (storage=local and storage=pvc): verified copy, manifest last, stale files removed."""

from __future__ import annotations

import json

import pytest

from llmops.core.errors import LLMOpsError
from llmops.storage import MANIFEST
from llmops.storage.local import LocalStore


def _model(root):
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "w.bin").write_bytes(b"\1" * 5000)
    return root


def test_copy_manifest_and_rerun(tmp_path):
    src = _model(tmp_path / "src")
    dst_uri = (tmp_path / "store" / "run" / "hf").as_uri() + "/"
    st = LocalStore()
    assert not st.exists(dst_uri)
    m = st.put_dir(src, dst_uri)
    assert st.exists(dst_uri)
    saved = json.loads((tmp_path / "store" / "run" / "hf" / MANIFEST).read_text())
    assert saved == m and set(m["files"]) == {"config.json", "sub/w.bin"}
    assert st.get_dir(dst_uri, tmp_path / "unused") == tmp_path / "store" / "run" / "hf"


def test_stale_files_are_removed_and_tampering_detected(tmp_path):
    src = _model(tmp_path / "src")
    dst = tmp_path / "store" / "hf"
    st = LocalStore()
    st.put_dir(src, dst.as_uri() + "/")
    (src / "sub" / "w.bin").unlink()
    (src / "new.json").write_text("{}")
    st.put_dir(src, dst.as_uri() + "/")
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == ["config.json", "llmops-manifest.json",
                                                                             "new.json"]
    (dst / "config.json").write_text('{"a": 2}')
    with pytest.raises(LLMOpsError, match="config.json' does not match its sha256"):
        st.get_dir(dst.as_uri() + "/", tmp_path / "x")


def test_empty_or_missing_source_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMOpsError, match="an empty folder is not a model"):
        LocalStore().put_dir(tmp_path / "empty", (tmp_path / "d").as_uri() + "/")
    with pytest.raises(LLMOpsError, match="not a folder"):
        LocalStore().put_dir(tmp_path / "nope", (tmp_path / "d").as_uri() + "/")


def test_missing_manifest_is_incomplete(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LLMOpsError, match="incomplete or absent"):
        LocalStore().get_dir((tmp_path / "half").as_uri() + "/", tmp_path / "x")
