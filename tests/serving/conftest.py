"""Fixtures for serving tests: composed serving configs, a run context with faked export outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RUN_ID = "quickstart-20260101-000000"
S3_OVERRIDES = ["storage.kind=s3", "storage.bucket=models", "storage.prefix=llmops",
                "storage.endpoint_url=http://minio.minio.svc:9000", f"run_id={RUN_ID}"]


@pytest.fixture(autouse=True)
def _schema_cache(tmp_path_factory, monkeypatch):
    # the extracted CRD schemas are cached once per test session, outside the user's home
    monkeypatch.setenv("LLMOPS_SCHEMA_CACHE", str(tmp_path_factory.getbasetemp() / "crd-cache"))


_CACHE: dict = {}


@pytest.fixture(scope="session")
def _session_root(tmp_path_factory):
    return tmp_path_factory.mktemp("serving-compose")


@pytest.fixture
def serving_cfg(_session_root):
    """serving_cfg(kind, *overrides): quickstart with that serving option on S3 storage.
    Composing costs seconds on a busy machine: each distinct call composes once per session and
    hands out copies."""
    import copy

    from llmops.config.compose import compose, strip_hydra

    def _c(kind: str, *overrides: str, s3: bool = True):
        key = (kind, overrides, s3)
        if key not in _CACHE:
            base = [f"paths.output_root={_session_root / 'outputs'}",
                    f"paths.cache_dir={_session_root / 'cache'}",
                    f"storage.root={_session_root / 'models'}", f"serving={kind}"]
            extra = S3_OVERRIDES if s3 else [f"run_id={RUN_ID}"]
            cfg, _ = compose("quickstart", base + extra + list(overrides))
            _CACHE[key] = strip_hydra(cfg)
        return copy.deepcopy(_CACHE[key])

    return _c


def make_ctx(run_dir: Path, cfg, export_outputs: dict, *, stages_done=("export",)):
    """A RunContext whose state.json says the export stage finished with `export_outputs`."""
    from llmops.engine import RunContext, State

    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"run_id": str(cfg.run_id), "recipe": str(cfg.recipe),
            "stages": {s: {"status": "done", "outputs": export_outputs if s == "export" else {}}
                       for s in stages_done}}
    (run_dir / "state.json").write_text(json.dumps(data))
    state = State.load(run_dir, str(cfg.run_id), str(cfg.recipe))
    return RunContext(run_dir=run_dir, run_id=str(cfg.run_id), recipe=str(cfg.recipe), state=state)
