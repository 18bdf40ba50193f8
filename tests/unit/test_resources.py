"""The CRD schemas llmops ships are the ones the project validates against (../shared/schemas)."""

from pathlib import Path

import pytest

from llmops.core import resources

SHARED = Path(__file__).resolve().parents[3] / "shared" / "schemas"


def test_shipped_crd_schemas_equal_the_shared_ones():
    if not SHARED.is_dir():
        pytest.skip("../shared/schemas is absent")
    ours = resources.schemas_dir()
    files = sorted(p.relative_to(SHARED) for p in SHARED.rglob("*.yaml"))
    assert files, SHARED
    for rel in files:
        assert (ours / rel).read_bytes() == (SHARED / rel).read_bytes(), rel


def test_schemas_dir_can_be_pointed_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_SCHEMAS_DIR", str(tmp_path))
    assert resources.schemas_dir() == tmp_path
