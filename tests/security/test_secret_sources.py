"""Where a secret comes from decides how it is treated: a secret-named key, a secret-named
environment variable (`${oc.env:MY_API_TOKEN}`) or `${llmops.secret:NAME}` is masked wherever it
is printed or saved, and refused where it would become part of a name, label, path, URL or
prompt. An environment value that is not secret (`${oc.env:AWS_S3_ENDPOINT}`) works and shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from llmops import cli
from llmops.core.errors import ConfigError
from llmops.core.secrets import MASK, is_secret_env_name, mask

TOKEN = "tok-3f9a1c77e2d04b5a"  # MY_API_TOKEN's value
PLAIN = "plainNamedButSecret-51aa"  # reached through ${llmops.secret:...} under a plain name
ENDPOINT = "http://127.0.0.1:9/s3-endpoint-from-env"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", TOKEN)
    monkeypatch.setenv("LLMOPS_T_PLAIN", PLAIN)
    monkeypatch.setenv("AWS_S3_ENDPOINT", ENDPOINT)


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
                                  "HF_TOKEN", "MY_API_TOKEN", "DB_PASSWORD", "OPENAI_API_KEY",
                                  "GITHUB_TOKEN", "SIGNING_KEY", "CLIENT_SECRET_VALUE"])
def test_secret_env_names(name):
    assert is_secret_env_name(name)


@pytest.mark.parametrize("name", ["AWS_S3_ENDPOINT", "AWS_S3_BUCKET", "AWS_DEFAULT_REGION", "HOME",
                                  "TOKENIZERS_PARALLELISM", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                  "KUBECONFIG", "MONKEY", "SECRET_NAME"])
def test_not_secret_env_names(name):
    assert not is_secret_env_name(name)


def test_mask_follows_the_source_not_only_the_key():
    cfg = OmegaConf.create({"a": {"upstream": "${oc.env:MY_API_TOKEN}",
                                  "endpoint": "${oc.env:AWS_S3_ENDPOINT}",
                                  "plain": "${llmops.secret:LLMOPS_T_PLAIN}",
                                  "copy": "x-${a.plain}"}})
    m = mask(cfg)
    assert m["a"] == {"upstream": MASK, "endpoint": ENDPOINT, "plain": MASK, "copy": f"x-{MASK}"}
    assert cfg.a.plain == PLAIN and cfg.a.endpoint == ENDPOINT  # resolving still gives the values


def _run_cli(capfd, *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    out, err = capfd.readouterr()
    return rc, out + err


def _base(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"storage.root={tmp_path / 'models'}"]


@pytest.mark.parametrize("override,key", [
    ("+serving.labels.team=${oc.env:MY_API_TOKEN}", "serving.labels.team"),
    ("smoke_test.prompt=Say ${oc.env:MY_API_TOKEN}", "smoke_test.prompt"),
    ("run_name=r-${oc.env:MY_API_TOKEN}", "run_name"),
    ("serving.name=${llmops.secret:LLMOPS_T_PLAIN}", "serving.name"),
    ("storage.prefix=m/${oc.env:MY_API_TOKEN}", "storage.prefix"),
])
def test_secret_in_a_name_label_path_or_prompt_is_refused_naming_the_key(tmp_path, capfd, monkeypatch,
                                                                         override, key):
    monkeypatch.chdir(tmp_path)
    rc, text = _run_cli(capfd, "plan", "quickstart", *_base(tmp_path), override)
    assert rc == 1, text
    assert f"  - {key} = " in text and "without a secret in it" in text
    assert TOKEN not in text and PLAIN not in text
    # `llmops run` stops before anything is written: no run directory, nothing carrying it
    rc, text = _run_cli(capfd, "run", "quickstart", *_base(tmp_path), override)
    assert rc == 1 and key in text and TOKEN not in text and PLAIN not in text
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "models").exists()


def _texts(root: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file()}


def test_secret_env_in_cluster_envs_is_masked_and_endpoint_env_shows(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    over = [*_base(tmp_path), "+cluster.envs.UPSTREAM=${oc.env:MY_API_TOKEN}",
            "+cluster.envs.VIA_RESOLVER=${llmops.secret:LLMOPS_T_PLAIN}",
            "+cluster.envs.S3_AT=${oc.env:AWS_S3_ENDPOINT}"]
    rc, text = _run_cli(capfd, "plan", "quickstart", *over, "--format", "json")
    assert rc == 0, text
    plan = json.loads(text[text.index("{"):])
    assert plan["config"]["cluster"]["envs"] == {"UPSTREAM": MASK, "VIA_RESOLVER": MASK, "S3_AT": ENDPOINT}
    assert TOKEN not in text and PLAIN not in text

    run_dir = tmp_path / "outputs" / "envs-run"
    rc, text = _run_cli(capfd, "run", "quickstart", *over, "run_id=envs-run",
                        "stages=[prepare_data]", "dataset.max_train_blocks=32", "hydra.verbose=true")
    assert rc == 0, text
    texts = _texts(tmp_path / "outputs")
    texts["<terminal>"] = text
    assert {"state.json", "config.yaml", "provenance.json", "overrides.yaml"} <= {Path(p).name for p in texts}
    leaks = [p for p, t in texts.items() if TOKEN in t or PLAIN in t]
    assert not leaks, leaks
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.cluster.envs.UPSTREAM == MASK and saved.cluster.envs.VIA_RESOLVER == MASK
    assert saved.cluster.envs.S3_AT == ENDPOINT


def test_endpoint_from_env_reaches_the_manifests_and_storage_uri_secret_does_not(tmp_path):
    """deploy with S3 storage whose endpoint comes from ${oc.env:AWS_S3_ENDPOINT}: the manifests carry
    the endpoint and the model's storageUri, never the secret-named variable's value."""
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose
    from tests.serving.conftest import run_after_export

    cfg, _ = compose("quickstart", [*_base(tmp_path), "serving=vllm", "storage=s3",
                                    "storage.bucket=models", "storage.endpoint_url=${oc.env:AWS_S3_ENDPOINT}",
                                    "storage.prefix=llmops", "run_id=env-deploy",
                                    "+cluster.envs.UPSTREAM=${oc.env:MY_API_TOKEN}",
                                    "serving.storage_binding=data_connection"])
    cfg = strip_hydra(cfg)
    run_dir = tmp_path / "run"
    run_after_export(cfg, run_dir, {"model_uri": "s3://models/llmops/env-deploy/hf/"})
    texts = _texts(run_dir)
    manifests = "\n".join(t for p, t in texts.items() if "/deploy/" in p)
    assert "models" in manifests and ENDPOINT.split("//")[1].split("/")[0] in manifests
    assert not [p for p, t in texts.items() if TOKEN in t]


def test_llmops_secret_of_an_unset_variable_names_the_key(tmp_path, monkeypatch):
    from llmops.pipeline.checks import compose

    monkeypatch.delenv("LLMOPS_T_PLAIN")
    with pytest.raises(ConfigError, match=r"smoke_test\.prompt .*LLMOPS_T_PLAIN is not set"):
        compose("quickstart", [*_base(tmp_path), "smoke_test.prompt=${llmops.secret:LLMOPS_T_PLAIN}"])
