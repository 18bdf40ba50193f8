"""Rendering and strict validation of the serving manifests, with real templates and real CRDs.

Golden files: tests/golden/serving/<case>.yaml, compared exactly. After an intended template
change, regenerate them with

    LLMOPS_UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest tests/serving/test_render.py -q

and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from llmops.core.names import label_value
from llmops import storage
from llmops.core.errors import ConfigError, LLMOpsError
from llmops.k8s import validate
from llmops.serving import deploy, render
from tests.serving.conftest import RUN_ID, run_after_export

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "serving"

CASES = {
    "vllm": ("vllm",),
    "caikit_tgis-http": ("caikit_tgis",),
    "caikit_tgis-grpc": ("caikit_tgis", "serving.protocol=grpc"),
    "tgis": ("tgis",),
    "hf": ("hf",),
    "vllm-data_connection-serverless": (
        "vllm", "serving.storage_binding=data_connection", "serving.deployment_mode=Serverless",
        "serving.expose_route=true", "serving.token_auth=true", "serving.create_namespace=true",
        "serving.replicas=2", "serving.gpus=1",
        "serving.tolerations=[{key: nvidia.com/gpu,operator: Exists,effect: NoSchedule}]",
        "+serving.env.VLLM_LOGGING_LEVEL=DEBUG", "serving.args=['--max-model-len=1024']"),
}


def _uris(cfg):
    return {k: storage.serving_uri(cfg, v) for k, v in storage.model_uris(cfg, RUN_ID).items()}


def _dump(objs) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


@pytest.mark.parametrize("case", list(CASES))
def test_golden_and_strictly_valid(case, serving_cfg):
    kind, *over = CASES[case]
    cfg = serving_cfg(kind, *over)
    objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
    validate.validate_objects(objs)  # raises on any problem
    text = _dump(objs)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("LLMOPS_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run with LLMOPS_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{case}: rendering differs from {path}"


def test_runtime_facts(serving_cfg):
    """What each runtime must carry to work on KServe (REFERENCE.md section 6)."""
    def runtime(kind, *o):
        cfg = serving_cfg(kind, *o)
        objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
        return render.find(objs, "ServingRuntime"), render.find(objs, "InferenceService")

    rt, isvc = runtime("vllm")
    c = rt["spec"]["containers"][0]
    assert "--served-model-name={{.Name}}" in c["args"]  # KServe's placeholder, literally
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/hf/")
    assert isvc["spec"]["predictor"]["model"]["runtime"] == rt["metadata"]["name"]

    rt, isvc = runtime("caikit_tgis", "serving.protocol=grpc")
    names = [c["name"] for c in rt["spec"]["containers"]]
    assert names == ["kserve-container", "transformer-container"]
    assert rt["spec"]["containers"][0]["args"] == ["--model-name=/mnt/models/artifacts/"]
    assert rt["spec"]["containers"][1]["ports"] == [{"containerPort": 8085, "name": "h2c", "protocol": "TCP"}]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/caikit/")
    rt, _ = runtime("caikit_tgis")
    port = rt["spec"]["containers"][1]["ports"][0]
    assert port["containerPort"] == 8080 and "name" not in port  # h2c only for gRPC
    env = {e["name"]: e["value"] for e in rt["spec"]["containers"][1]["env"]}
    assert env["RUNTIME_HTTP_ENABLED"] == "true" and env["RUNTIME_GRPC_ENABLED"] == "false"

    rt, _ = runtime("tgis")
    assert rt["spec"]["containers"][0]["ports"][0] == {"containerPort": 8033, "name": "h2c", "protocol": "TCP"}
    rt, _ = runtime("hf")
    assert "--model_name={{.Name}}" in rt["spec"]["containers"][0]["args"]


def test_labels_and_binding(serving_cfg):
    cfg = serving_cfg("vllm", "serving.storage_binding=data_connection")
    objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
    assert [o["kind"] for o in objs] == ["Secret", "ServingRuntime", "InferenceService"]
    for o in objs:
        assert o["metadata"]["labels"]["llmops.io/run-id"] == RUN_ID
        assert o["metadata"]["labels"]["llmops.io/recipe"] == "quickstart"
    model = render.find(objs, "InferenceService")["spec"]["predictor"]["model"]
    secret = render.find(objs, "Secret")
    assert model["storage"] == {"key": secret["metadata"]["name"], "path": f"llmops/{RUN_ID}/hf/"}
    assert "storageUri" not in model
    # one Secret for both paths
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.minio.svc:9000"
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "0"
    assert secret["metadata"]["annotations"]["opendatahub.io/connection-type"] == "s3"
    assert secret["stringData"]["AWS_S3_ENDPOINT"] == "http://minio.minio.svc:9000"
    assert secret["stringData"]["AWS_ACCESS_KEY_ID"] == "${env:AWS_ACCESS_KEY_ID}"

    cfg = serving_cfg("vllm", "serving.existing_secret=true", "serving.secret_name=team-s3")
    objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
    assert [o["kind"] for o in objs] == ["ServiceAccount", "ServingRuntime", "InferenceService"]
    assert render.find(objs, "ServiceAccount")["secrets"] == [{"name": "team-s3"}]


HOSTILE = ['a\nb: c', 'x: y', 'say "hi" \'there\'', '{{ 7*7 }}', '{% raw %}', '- [1, {a: b}]',
           '#not a comment', '&anchor *alias', 'ünïcødé 😀', '$(HOME) %s', '']


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_render_as_data(value, serving_cfg):
    cfg = serving_cfg("caikit_tgis")
    OmegaConf.update(cfg, "serving.env", {"HOSTILE": value, "K: v\n- x": value}, merge=False)
    OmegaConf.update(cfg, "serving.args", [value, "--x=" + value], merge=False)
    OmegaConf.update(cfg, "serving.labels", {"team": value}, merge=False)
    OmegaConf.update(cfg, "serving.image", value + ":tag", merge=False)
    OmegaConf.update(cfg, "storage.bucket", value, merge=False)
    OmegaConf.update(cfg, "serving.cpu_limit", value, merge=False)
    objs = render.render(cfg, RUN_ID, "quickstart", {"hf": "s3://b/" + value, "caikit": "s3://b/c" + value})
    assert [o["kind"] for o in objs] == ["Secret", "ServiceAccount", "ServingRuntime", "InferenceService"]
    rt = render.find(objs, "ServingRuntime")
    tgis = rt["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in tgis["env"]}
    assert env["HOSTILE"] == value and env["K: v\n- x"] == value
    assert tgis["args"][-2:] == [value, "--x=" + value]
    assert tgis["image"] == value + ":tag"
    assert render.find(objs, "Secret")["stringData"]["AWS_S3_BUCKET"] == value
    isvc = render.find(objs, "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://b/c" + value
    assert isvc["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] == value
    # a user label arrives as written; strict validation says when it is not a label value
    assert rt["metadata"]["labels"]["team"] == value
    probs = [p for p in validate.problems(rt) if "metadata.labels" in p]
    assert bool(probs) == (label_value(value) != value), probs


def test_label_value_sanitised():
    assert label_value("quickstart-20260101-000000") == "quickstart-20260101-000000"
    v = label_value("My Run/#1 " + "x" * 80)
    assert len(v) <= 63 and v[0].isalnum() and v[-1].isalnum()
    assert label_value("a b") != label_value("a_b")


def test_strict_validation_rejects_unknown_and_wrong_fields(serving_cfg):
    cfg = serving_cfg("vllm")
    objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
    isvc = render.find(objs, "InferenceService")
    isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://typo/"  # misspelt field
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    rt = render.find(objs, "ServingRuntime")
    rt["spec"]["containers"][0]["port"] = 8080  # `ports` misspelt
    secret = render.find(objs, "Secret")
    secret["stringDatum"] = {}
    with pytest.raises(LLMOpsError) as e:
        validate.validate_objects(objs)
    msg = str(e.value)
    assert "4 problems" in msg
    assert "spec.predictor.model: Additional properties are not allowed ('storageURI' was unexpected)" in msg
    assert "spec.predictor.minReplicas: 'one' is not of type 'integer'" in msg
    assert "('port' was unexpected)" in msg and "('stringDatum' was unexpected)" in msg


def test_metadata_names_checked(serving_cfg):
    cfg = serving_cfg("hf")
    objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
    isvc = render.find(objs, "InferenceService")
    isvc["metadata"]["name"] = "1-starts-with-digit"
    isvc["metadata"]["labels"]["bad key!"] = "x"
    probs = validate.problems(isvc)
    assert any("DNS-1035" in p for p in probs) and any("bad key!" in p for p in probs)


def test_schemas_dir_missing_is_a_clear_error(serving_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_SCHEMAS_DIR", str(tmp_path / "nowhere"))
    cfg = serving_cfg("vllm")
    objs = render.render(cfg, RUN_ID, "quickstart", _uris(cfg))
    with pytest.raises(LLMOpsError, match="CRD schemas not found: .LLMOPS_SCHEMAS_DIR="):
        validate.validate_objects(objs)


def test_config_errors_before_rendering(serving_cfg):
    """Every bad serving value is reported at once, by key, before any stage runs."""
    with pytest.raises(ConfigError) as e:
        serving_cfg("vllm", "serving.name=Bad_Name", "serving.namespace=-ns",
                    "serving.runtime_name=" + "r" * 64, "serving.model_format=caikit",
                    "serving.protocol=grpc", "serving.existing_secret=true", s3=False)
    msg = str(e.value)
    for key, expected in [("serving.name", "DNS-1035"), ("serving.namespace", "DNS-1123"),
                          ("serving.runtime_name", "at most 63"),
                          ("serving.model_format", "the vllm runtime serves"),
                          ("serving.protocol", "the vllm runtime speaks"),
                          ("serving.existing_secret", "serving.secret_name set")]:
        assert any(line.strip().startswith(f"- {key} =") and expected in line
                   for line in msg.splitlines()), (key, msg)
    assert "6 configuration errors" in msg


def test_render_checks_model_format_itself(serving_cfg):
    cfg = serving_cfg("tgis")
    OmegaConf.update(cfg, "serving.model_format", "vLLM", merge=False)
    with pytest.raises(LLMOpsError, match="serving.model_format = 'vLLM': the tgis runtime serves"):
        render.render(cfg, RUN_ID, "quickstart", _uris(cfg))


def test_derived_names_are_bounded(serving_cfg):
    long_id = "a-very-long-recipe-name-for-a-sweep-job-" + "x" * 40 + "-20260101-000000"
    cfg = serving_cfg("vllm", f"run_id={long_id}")
    n = render.names(cfg, long_id)
    assert len(n["isvc"]) <= 45 and n["isvc"][0].isalpha()
    assert render.names(cfg, long_id + "1")["isvc"] != n["isvc"]


def test_deploy_writes_validated_manifests_without_secret_values(serving_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-never-on-disk")
    cfg = serving_cfg("caikit_tgis", "serving.protocol=grpc")
    base = storage.model_uris(cfg, RUN_ID)
    r = run_after_export(cfg, tmp_path / "run", {"model_uri": base["hf"], "caikit_uri": base["caikit"]})
    out = r.state.outputs("deploy")
    assert out.applied is False
    files = [Path(p) for p in out.manifests]
    assert [f.parent for f in files] == [tmp_path / "run" / "deploy"] * 4
    objs = [yaml.safe_load(f.read_text()) for f in files]
    assert [o["kind"] for o in objs] == ["Secret", "ServiceAccount", "ServingRuntime", "InferenceService"]
    assert objs[-1]["spec"]["predictor"]["model"]["storageUri"] == base["caikit"]
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert "s3cr3t-value-never-on-disk" not in f.read_text()


def test_deploy_needs_the_export_layout(serving_cfg, tmp_path):
    cfg = serving_cfg("caikit_tgis")
    with pytest.raises(LLMOpsError, match="no 'caikit_uri'"):
        run_after_export(cfg, tmp_path / "run", {"model_uri": "s3://models/x/hf/"})


def test_serving_none_renders_nothing(compose, tmp_path):
    cfg = compose("quickstart", "serving=none")
    r = run_after_export(cfg, tmp_path / "run", {"model_uri": "file:///x/hf/"})
    assert r.state.outputs("deploy").manifests == [] and r.state.outputs("deploy").applied is False
    assert not (tmp_path / "run" / "deploy").exists()


def test_plan_out_writes_each_object(tmp_path, capsys):
    from llmops.cli import main

    out = tmp_path / "plan"
    rc = main(["plan", "quickstart", "serving=caikit_tgis", "stages=[deploy]", f"--out={out}",
               f"paths.output_root={tmp_path}/o", f"storage.root={tmp_path}/m"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and files[0].startswith("00-servingruntime-") and files[1].startswith("01-inferenceservice-")
    assert "kind: InferenceService" in capsys.readouterr().out
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists()


def test_plan_imports_no_heavy_module(tmp_path):
    """`llmops plan` with serving manifests stays light: no torch, transformers, kubernetes, grpc."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = ("import sys; from llmops.cli import main; "
            f"rc = main(['plan', 'quickstart', 'serving=caikit_tgis', 'stages=[deploy,smoke_test]', "
            f"'storage.kind=s3', 'storage.bucket=models', 'paths.output_root={tmp_path}']); "
            "heavy = [m for m in ('torch', 'transformers', 'kubernetes', 'grpc', 'ray') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    assert "kind: InferenceService" in r.stdout and "${env:AWS_SECRET_ACCESS_KEY}" in r.stdout
