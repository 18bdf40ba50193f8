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


WARM_RAY_HOME: list = []


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep caches and outputs of a test out of the user's home and the repo."""
    cache = tmp_path_factory.getbasetemp() / "llmops-cache"
    monkeypatch.setenv("LLMOPS_TEST_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # the warm Ray head of cluster=local: one for this test session, not the user's
    WARM_RAY_HOME[:] = [tmp_path_factory.getbasetemp() / "llmops-ray"]
    monkeypatch.setenv("LLMOPS_RAY_HOME", str(WARM_RAY_HOME[-1]))
    yield


@pytest.fixture(autouse=True)
def _restore_logging():
    """An in-process `llmops run` lets Hydra configure logging with handlers bound to the
    test's captured streams; later tests would write to closed streams. Put logging back."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {n: (list(lg.handlers), lg.level, lg.propagate)
             for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            h, lv, prop = named.get(n, ([], logging.NOTSET, True))
            lg.handlers[:] = h
            lg.setLevel(lv)
            lg.propagate = prop


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the offline WikiText-2 / GPT-2 tokenizer data is needed")
    return SHARED_DATA


def pytest_sessionfinish(session, exitstatus):
    """torch logs cache statistics from an atexit hook, after pytest closed its capture streams:
    do not print a 'Logging error' traceback for that."""
    import logging

    logging.raiseExceptions = False
    # end the warm Ray head the session's runs started (only that one: its own record)
    home = WARM_RAY_HOME[-1] if WARM_RAY_HOME else None
    if home is not None and (home / "head.json").is_file():
        os.environ["LLMOPS_RAY_HOME"] = str(home)
        from llmops.clusters import warm_ray

        warm_ray.stop()
