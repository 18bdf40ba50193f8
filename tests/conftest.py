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


@pytest.fixture(scope="session", autouse=True)
def _warm_ray_home(tmp_path_factory):
    """The warm Ray head of cluster=local: one for this test session, not the user's. Session
    scoped, so module-scoped fixtures that run `llmops` see it too."""
    home = tmp_path_factory.getbasetemp() / "llmops-ray"
    old = os.environ.get("LLMOPS_RAY_HOME")
    os.environ["LLMOPS_RAY_HOME"] = str(home)
    yield home
    # end every warm head this session's runs started: the session's own, and those of tests
    # that run llmops with a HOME of their own (only heads with a record under the session's dir)
    from llmops.clusters import warm_ray

    for rec in [home / "head.json", *tmp_path_factory.getbasetemp().glob("*/home/.cache/llmops/ray/head.json")]:
        if rec.is_file():
            os.environ["LLMOPS_RAY_HOME"] = str(rec.parent)
            warm_ray.stop()
    if old is None:
        os.environ.pop("LLMOPS_RAY_HOME", None)
    else:
        os.environ["LLMOPS_RAY_HOME"] = old


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
