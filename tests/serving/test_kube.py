"""Apply / wait / delete with the real kubernetes client (through llmops.k8s.client, the one auth
path) against the stand-in API server (tests/serving/kube_standin.py) on 127.0.0.1. No live
cluster is involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops import storage
from llmops.serving import smoke
from llmops.core.errors import LLMOpsError
from llmops import cli
from llmops.run import ExportOutputs
from tests.serving.conftest import RUN_ID, run_after_export

FAST = ("serving.apply=true", "serving.poll_interval_s=0.01", "serving.namespace=team-a",
        "serving.create_namespace=true")


def _deploy(cfg, run_dir: Path, stages=("deploy",), **kw):
    """The real deploy stage through the engine, after an export of this run's storage URIs."""
    base = storage.model_uris(cfg, str(cfg.run_id))
    result = run_after_export(cfg, run_dir, {"model_uri": base["hf"], "caikit_uri": base["caikit"]},
                              stages, **kw)
    return result.state.outputs("deploy")


def test_apply_wait_ready_idempotent_and_update_in_place(kube, serving_cfg, tmp_path):
    cfg = serving_cfg("vllm", *FAST, "serving.name=gpt2-demo")
    out = _deploy(cfg, tmp_path / "run1")
    assert out.applied is True and out.url == "http://gpt2-demo-team-a.apps.example"
    assert [o["kind"] for o in out.objects] == ["Namespace", "Secret", "ServiceAccount",
                                                "ServingRuntime", "InferenceService"]
    patches = [r for r in kube.requests if r["method"] == "PATCH"]
    assert [r["kind"] for r in patches] == [o["kind"] for o in out.objects]
    for r in patches:  # server-side apply, as REFERENCE.md section 6 says
        assert r["content_type"] == "application/apply-patch+yaml"
        assert r["query"] == {"fieldManager": "llmops", "force": "true", "fieldValidation": "Strict"}
        assert r["auth"] == "Bearer standin-token"
    # the cluster got the credentials; the files on disk only placeholders
    secret = kube.objects[("Secret", "team-a", "gpt2-demo-s3")]
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == "standin-secret-value-1234"
    for f in out.manifests:
        assert "standin-secret-value-1234" not in Path(f).read_text()
    isvc = kube.objects[("InferenceService", "team-a", "gpt2-demo")]
    gen, rv = isvc["metadata"]["generation"], isvc["metadata"]["resourceVersion"]
    polls = sum(1 for r in kube.requests if r["method"] == "GET" and r["kind"] == "InferenceService")
    assert polls == kube.ready_after + 1  # waited through the not-ready polls

    # the same run again (in a fresh run directory, so that deploy runs again): nothing changes
    _deploy(cfg, tmp_path / "run1-again")
    isvc = kube.objects[("InferenceService", "team-a", "gpt2-demo")]
    assert (isvc["metadata"]["generation"], isvc["metadata"]["resourceVersion"]) == (gen, rv)

    # a new run with the same serving.name updates the InferenceService in place
    cfg2 = serving_cfg("vllm", *FAST, "serving.name=gpt2-demo", "run_id=quickstart-20260102-000000")
    _deploy(cfg2, tmp_path / "run2")
    isvc = kube.objects[("InferenceService", "team-a", "gpt2-demo")]
    assert isvc["metadata"]["generation"] == gen + 1
    assert isvc["metadata"]["labels"]["llmops.io/run-id"] == "quickstart-20260102-000000"
    assert "quickstart-20260102-000000" in isvc["spec"]["predictor"]["model"]["storageUri"]


def test_failed_load_fails_fast_with_kserve_reason(kube, serving_cfg, tmp_path):
    kube.fail_load = True
    cfg = serving_cfg("caikit_tgis", *FAST)
    with pytest.raises(LLMOpsError) as e:
        _deploy(cfg, tmp_path / "run")
    assert "transitionStatus=BlockedByFailedLoad: ModelLoadFailed config.json not found in /mnt/models" in str(e.value)
    assert sum(1 for r in kube.requests if r["kind"] == "InferenceService" and r["method"] == "GET") == 1


