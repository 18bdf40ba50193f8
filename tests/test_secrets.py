"""Secret hygiene: no credential reaches a saved config, a file a run writes, or a log line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from llmops.core import secrets
from llmops.core.secrets import MASK, is_secret_key, mask, masked_yaml, remember, scrub

ENV_SECRET = "envSecret-7d1e0c55aa9b"  # comes in through ${oc.env:...}
LITERAL_TOKEN = "hf_literalTokenQ8w2e9r4"  # a secret-looking override given literally
HEADER_TOKEN = "bearerTok-51c0ffee77"


@pytest.mark.parametrize("key", [
    "secret", "secret_access_key", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "password",
    "db_password", "hf_token", "HF_TOKEN", "api_key", "apikey", "X-Api-Key", "Authorization",
    "private_key", "credentials", "session_token", "ssh_key",
])
def test_secret_key_names(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [
    "key", "token_auth", "secret_name", "existing_secret", "pass_secrets", "max_new_tokens",
    "tokenizer", "train_tokenizer_vocab", "tokens_per_s", "keep", "monkey", "operator", "name",
])
def test_not_secret_key_names(key):
    assert not is_secret_key(key)


def test_mask_keys_values_and_false_positives():
    cfg = OmegaConf.create({
        "serving": {"token_auth": True, "max_new_tokens": 20, "secret_name": "s3-conn",
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "env": {"HF_TOKEN": "hf_abcdefgh1234", "LOG_LEVEL": "info"}},
        "cluster": {"headers": {"X-Api-Key": "k-1234567890"}, "num_workers": 2},
        "db": {"password": "", "token": None, "api_key": 12345},
    })
    m = mask(cfg)
    assert m["serving"]["token_auth"] is True and m["serving"]["max_new_tokens"] == 20
    assert m["serving"]["secret_name"] == "s3-conn"
    assert m["serving"]["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists",
                                              "effect": "NoSchedule"}
    assert m["serving"]["env"] == {"HF_TOKEN": MASK, "LOG_LEVEL": "info"}
    assert m["cluster"]["headers"]["X-Api-Key"] == MASK
    assert m["db"] == {"password": "", "token": None, "api_key": 12345}  # empty / numbers: nothing to hide
    assert cfg.serving.env.HF_TOKEN == "hf_abcdefgh1234"  # the config itself is untouched


def test_mask_values_from_environment_direct_embedded_and_chained(monkeypatch):
    monkeypatch.setenv("LLMOPS_T_SECRET", ENV_SECRET)
    cfg = OmegaConf.create({
        "a": {"plain": "${oc.env:LLMOPS_T_SECRET}"},  # key not secret-looking: the source decides
        "b": {"header": "Bearer ${oc.env:LLMOPS_T_SECRET}"},
        "c": {"dup": "${a.plain}", "url": "https://user:${a.plain}@minio.example.com"},
        "d": {"default": "${oc.env:LLMOPS_T_UNSET_TOKEN,fallback-value}"},
        "e": {"endpoint": "${oc.env:LLMOPS_T_ENDPOINT,http://minio.example.com:9000}"},
    })
    m = mask(cfg)
    assert m["a"]["plain"] == MASK and m["b"]["header"] == MASK
    assert m["c"]["dup"] == MASK  # a copy of an env value, through an interpolation
    assert m["c"]["url"] == f"https://user:{MASK}@minio.example.com"
    assert m["d"]["default"] == MASK  # a secret-named variable: masked even when it falls back
    assert m["e"]["endpoint"] == "http://minio.example.com:9000"  # not a secret: shown
    assert ENV_SECRET not in json.dumps(m) and ENV_SECRET not in masked_yaml(cfg)
    assert cfg.c.dup == ENV_SECRET  # resolving still works


def test_mask_plain_containers():
    m = mask({"storage": {"bucket": "b", "secret_key": "plain-secret-123"},
              "list": [{"token": "tok-abcdefg"}, "mentions plain-secret-123"]})
    assert m == {"storage": {"bucket": "b", "secret_key": MASK},
                 "list": [{"token": MASK}, f"mentions {MASK}"]}


def test_scrub_and_short_values():
    remember("abc")  # too short to scrub safely: ignored
    remember("longer-secret-value-99")
    assert scrub("x abc longer-secret-value-99 y") == f"x abc {MASK} y"


def test_remember_env_picks_secret_names_only():
    env = {"AWS_SECRET_ACCESS_KEY": "awsSecretFromEnv-0001", "MY_SERVICE_TOKEN": "svcToken-0002abc",
           "TOKENIZERS_PARALLELISM": "false", "HOME": "/root-home-dir", "GITHUB_TOKEN": "short"}
    assert secrets.remember_env(env) == 2
    assert scrub("awsSecretFromEnv-0001 svcToken-0002abc /root-home-dir false") == \
        f"{MASK} {MASK} /root-home-dir false"


def test_log_lines_are_scrubbed_for_handlers_added_later_and_tracebacks():
    remember(HEADER_TOKEN)
    secrets.install_log_filter()
    secrets.install_log_filter()  # idempotent
    buf = io.StringIO()
    h = logging.StreamHandler(buf)  # added after install: no filter on it
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    lg = logging.getLogger("llmops.test_secrets")
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    try:
        lg.info("calling with header Authorization: Bearer %s", HEADER_TOKEN)
        try:
            raise RuntimeError(f"server said: bad token {HEADER_TOKEN}")
        except RuntimeError:
            lg.exception("request failed")
    finally:
        lg.removeHandler(h)
    out = buf.getvalue()
    assert HEADER_TOKEN not in out
    assert f"Bearer {MASK}" in out and f"bad token {MASK}" in out and "Traceback" in out


# ---------------------------------------------------------------------------------- whole runs
def _all_text_under(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file():
                out[str(p)] = p.read_bytes().decode("utf-8", "replace")
    return out


@pytest.fixture
def upload_stage(monkeypatch, tmp_path):
    """Replace the export stage with one that does what export does with storage: write a model
    folder and upload it with get_store(cfg).put_dir(..., model_uris(cfg, run_id)["hf"]); it logs
    the config it saw and ends with an error message carrying a secret when asked to."""
    from llmops.pipeline import stages
    from llmops.pipeline.stages import StageDef
    from llmops.run import ExportOutputs

    log = logging.getLogger("llmops.test_export")

    def run(cfg, ctx):
        from llmops.storage import get_store, model_uris

        src = ctx.stage_dir("export") / "hf"
        src.mkdir(parents=True, exist_ok=True)
        (src / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        (src / "model.safetensors").write_bytes(b"\0" * 4096)
        log.info("export sees envs %s and headers %s", dict(cfg.cluster.envs), dict(cfg.cluster.headers))
        uri = model_uris(cfg, ctx.run_id)["hf"]
        get_store(cfg).put_dir(src, uri)
        if cfg.get("smoke_test", {}).get("prompt") == "fail please":
            raise RuntimeError(f"upload rejected for key {cfg.cluster.envs.AWS_SECRET_ACCESS_KEY}")
        return ExportOutputs(model_uri=uri)

    monkeypatch.setattr(stages, "LINE", tuple(
        StageDef(name="export", run=run, plan=d.plan, inputs=d.inputs, needs=(), describe=d.describe)
        if d.name == "export" else d for d in stages.LINE))
    return run


def _secret_overrides(moto_s3, bucket):
    return ["storage=s3", f"storage.bucket={bucket}", f"storage.endpoint_url={moto_s3.endpoint}",
            "storage.addressing_style=path", "stages=[export]",
            "+cluster.envs.AWS_SECRET_ACCESS_KEY=${oc.env:AWS_SECRET_ACCESS_KEY}",
            "+cluster.envs.AWS_ACCESS_KEY_ID=${oc.env:AWS_ACCESS_KEY_ID}",
            "+cluster.envs.HF_TOKEN=" + LITERAL_TOKEN,
            "+cluster.headers.Authorization=Bearer ${oc.env:LLMOPS_T_HEADER}"]


@pytest.mark.parametrize("fail", [False, True])
def test_engine_run_writes_and_logs_no_secret(compose, moto_s3, s3_bucket, upload_stage, tmp_path,
                                              monkeypatch, fail):
    from llmops.pipeline import engine
    from tests.fixtures.s3 import TEST_ACCESS_KEY, TEST_SECRET_KEY

    monkeypatch.setenv("LLMOPS_T_HEADER", HEADER_TOKEN)
    overrides = _secret_overrides(moto_s3, s3_bucket) + (["smoke_test.prompt=fail please"] if fail else [])
    cfg = compose("quickstart", *overrides)
    assert cfg.cluster.envs.AWS_SECRET_ACCESS_KEY == TEST_SECRET_KEY  # the run does see it
    run_dir = tmp_path / "outputs" / "run-secret"
    logfile = tmp_path / "run.log"
    fh = logging.FileHandler(logfile)
    fh.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(fh)
    try:
        if fail:
            from llmops.core.errors import StageError

            with pytest.raises(StageError) as e:
                engine.run(cfg, run_dir, overrides=overrides)
            assert TEST_SECRET_KEY not in str(e.value) and MASK in str(e.value)
        else:
            engine.run(cfg, run_dir, overrides=overrides)
    finally:
        root.removeHandler(fh)
        fh.close()
        root.setLevel(old_level)

    texts = _all_text_under(run_dir, tmp_path / "models")
    texts[str(logfile)] = logfile.read_text()
    assert any(p.endswith("config.yaml") for p in texts) and any(p.endswith("provenance.json") for p in texts)
    assert any(p.endswith("overrides.yaml") for p in texts)
    if fail:
        assert any(p.endswith("export.error.txt") for p in texts)
    assert "export sees envs" in texts[str(logfile)]
    for needle in (TEST_SECRET_KEY, TEST_ACCESS_KEY, LITERAL_TOKEN, HEADER_TOKEN):
        leaks = [p for p, t in texts.items() if needle in t]
        assert not leaks, f"{needle[:6]}... found in {leaks}"
    # and the model really went to the endpoint
    if not fail:
        from llmops.storage import get_store, model_uris

        assert get_store(cfg).exists(model_uris(cfg, "run-secret")["hf"]) or \
            get_store(cfg).exists(model_uris(cfg, str(cfg.run_id))["hf"])
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.cluster.envs.AWS_SECRET_ACCESS_KEY == MASK and saved.cluster.envs.HF_TOKEN == MASK
    assert saved.cluster.headers.Authorization == MASK
    assert saved.storage.bucket == s3_bucket  # everything else kept
    ov = (run_dir / "overrides.yaml").read_text()
    assert f"+cluster.envs.HF_TOKEN={MASK}" in ov
    assert "${oc.env:AWS_SECRET_ACCESS_KEY}" in ov  # a reference, not a value: safe and replayable


def test_cli_run_output_and_hydra_log_have_no_secret(moto_s3, s3_bucket, upload_stage, tmp_path,
                                                     monkeypatch, capfd):
    """`llmops run` through Hydra: its log file, the run directory and the terminal stay clean."""
    from llmops import cli
    from tests.fixtures.s3 import TEST_ACCESS_KEY, TEST_SECRET_KEY

    monkeypatch.setenv("LLMOPS_T_HEADER", HEADER_TOKEN)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "outputs" / "cli-run"
    rc = cli.main(["run", "quickstart", *_secret_overrides(moto_s3, s3_bucket),
                   f"paths.output_root={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={run_dir}", "hydra.verbose=true"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    texts = _all_text_under(tmp_path / "outputs")
    assert any(p.endswith(".log") for p in texts), sorted(texts)
    texts["<stdout>"], texts["<stderr>"] = out, err
    for needle in (TEST_SECRET_KEY, TEST_ACCESS_KEY, LITERAL_TOKEN, HEADER_TOKEN):
        leaks = [p for p, t in texts.items() if needle in t]
        assert not leaks, f"{needle[:6]}... found in {leaks}"


def test_placeholders_under_secret_keys_do_not_garble_logs():
    m = mask({"serving": {"env": {"HF_TOKEN": "none"}}})
    assert m["serving"]["env"]["HF_TOKEN"] == MASK  # still masked where it stands
    assert scrub("serving: none, apply: false") == "serving: none, apply: false"
