"""serving=llmisvc: an LLMInferenceService (KServe v1alpha2) rendered from its template, checked
against the real CRD, golden files, config checks through the CLI, and apply / wait / call /
undeploy with the real kubernetes client against the stand-in API server on 127.0.0.1.

Regenerate the golden files after an intended template change with

    LLMOPS_UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest tests/serving/test_llmisvc.py -q
"""

from __future__ import annotations

import os

import pytest
import yaml

from llmops import cli, storage
from llmops.core.errors import LLMOpsError
from llmops.k8s import validate
from llmops.serving import render
from tests.serving.conftest import RUN_ID, run_after_export
from tests.serving.test_render import GOLDEN

PVC = ["storage=pvc", "storage.pvc_name=models", "storage.mount_path=/mnt/models"]
OCI = "serving.model_uri=oci://quay.io/team/gpt2-modelcar:v1"
CASES = {  # name: (overrides, on S3 storage)
    "llmisvc-s3": ((), True),
    "llmisvc-pvc": (tuple(PVC), False),
    "llmisvc-oci-gpu-router": ((OCI, "serving.gpus=1", "serving.replicas=2", "serving.image=vllm/vllm-openai:v0.11.0",
                                "serving.args=['--max-model-len=1024']",
                                "serving.scheduler=true",
                                "serving.gateway_refs=[{name: openshift-ai-inference,namespace: openshift-ingress}]",
                                "serving.base_refs=[kserve-config-llm-template]"), True),
}
FAST = ("serving.apply=true", "serving.poll_interval_s=0.01", "serving.namespace=team-a",
        "serving.create_namespace=true", "serving.name=gpt2-llm")


def _objects(cfg):
    uris = {k: storage.serving_uri(cfg, v) for k, v in storage.model_uris(cfg, RUN_ID).items()}
    return render.render(cfg, RUN_ID, "quickstart", uris)