def test_image_pull_error_fails_fast(kube, serving_cfg, tmp_path):
    kube.image_pull = True
    kube.ready_after = 1000
    cfg = serving_cfg("tgis", *FAST)
    with pytest.raises(LLMOpsError, match=r"cannot start: pod .*-predictor-abc container kserve-container: "
                                          r"ImagePullBackOff: Back-off pulling image"):
        _deploy(cfg, tmp_path / "run")


def test_timeout_names_the_last_status(kube, serving_cfg, tmp_path):
    kube.ready_after = 10_000
    cfg = serving_cfg("hf", *FAST, "serving.ready_timeout_s=1", "serving.poll_interval_s=0.2")
    with pytest.raises(LLMOpsError, match=r"not Ready after 1 s \(serving.ready_timeout_s\); last status: "
                                          r"PredictorReady=False \(PredictorNotReady"):
        _deploy(cfg, tmp_path / "run")


def test_forbidden_is_reported_with_the_server_message(kube, serving_cfg, tmp_path):
    kube.forbidden = True
    cfg = serving_cfg("vllm", *FAST)
    with pytest.raises(LLMOpsError) as e:
        _deploy(cfg, tmp_path / "run")
    msg = str(e.value)
    assert "answered 403 Forbidden" in msg and "cannot patch resource" in msg and "check RBAC" in msg


def test_field_error_422_shown_as_the_server_sent_it(kube, serving_cfg, tmp_path):
    kube.invalid = ("InferenceService", "spec.predictor.minReplicas", "Invalid value: 3: must be <= maxReplicas")
    cfg = serving_cfg("vllm", *FAST)
    with pytest.raises(LLMOpsError) as e:
        _deploy(cfg, tmp_path / "run")
    assert ('answered 422 Unprocessable Entity: InferenceService.serving.kserve.io "quickstart-20260101-000000" '
            'is invalid: spec.predictor.minReplicas: Invalid value: 3: must be <= maxReplicas') in str(e.value)


def test_strict_field_validation_on_the_server(kube, serving_cfg, tmp_path):
    """An object that skipped local validation is refused by the server's strict decoding."""
    cfg = serving_cfg("vllm", *FAST)
    from llmops.pipeline import engine

    isvc = next(s for s in engine.plan(cfg) if s["stage"] == "deploy")["objects"][-1]
    isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://typo/"
    from llmops.k8s.client import connect

    k = connect(cfg)
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    with pytest.raises(LLMOpsError, match=r"apply InferenceService/quickstart-20260101-000000 in team-a: the "
                                          r"API server \(http://127.0.0.1:\d+\) answered 400 Bad Request: "
                                          r"strict decoding error: unknown field .*'storageURI' was unexpected"):
        k.apply(isvc)


