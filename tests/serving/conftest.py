"""Fixtures for serving tests: composed serving configs, a run context with faked export outputs."""

from __future__ import annotations

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

    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose

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


def run_after_export(cfg, run_dir: Path, export_outputs: dict, stages=("deploy",), replace=None):
    """Run the real engine on `stages` after an export stage that reports `export_outputs`
    (no training: the export stage is a stand-in). `replace`: {stage name: run function} for
    other stand-ins. Returns the engine's RunResult; raises as the engine does."""
    from omegaconf import open_dict

    from llmops.pipeline import engine
    from llmops.pipeline.stages import LINE, StageDef
    from llmops.run import ExportOutputs

    runs = {"export": lambda c, ctx: ExportOutputs.from_dict(export_outputs), **(replace or {})}
    names = ("export", *stages)
    line = tuple(StageDef(d.name, runs.get(d.name, d.run), d.plan, d.inputs if d.name != "export" else
                          (lambda c: export_outputs), d.needs if d.name != "export" else (),
                          d.describe, d.cleanup) for d in LINE if d.name in names)
    with open_dict(cfg):
        cfg.stages = list(names)
    return engine.run(cfg, run_dir, line=line)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny GPT-2 (2 layers, 64 wide) saved as an export would save it (safetensors,
    tokenizer_config naming GPT2Tokenizer): with the real GPT-2 tokenizer where ../shared/data has
    it, else with a 600-token byte-level BPE trained by llmops' own trainer (a clone of the
    repository without ../shared)."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    tok_src = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gpt2-tokenizer"
    if tok_src.is_dir():
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=256))
        model.save_pretrained(out, safe_serialization=True)
        for f in tok_src.iterdir():
            shutil.copy(f, out / f.name)
        return out
    from transformers import AutoTokenizer

    from llmops import data
    from llmops.training.export import save_hf
    from tests.data.conftest import made_rows

    tok_dir = tmp_path_factory.mktemp("tiny-bpe")
    data.train_tokenizer(made_rows(1500, seed=3), 600, tok_dir, 256)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=64,
                                       n_positions=256, bos_token_id=tok.bos_token_id,
                                       eos_token_id=tok.eos_token_id))
    save_hf(model, tok, out)
    return out


@pytest.fixture
def exported(tiny_model_dir, tmp_path) -> str:
    """The tiny model put in local storage (manifest written last); returns its file:// URI."""
    from llmops.storage.local import LocalStore

    uri = (tmp_path / "models" / RUN_ID / "hf").as_uri() + "/"
    LocalStore().put_dir(tiny_model_dir, uri)
    return uri


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """The stand-in API server on 127.0.0.1, with KUBECONFIG pointing at it. Strict field
    validation there uses the same CRD schemas (unknown fields -> 400 like the API server)."""
    from llmops.k8s import validate
    from tests.serving.kube_standin import StandIn

    s = StandIn().start()
    s.strict_validator = lambda obj: [p.split(": ", 1)[1] for p in validate.problems(obj)
                                      if "was unexpected" in p]
    monkeypatch.setenv("KUBECONFIG", s.kubeconfig(tmp_path / "kubeconfig"))
    for name in ("KUBERNETES_SERVICE_HOST", "LLMOPS_K8S_TOKEN", "LLMOPS_K8S_SERVER"):
        monkeypatch.delenv(name, raising=False)  # cluster.auth=auto: the kubeconfig
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASTANDIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "standin-secret-value-1234")
    yield s
    s.stop()
