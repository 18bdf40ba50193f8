"""`llmops plan --server-dry-run` against the stand-in API server (tests/serving/kube_standin.py)
on 127.0.0.1, with the real kubernetes client and the run's own credentials (the kubeconfig the
`kube` fixture points $KUBECONFIG at). What a user sees: the exit status, the lines naming the
object and the config key, and that nothing was stored on the server."""

from __future__ import annotations

import json

from llmops import cli
from tests.serving.conftest import RUN_ID

SECRET = "standin-secret-value-1234"  # the kube fixture's AWS_SECRET_ACCESS_KEY
S3 = ["storage=s3", "storage.bucket=models", "storage.endpoint_url=http://minio.minio.svc:9000",
      f"run_id={RUN_ID}"]


def _ns(kube, name):
    kube.namespaces[name] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _plan(capsys, tmp_path, *overrides, ns="team-a"):
    """`llmops plan quickstart ... --server-dry-run` in process: (exit status, stdout, stderr)."""
    args = ["plan", "quickstart", f"paths.output_root={tmp_path / 'outputs'}",
            f"serving.namespace={ns}", *S3, *overrides, "--server-dry-run"]
    rc = cli.main(args)
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return rc, out, err


def _writes(kube):
    """Requests that would have changed the cluster: a PATCH without dryRun=All, any DELETE."""
    return [r for r in kube.requests if (r["method"] == "PATCH" and r["query"].get("dryRun") != "All")
            or r["method"] in ("DELETE", "POST", "PUT")]