def test_missing_credentials_stop_before_anything_is_applied(kube, serving_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = serving_cfg("vllm", *FAST)
    with pytest.raises(LLMOpsError, match="AWS_SECRET_ACCESS_KEY not set in the environment"):
        _deploy(cfg, tmp_path / "run")
    assert not [r for r in kube.requests if r["method"] == "PATCH"]


def test_existing_secret_must_exist(kube, serving_cfg, tmp_path):
    cfg = serving_cfg("vllm", *FAST, "serving.existing_secret=true", "serving.secret_name=team-s3")
    with pytest.raises(LLMOpsError, match="serving.secret_name = 'team-s3' .*no such Secret in namespace 'team-a'"):
        _deploy(cfg, tmp_path / "run")


def test_undeploy_deletes_only_this_run(kube, serving_cfg, tmp_path, capsys):
    _deploy(serving_cfg("vllm", *FAST), tmp_path / "a")
    _deploy(serving_cfg("vllm", *FAST, "run_id=quickstart-20260103-000000"), tmp_path / "b")
    assert len(kube.objects) == 8

    assert cli.main(["undeploy", str(tmp_path / "a")]) == 0
    left = {k[2] for k in kube.objects}
    assert left and all(n.startswith("quickstart-20260103-000000") for n in left)
    assert len(kube.objects) == 4 and "team-a" in kube.namespaces  # namespace kept
    deletes = [r for r in kube.requests if r["method"] == "DELETE"]
    assert {r["query"]["labelSelector"] for r in deletes} == {
        f"llmops.io/run-id={RUN_ID},llmops.io/recipe=quickstart"}
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    assert state["stages"]["deploy"]["outputs"]["deleted"] is True
    assert "deleted InferenceService, ServingRuntime, ServiceAccount, Secret" in capsys.readouterr().out


def test_keep_false_deletes_after_the_last_stage(kube, serving_cfg, tmp_path, exported):
    cfg = serving_cfg("vllm", *FAST, "serving.keep=false")
    seen = {}

    def smoke_test(c, ctx):  # the deployed objects are still there while smoke_test runs
        seen["objects"] = len(kube.objects)
        return smoke.call_local(c, ExportOutputs(model_uri=exported), ctx.run_dir, ctx.run_id)

    out = _deploy(cfg, tmp_path / "run", stages=("deploy", "smoke_test"),
                  replace={"smoke_test": smoke_test})
    assert seen["objects"] == 4
    assert out.deleted is True and kube.objects == {}  # the engine cleaned up after the last stage


def test_keep_false_deletes_even_when_a_later_stage_fails(kube, serving_cfg, tmp_path):
    cfg = serving_cfg("vllm", *FAST, "serving.keep=false")

    def smoke_test(c, ctx):
        raise LLMOpsError("the endpoint did not answer")

    with pytest.raises(LLMOpsError, match="stage 'smoke_test' failed: the endpoint did not answer"):
        _deploy(cfg, tmp_path / "run", stages=("deploy", "smoke_test"), replace={"smoke_test": smoke_test})
    assert kube.objects == {}


def test_keep_false_without_smoke_test_deletes_after_deploy(kube, serving_cfg, tmp_path):
    cfg = serving_cfg("hf", *FAST, "serving.keep=false")
    out = _deploy(cfg, tmp_path / "run")
    assert out.deleted is True and out.url and kube.objects == {}


def test_undeploy_of_a_run_that_applied_nothing(tmp_path, capsys):
    (tmp_path / "state.json").write_text(json.dumps({"run_id": RUN_ID, "stages": {
        "deploy": {"status": "done", "outputs": {"manifests": [], "applied": False}}}}))
    assert cli.main(["undeploy", str(tmp_path)]) == 0
    assert "applied nothing" in capsys.readouterr().out


def test_failed_deploy_can_be_undeployed_and_keep_false_cleans_up(kube, serving_cfg, tmp_path):
    kube.fail_load = True
    cfg = serving_cfg("vllm", *FAST)
    with pytest.raises(LLMOpsError, match="objects stay for inspection, `llmops undeploy"):
        _deploy(cfg, tmp_path / "run")
    assert len(kube.objects) == 4
    # the engine recorded the failed stage and the run's config; undeploy finds the objects by label
    assert json.loads((tmp_path / "run" / "state.json").read_text())["stages"]["deploy"]["status"] == "failed"
    assert cli.main(["undeploy", str(tmp_path / "run")]) == 0
    assert kube.objects == {}

    cfg = serving_cfg("vllm", *FAST, "serving.keep=false")
    with pytest.raises(LLMOpsError, match="deleted what was applied"):
        _deploy(cfg, tmp_path / "run2")
    assert kube.objects == {}


# ------------------------------------------------------------------ credentials: cluster.auth
def test_token_auth_reaches_serving_requests(kube, serving_cfg, tmp_path, monkeypatch):
    """cluster.auth=token drives serving too: every request carries the token from the env."""
    kube.token = "serving-t0ken-4711"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "serving-t0ken-4711")
    monkeypatch.setenv("LLMOPS_K8S_SERVER", kube.url)
    cfg = serving_cfg("vllm", *FAST, "cluster.auth=token")
    out = _deploy(cfg, tmp_path / "run")
    assert out.applied and out.url
    assert cli.main(["undeploy", str(tmp_path / "run")]) == 0  # the saved config's cluster.auth
    assert kube.objects == {}
    assert {r["auth"] for r in kube.requests} == {"Bearer serving-t0ken-4711"}
    assert {r["method"] for r in kube.requests} == {"PATCH", "GET", "DELETE"}


