"""Shared fixtures. Tests compose real configs with Hydra's compose API and run real code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# fixture modules owned by each area (s3 server, ray head, kube stand-in, ...)
pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.s3",
    "tests.fixtures.ray_head",
]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep caches and outputs of a test out of the user's home and the repo."""
    cache = tmp_path_factory.getbasetemp() / "llmops-cache"
    monkeypatch.setenv("LLMOPS_TEST_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the offline WikiText-2 / GPT-2 tokenizer data is needed")
    return SHARED_DATA