def test_all_checks_pass_and_nothing_is_stored(kube, tmp_path, capsys):
    _ns(kube, "team-a")
    rc, out, err = _plan(capsys, tmp_path)
    assert rc == 0, err
    isvc = RUN_ID
    assert "# --- stage deploy" in out  # the offline plan is printed first
    assert out.index("kind: InferenceService") < out.index("# --- server dry run")
    for obj in (f"Secret/team-a/{isvc}-s3", f"ServiceAccount/team-a/{isvc}-sa",
                f"ServingRuntime/team-a/{isvc}-vllm", f"InferenceService/team-a/{isvc}"):
        assert f"#   ok       {obj}: ok" in out
    assert "#   ok       Namespace/team-a: exists" in out
    assert "InferenceService serving.kserve.io/v1beta1: served (discovery: GET /apis/serving.kserve.io/" \
           "v1beta1 lists inferenceservices; CRD inferenceservices.serving.kserve.io serves v1beta1)" in out
    assert f"runtime: ServingRuntime/team-a/{isvc}-vllm: applied by this plan (dry run ok)" in out
    assert "server dry run: 8 ok, 0 skipped, 0 failed" in out
    # every object went as a server-side apply with dryRun=All; nothing is stored
    patches = [r for r in kube.requests if r["method"] == "PATCH"]
    assert [r["kind"] for r in patches] == ["Secret", "ServiceAccount", "ServingRuntime", "InferenceService"]
    assert all(r["query"] == {"dryRun": "All", "fieldManager": "llmops", "force": "true",
                              "fieldValidation": "Strict"} for r in patches)
    assert _writes(kube) == [] and kube.stored() == []
    # the Secret went with the real value, filled for the request only; no output shows it
    assert patches[0]["body"]["stringData"]["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert "${env:AWS_SECRET_ACCESS_KEY}" in out  # the offline plan: placeholders


def test_missing_namespace_names_the_key(kube, tmp_path, capsys):
    rc, out, err = _plan(capsys, tmp_path, ns="team-x")
    assert rc == 1
    assert ("llmops plan: server dry run: Namespace/team-x: serving.namespace = 'team-x': no such "
            "namespace on http://127.0.0.1:") in err
    assert "create it, or set serving.create_namespace=true" in err
    assert len([line for line in err.splitlines() if "server dry run:" in line]) == 1  # said once
    assert f"skipped  InferenceService/team-x/{RUN_ID}: not sent: namespace 'team-x' is missing" in out
    assert not [r for r in kube.requests if r["method"] == "PATCH"]


def test_namespace_the_plan_creates_is_not_a_failure(kube, tmp_path, capsys):
    rc, out, err = _plan(capsys, tmp_path, "serving.create_namespace=true", ns="team-new")
    assert rc == 0, err
    assert "ok       Namespace/team-new: ok" in out  # the Namespace itself went (dry run)
    assert "Namespace/team-new: absent; this plan applies it first" in out
    assert f"skipped  Secret/team-new/{RUN_ID}-s3: not sent: its namespace 'team-new' does not exist yet" in out
    assert kube.stored() == [] and "team-new" not in kube.namespaces


def test_refused_object_shows_the_server_message(kube, tmp_path, capsys):
    _ns(kube, "team-a")
    kube.invalid = ("InferenceService", "spec.predictor.minReplicas", "Invalid value: 3: must be <= maxReplicas")
    rc, out, err = _plan(capsys, tmp_path)
    assert rc == 1
    assert (f"llmops plan: server dry run: InferenceService/team-a/{RUN_ID}: dry-run apply "
            f"InferenceService/{RUN_ID} in team-a: the API server (http://127.0.0.1:") in err
    assert ("answered 422 Unprocessable Entity: InferenceService.serving.kserve.io "
            f"\"{RUN_ID}\" is invalid: spec.predictor.minReplicas: Invalid value: 3: must be <= "
            "maxReplicas (rendered from the serving.* keys)") in err
    assert "ok       ServingRuntime/team-a/" in out and kube.stored() == []


def test_refused_runtime_fails_the_runtime_check_too(kube, tmp_path, capsys):
    _ns(kube, "team-a")
    kube.invalid = ("ServingRuntime", "spec.containers[0].image", "Required value")
    rc, out, err = _plan(capsys, tmp_path, "--format", "json")
    assert rc == 1
    report = json.loads(out)["server_dry_run"]  # --format json: one document, the report in it
    failed = {r["subject"]: r for r in report["applied"] + report["checks"] if r["status"] == "failed"}
    assert set(failed) == {f"ServingRuntime/team-a/{RUN_ID}-vllm", f"InferenceService/team-a/{RUN_ID} runtime"}
    rt = failed[f"InferenceService/team-a/{RUN_ID} runtime"]
    assert rt["key"] == "serving.runtime_name"
    assert (f"serving.runtime_name = '{RUN_ID}-vllm': expected a ServingRuntime '{RUN_ID}-vllm' in "
            f"namespace 'team-a' or a ClusterServingRuntime '{RUN_ID}-vllm'") in rt["text"]
    assert "the plan's own ServingRuntime was not accepted" in rt["text"]
    assert report["counts"]["failed"] == 2


def test_runtime_the_plan_does_not_apply(kube, serving_cfg):
    """An InferenceService whose runtime is not among the objects sent: missing, then found as a
    ClusterServingRuntime, then as a ServingRuntime in its namespace."""
    from llmops.pipeline import engine
    from llmops.pipeline.dry_run import server_dry_run

    _ns(kube, "team-a")
    cfg = serving_cfg("vllm", "serving.namespace=team-a", "serving.runtime_name=vllm-cuda")
    steps = [{**s, "objects": [o for o in s.get("objects", []) if o["kind"] != "ServingRuntime"]}
             for s in engine.plan(cfg)]

    def runtime_line():
        report = server_dry_run(steps, cfg)
        return next(f for f in report.checks if f.subject.endswith(" runtime"))

    f = runtime_line()
    assert f.status == "failed" and f.key == "serving.runtime_name"
    assert "serving.runtime_name = 'vllm-cuda': expected a ServingRuntime 'vllm-cuda' in namespace " \
           "'team-a' or a ClusterServingRuntime 'vllm-cuda'" in f.line()
    kube.seed({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
               "metadata": {"name": "vllm-cuda"}, "spec": {"containers": []}})
    f = runtime_line()
    assert (f.status, f.text) == ("ok", "ClusterServingRuntime/vllm-cuda exists")
    kube.seed({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
               "metadata": {"name": "vllm-cuda", "namespace": "team-a"}, "spec": {"containers": []}})
    f = runtime_line()
    assert (f.status, f.text) == ("ok", "ServingRuntime/team-a/vllm-cuda exists")


def test_missing_local_queue_names_the_key(kube, tmp_path, capsys):
    _ns(kube, "team-a")
    ray = ["cluster=codeflare", "cluster.image=quay.io/modh/ray:2.58.0-py311-cu121",
           "cluster.namespace=team-a", "cluster.local_queue=team-q"]
    rc, out, err = _plan(capsys, tmp_path, *ray)
    assert rc == 1
    assert (f"llmops plan: server dry run: RayCluster/team-a/{RUN_ID} LocalQueue: cluster.local_queue = "
            "'team-q': expected a Kueue LocalQueue 'team-q' (kueue.x-k8s.io/v1beta1) in namespace 'team-a'") in err
    assert f"ok       RayCluster/team-a/{RUN_ID}: ok" in out  # the RayCluster itself passed its dry run

    kube.seed({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
               "metadata": {"name": "team-q", "namespace": "team-a"}, "spec": {"clusterQueue": "cq"}})
    rc, out, err = _plan(capsys, tmp_path, *ray)
    assert rc == 0, err
    assert f"ok       RayCluster/team-a/{RUN_ID} LocalQueue: LocalQueue/team-a/team-q exists" in out
    assert _writes(kube) == [] and kube.stored() == [("LocalQueue", "team-a", "team-q")]  # the seeded one


def test_crd_version_not_served(kube, tmp_path, capsys):
    """A cluster whose KServe serves no serving.kserve.io/v1alpha2 (no LLMInferenceService) and
    whose CRDs this user may not read: discovery tells."""
    _ns(kube, "team-a")
    kube.served.discard(("serving.kserve.io", "v1alpha2"))
    kube.crds_readable = False
    rc, out, err = _plan(capsys, tmp_path, "serving=llmisvc")
    assert rc == 1
    assert ("llmops plan: server dry run: LLMInferenceService serving.kserve.io/v1alpha2: serving.kind = "
            "'llmisvc' needs LLMInferenceService serving.kserve.io/v1alpha2 served by http://127.0.0.1:") in err
    assert ("(discovery: GET /apis/serving.kserve.io/v1alpha2 answered 404; CRD "
            "llminferenceservices.serving.kserve.io not readable (") in err
    assert f"skipped  LLMInferenceService/team-a/{RUN_ID}: not sent: serving.kserve.io/v1alpha2 is not served" in out
    assert "LLMInferenceService" not in {r["kind"] for r in kube.requests if r["method"] == "PATCH"}


def test_no_kubeconfig_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    for name in ("KUBERNETES_SERVICE_HOST", "LLMOPS_K8S_TOKEN", "LLMOPS_K8S_SERVER"):
        monkeypatch.delenv(name, raising=False)
    rc, out, err = _plan(capsys, tmp_path)
    assert rc == 2
    assert "kind: InferenceService" in out  # the offline plan still printed
    lines = [line for line in err.splitlines() if line.startswith("llmops plan: error:")]
    assert len(lines) == 1 and "--server-dry-run: cluster.auth = auto: no usable kubeconfig" in lines[0]
    assert str(tmp_path / "no-such-kubeconfig") in lines[0]


def test_unreachable_api_server_is_one_clear_error(tmp_path, capsys, monkeypatch, free_port):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "t0ken-for-nobody-4711")
    monkeypatch.setenv("LLMOPS_K8S_SERVER", f"http://127.0.0.1:{free_port}")
    rc, out, err = _plan(capsys, tmp_path, "cluster.auth=token")
    assert rc == 2
    assert f"reach the API server: the Kubernetes API server at http://127.0.0.1:{free_port} is unreachable" in err
    assert "cluster.server_env" in err and "t0ken-for-nobody-4711" not in out + err


def test_secret_env_values_reach_only_the_request(kube, tmp_path, capsys, monkeypatch):
    _ns(kube, "team-a")
    monkeypatch.setenv("HF_TOKEN", "hf-standin-token-999")
    rc, out, err = _plan(capsys, tmp_path, "+serving.env.HF_TOKEN=${oc.env:HF_TOKEN}")
    assert rc == 0, err
    sent = next(r["body"] for r in kube.requests if r["kind"] == "Secret" and r["name"] == f"{RUN_ID}-env")
    assert sent["stringData"] == {"HF_TOKEN": "hf-standin-token-999"}
    assert "hf-standin-token-999" not in out + err and kube.stored() == []