def test_refused_token_401_names_the_keys_not_the_token(kube, serving_cfg, tmp_path, monkeypatch):
    kube.token = "the-right-one"
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "stale-t0ken-0815")
    monkeypatch.setenv("LLMOPS_K8S_SERVER", kube.url)
    cfg = serving_cfg("vllm", *FAST, "cluster.auth=token")
    with pytest.raises(LLMOpsError) as e:
        _deploy(cfg, tmp_path / "run")
    msg = str(e.value)
    assert "answered 401 Unauthorized" in msg and "expired" in msg
    assert "$LLMOPS_K8S_TOKEN = cluster.bearer_env" in msg and "stale-t0ken-0815" not in msg
    assert kube.objects == {}


def test_unreachable_api_server_names_the_key(serving_cfg, tmp_path, monkeypatch, free_port):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "t0ken-for-nobody")
    monkeypatch.setenv("LLMOPS_K8S_SERVER", f"http://127.0.0.1:{free_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOBODY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nobody-secret-value-1234")
    cfg = serving_cfg("vllm", *FAST)  # cluster.auth=auto: both variables set -> token
    with pytest.raises(LLMOpsError) as e:
        _deploy(cfg, tmp_path / "run")
    msg = str(e.value)
    assert f"API server at http://127.0.0.1:{free_port} is unreachable" in msg
    assert "cluster.server_env" in msg and "$LLMOPS_K8S_SERVER" in msg


# ------------------------------------------------------------- secret env: by Secret reference
def test_secret_env_reaches_the_runtime_by_reference(kube, serving_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf-standin-token-999")
    cfg = serving_cfg("vllm", *FAST, "+serving.env.HF_TOKEN=${oc.env:HF_TOKEN}",
                      "+serving.env.VLLM_LOGGING_LEVEL=DEBUG")
    out = _deploy(cfg, tmp_path / "run")
    isvc = out.isvc
    runtime = kube.objects[("ServingRuntime", "team-a", f"{isvc}-vllm")]
    env = {e["name"]: e for e in runtime["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": f"{isvc}-env", "key": "HF_TOKEN"}}}
    assert env["VLLM_LOGGING_LEVEL"] == {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}
    # the cluster's Secret holds the value; no manifest on disk does
    assert kube.objects[("Secret", "team-a", f"{isvc}-env")]["stringData"] == {
        "HF_TOKEN": "hf-standin-token-999"}
    for f in out.manifests:
        assert "hf-standin-token-999" not in Path(f).read_text()
    assert any("${env:HF_TOKEN}" in Path(f).read_text() for f in out.manifests)
    # undeploy deletes it with the rest (it carries the run's labels)
    assert cli.main(["undeploy", str(tmp_path / "run")]) == 0 and kube.objects == {}


def test_secret_env_from_an_existing_secret(kube, serving_cfg, tmp_path):
    cfg = serving_cfg("vllm", *FAST, "+serving.env.HF_TOKEN=from-secret", "serving.env_secret=hf")
    with pytest.raises(LLMOpsError, match="serving.env_secret = 'hf' .*: no such Secret in namespace 'team-a'"):
        _deploy(cfg, tmp_path / "run")
    assert not [r for r in kube.requests if r["method"] == "PATCH"]
