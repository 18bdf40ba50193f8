"""Fixtures for recipe sources: a real S3 endpoint (moto server on 127.0.0.1), a recipe folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEAM_PKG = Path(__file__).resolve().parent / "data" / "team_pkg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint, monkeypatch, tmp_path):
    """boto3's environment pointed at the loopback S3; recipe-source caches reset."""
    from llmops.config import sources as rs

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LLMOPS_CACHE_DIR", str(tmp_path / "cache"))
    rs._s3_sources.clear()
    yield moto_endpoint
    rs._s3_sources.clear()


@pytest.fixture
def recipe_env(monkeypatch, tmp_path):
    """A clean recipe path (no inherited LLMOPS_RECIPE_PATH), caches under tmp_path."""
    from llmops.config import sources as rs

    monkeypatch.delenv("LLMOPS_RECIPE_PATH", raising=False)
    monkeypatch.setenv("LLMOPS_CACHE_DIR", str(tmp_path / "cache"))
    rs._s3_sources.clear()
    yield
    rs._s3_sources.clear()


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 120):
    """The real CLI in a fresh interpreter (Hydra plugins are discovered per process)."""
    e = dict(os.environ)
    e.update(env or {})
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-m", "llmops.cli", *args], capture_output=True, text=True,
                          env=e, cwd=cwd or ROOT, timeout=timeout)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One tokenized-data cache for the session: the first prepare_data pays, the rest hit it."""
    return tmp_path_factory.getbasetemp() / "llmops-shared-cache"