@pytest.mark.parametrize("case", list(CASES))
def test_golden_and_strictly_valid_against_the_crd(case, serving_cfg):
    over, s3 = CASES[case]
    objs = _objects(serving_cfg("llmisvc", *over, s3=s3))
    validate.validate_objects(objs)  # the v1alpha2 CRD, closed as fieldValidation=Strict closes it
    text = yaml.safe_dump_all(objs, sort_keys=False)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("LLMOPS_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run with LLMOPS_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{case}: rendering differs from {path}"


def test_what_an_llminferenceservice_carries(serving_cfg):
    objs = _objects(serving_cfg("llmisvc"))
    assert [o["kind"] for o in objs] == ["Secret", "ServiceAccount", "LLMInferenceService"]  # no runtime
    svc = objs[-1]
    assert svc["apiVersion"] == "serving.kserve.io/v1alpha2"
    spec = svc["spec"]
    assert spec["model"] == {"uri": f"s3://models/llmops/{RUN_ID}/hf/", "name": RUN_ID}
    assert spec["router"] == {"route": {}}  # route only: no scheduler, no gateway
    assert spec["template"]["serviceAccountName"] == objs[1]["metadata"]["name"]
    main = spec["template"]["containers"][0]
    assert main["name"] == "main" and main["image"].startswith("vllm/vllm-openai-cpu")
    assert {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"} in main["env"]
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    assert "serving.kserve.io/deploymentMode" not in svc["metadata"].get("annotations", {})

    oci = _objects(serving_cfg("llmisvc", *CASES["llmisvc-oci-gpu-router"][0]))
    assert [o["kind"] for o in oci] == ["LLMInferenceService"]  # an OCI image needs no S3 credentials
    spec = oci[0]["spec"]
    assert spec["model"]["uri"] == "oci://quay.io/team/gpt2-modelcar:v1"
    assert spec["router"] == {"route": {}, "scheduler": {}, "gateway": {"refs": [
        {"name": "openshift-ai-inference", "namespace": "openshift-ingress"}]}}
    assert spec["baseRefs"] == [{"name": "kserve-config-llm-template"}]
    assert spec["template"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pvc = _objects(serving_cfg("llmisvc", *PVC, s3=False))
    assert pvc[0]["spec"]["model"]["uri"] == f"pvc://models/{RUN_ID}/hf/"
    gw = _objects(serving_cfg("llmisvc", "serving.gateway=true"))
    assert gw[-1]["spec"]["router"] == {"route": {}, "gateway": {}}


@pytest.mark.parametrize("override, key, expected", [
    ("serving.deployment_mode=Serverless", "serving.deployment_mode", "RawDeployment"),
    ("serving.storage_binding=data_connection", "serving.storage_binding", "service_account"),
    ("serving.model_uri=ftp://host/model", "serving.model_uri", "oci://"),
    ("serving.gateway_refs=[{name: Bad_Name}]", "serving.gateway_refs", "entry 0: 'Bad_Name' is not a DNS-1123"),
    ("serving.gateway_refs=[{gateway: x}]", "serving.gateway_refs", "entry 0: expected {name: GATEWAY"),
    ("serving.base_refs=[UPPER]", "serving.base_refs", "entry 0: 'UPPER'"),
])
def test_bad_llmisvc_settings_are_named(override, key, expected, capsys):
    assert cli.main(["validate", "quickstart", "serving=llmisvc", override]) == 1
    err = capsys.readouterr().err
    assert key in err and expected in err


def test_llmisvc_keys_are_refused_elsewhere(capsys):
    assert cli.main(["validate", "quickstart", "serving=vllm", "serving.scheduler=true",
                     "serving.model_uri=oci://quay.io/a/b:1"]) == 1
    err = capsys.readouterr().err
    assert "serving.scheduler = True" in err and "unset unless serving=llmisvc" in err
    assert "serving.model_uri = 'oci://quay.io/a/b:1'" in err


def _deploy(cfg, run_dir, stages=("deploy",)):
    base = storage.model_uris(cfg, str(cfg.run_id))
    result = run_after_export(cfg, run_dir, {"model_uri": base["hf"], "caikit_uri": base["caikit"]}, stages)
    return result.state.outputs("deploy")


def test_apply_wait_ready_then_undeploy(kube, serving_cfg, tmp_path, capsys):
    out = _deploy(serving_cfg("llmisvc", *FAST), tmp_path / "run")
    assert out.applied and out.url == "http://gateway.example/team-a/gpt2-llm"
    assert [o["kind"] for o in out.objects] == ["Namespace", "Secret", "ServiceAccount", "LLMInferenceService"]
    patch = next(r for r in kube.requests if r["method"] == "PATCH" and r["kind"] == "LLMInferenceService")
    assert patch["content_type"] == "application/apply-patch+yaml"
    assert patch["query"] == {"fieldManager": "llmops", "force": "true", "fieldValidation": "Strict"}
    polls = [r for r in kube.requests if r["method"] == "GET" and r["kind"] == "LLMInferenceService"]
    assert len(polls) == kube.ready_after + 1  # waited through not-ready and stale-generation polls
    assert ("LLMInferenceService", "team-a", "gpt2-llm") in kube.objects

    assert cli.main(["undeploy", str(tmp_path / "run")]) == 0
    assert kube.objects == {} and "team-a" in kube.namespaces
    assert "LLMInferenceService" in capsys.readouterr().out


def test_missing_preset_fails_fast_with_the_condition(kube, serving_cfg, tmp_path):
    kube.missing_preset = True
    cfg = serving_cfg("llmisvc", *FAST, "serving.base_refs=[team-preset]")
    with pytest.raises(LLMOpsError, match=r"LLMInferenceService gpt2-llm in team-a failed to load: "
                                          r"PresetsCombined=False: ConfigNotFound: failed to get "
                                          r'LLMInferenceServiceConfig "team-preset": not found'):
        _deploy(cfg, tmp_path / "run")
    assert sum(1 for r in kube.requests if r["method"] == "GET" and r["kind"] == "LLMInferenceService") == 1


def test_timeout_surfaces_the_workload_reason(kube, serving_cfg, tmp_path):
    kube.fail_load = True
    cfg = serving_cfg("llmisvc", *FAST, "serving.ready_timeout_s=1", "serving.poll_interval_s=0.2",
                      "serving.keep=false")
    with pytest.raises(LLMOpsError) as e:
        _deploy(cfg, tmp_path / "run")
    msg = str(e.value)
    assert "LLMInferenceService gpt2-llm in team-a not Ready after 1 s (serving.ready_timeout_s)" in msg
    assert "MainWorkloadReady=False (ProgressDeadlineExceeded: Deployment \"gpt2-llm-kserve\" exceeded" in msg
    assert "deleted what was applied (serving.keep=false)" in msg and kube.objects == {}


def test_image_pull_of_the_main_container_fails_fast(kube, serving_cfg, tmp_path):
    kube.image_pull, kube.ready_after = True, 1000
    with pytest.raises(LLMOpsError, match=r"LLMInferenceService gpt2-llm in team-a cannot start: pod "
                                          r"gpt2-llm-predictor-abc .*ImagePullBackOff"):
        _deploy(serving_cfg("llmisvc", *FAST), tmp_path / "run")


def test_the_smoke_test_calls_status_url_with_openai_completions(kube, serving_cfg, tmp_path, tiny_model_dir):
    """smoke_test.target=endpoint against a Ready LLMInferenceService: the OpenAI completions API
    at status.url, the model named as spec.model.name. status.url points at `llmops serve`'s
    server on loopback here (the stand-in has no gateway)."""
    from llmops.serving import server

    model = server.LocalModel(tiny_model_dir)
    with server.BackgroundServer(model, "gpt2-llm") as url:
        kube.url_override = url
        cfg = serving_cfg("llmisvc", *FAST, "smoke_test.target=endpoint", "smoke_test.max_new_tokens=4")
        base = storage.model_uris(cfg, str(cfg.run_id))
        result = run_after_export(cfg, tmp_path / "run", {"model_uri": base["hf"], "caikit_uri": base["caikit"]},
                                  ("deploy", "smoke_test"))
    smoke = result.state.outputs("smoke_test")
    assert smoke.api == "openai" and smoke.tokens == 4 and smoke.reply
