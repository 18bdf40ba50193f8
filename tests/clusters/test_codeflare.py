"""cluster=codeflare (the RayCluster and RayJob backends) with fakes of the Kubernetes API objects
(CoreV1Api, CustomObjectsApi) behind the real llmops.k8s.client.Kube, the way the CodeFlare SDK
tests itself; the dashboard is a real local Ray head or a loopback server.

Credential faults (no kubeconfig, unreachable server, expired token) use the real kubernetes
client against a loopback address. Every fault ends in a specific error, and the fake API must
have seen the delete of whatever llmops applied.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

import pytest
import yaml

from llmops.core.errors import LLMOpsError
from tests.clusters.helpers import ctx_with_prepared_data

PROBE = str(Path(__file__).parent / "probe" / "llmops_probe")
IMAGE = "quay.io/modh/ray:2.58.0-py311-cu121"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kuberay"


def _api_exception(status: int, message: str = ""):
    from kubernetes.client.exceptions import ApiException

    e = ApiException(status=status, reason={401: "Unauthorized", 404: "Not Found"}.get(status, "x"))
    e.body = json.dumps({"kind": "Status", "message": message or f"status {status}"})
    return e


class FakeCore:
    def __init__(self, namespaces=("llm-demo",), secrets=()):
        self.namespaces = set(namespaces)
        self.secrets = {name: {"metadata": {"name": name}} for name in secrets}
        self.calls = []

    def read_namespace(self, name):
        if name not in self.namespaces:
            raise _api_exception(404, f'namespaces "{name}" not found')
        return {"metadata": {"name": name}}

    def read_namespaced_secret(self, name, namespace):
        if name not in self.secrets:
            raise _api_exception(404, f'secrets "{name}" not found')
        return self.secrets[name]

    def patch_namespaced_secret(self, name, namespace, body, **kw):
        assert kw["_content_type"] == "application/apply-patch+yaml" and kw["field_manager"] == "llmops"
        self.calls.append(("apply", "secrets", name))
        self.secrets[name] = json.loads(json.dumps(body))
        return body

    def delete_namespaced_secret(self, name, namespace, **kw):
        self.calls.append(("delete", "secrets", name))
        if self.secrets.pop(name, None) is None:
            raise _api_exception(404)
        return {}


class FakeCustom:
    """Objects by (plural, namespace, name); `status` scripts what KubeRay would report."""

    def __init__(self, queues=(), existing=(), status=None, on_apply=None):
        self.objects = {}
        self.queues = set(queues)
        self.calls = []
        self.status = status or (lambda plural, obj, n: {"state": "ready"})
        self.on_apply = on_apply
        self.gets = 0
        for name in existing:
            self.objects[("rayclusters", "llm-demo", name)] = {"metadata": {"name": name},
                                                                "status": {"state": "ready"}}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", plural, name))
        if plural == "localqueues":
            if name in self.queues:
                return {"metadata": {"name": name}}
            raise _api_exception(404)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise _api_exception(404)
        self.gets += 1
        if "status" not in obj or plural == "rayjobs" or obj["status"].get("state") != "ready":
            obj["status"] = self.status(plural, obj, self.gets)
        return obj

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kw):
        assert kw["_content_type"] == "application/apply-patch+yaml" and kw["field_manager"] == "llmops"
        self.calls.append(("apply", plural, name))
        self.objects[(plural, namespace, name)] = dict(body)
        if self.on_apply:
            self.on_apply(plural, self.objects[(plural, namespace, name)])
        return body

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.calls.append(("delete", plural, name))
        if self.objects.pop((plural, namespace, name), None) is None:
            raise _api_exception(404)
        return {}

    def deleted(self):
        return [c[1:] for c in self.calls if c[0] == "delete"]

    def applied(self):
        return [c[1:] for c in self.calls if c[0] == "apply"]


def _kube(core=None, custom=None, token="kube-token-abc123"):
    from kubernetes import client

    from llmops.k8s.client import Kube

    conf = client.Configuration()
    conf.host = "https://api.fake.example:6443"
    conf.api_key = {"authorization": token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    return Kube(client.ApiClient(conf), core=core or FakeCore(), custom=custom or FakeCustom())


def _ctx(cfg, tmp_path):
    return ctx_with_prepared_data(cfg, tmp_path)


@pytest.fixture
def cf_cfg(compose):
    def make(*overrides):
        return compose("quickstart", "cluster=codeflare", f"cluster.image={IMAGE}",
                       "cluster.namespace=llm-demo", "cluster.name=gpt2-blog",
                       "cluster.poll_interval_s=0.05", "cluster.ready_timeout_s=2",
                       f"cluster.python={sys.executable}", *overrides)

    return make


def _backend(cfg, kube=None, lines=None, **kw):
    """The backend get_backend picks for cfg, with a fake API, the probe training and no sleeps."""
    from llmops.clusters.raycluster import RayClusterBackend
    from llmops.clusters.rayjob import RayJobBackend

    cls = RayJobBackend if str(cfg.cluster.mode.value) == "rayjob" else RayClusterBackend
    kw.setdefault("sleep", lambda s: None)
    return cls(cfg, kube=kube, train_callable="llmops_probe:fit", extra_py_modules=[PROBE],
               echo=(lines.append if lines is not None else lambda s: None), **kw)


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"kind": "Status", "status": "Failure", "code": 401,
                                     "message": "Unauthorized"}).encode())

    do_POST = do_PATCH = do_DELETE = do_GET

    def log_message(self, *a):
        pass


@pytest.fixture
def unauthorized_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


# ----------------------------------------------------------------------------------- credentials
def test_get_backend_picks_by_kind_and_mode(cf_cfg):
    from llmops.clusters import get_backend
    from llmops.clusters.raycluster import RayClusterBackend
    from llmops.clusters.rayjob import RayJobBackend

    assert isinstance(get_backend(cf_cfg()), RayClusterBackend)
    assert isinstance(get_backend(cf_cfg("cluster.mode=rayjob")), RayJobBackend)


def test_no_kubeconfig_is_a_clear_error(cf_cfg, tmp_path, monkeypatch):
    from llmops.k8s.client import connect

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("LLMOPS_K8S_TOKEN", raising=False)
    with pytest.raises(LLMOpsError) as e:
        connect(cf_cfg())
    msg = str(e.value)
    assert "kubeconfig" in msg and "oc login" in msg and "cluster.auth=token" in msg


def test_token_auth_needs_both_variables(cf_cfg, monkeypatch):
    from llmops.k8s.client import connect

    monkeypatch.delenv("LLMOPS_K8S_SERVER", raising=False)
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "t0k3n-value")
    with pytest.raises(LLMOpsError) as e:
        connect(cf_cfg("cluster.auth=token"))
    assert "LLMOPS_K8S_SERVER" in str(e.value) and "cluster.server_env" in str(e.value)


def test_unreachable_api_server(cf_cfg, monkeypatch):
    from tests.fixtures.ray_head import free_port

    server = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "t0k3n-value")
    monkeypatch.setenv("LLMOPS_K8S_SERVER", server)
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg("cluster.auth=token")):
            pass
    msg = str(e.value)
    assert "unreachable" in msg and server in msg and "cluster.server_env" in msg


def test_expired_token_401_from_the_api_server(cf_cfg, monkeypatch, unauthorized_server):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("LLMOPS_K8S_TOKEN", "expired-t0k3n-77")
    monkeypatch.setenv("LLMOPS_K8S_SERVER", unauthorized_server)
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg()):  # auth=auto picks the token
            pass
    msg = str(e.value)
    assert "401" in msg and "expired" in msg and "expired-t0k3n-77" not in msg
    assert "cluster.bearer_env" in msg


# ----------------------------------------------------------------------------- namespace, queue
def test_missing_namespace_and_queue(cf_cfg):
    custom = FakeCustom()
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg("cluster.namespace=nope"), _kube(custom=custom)):
            pass
    assert "cluster.namespace = 'nope'" in str(e.value)
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg("cluster.local_queue=team-x"), _kube(custom=custom)):
            pass
    assert "cluster.local_queue = 'team-x'" in str(e.value) and "LocalQueue" in str(e.value)
    assert custom.applied() == [] and custom.deleted() == []  # nothing was created


# ------------------------------------------------------------------------------- RayCluster life
def test_never_ready_is_deleted(cf_cfg):
    custom = FakeCustom(queues={"team-a"}, status=lambda p, o, n: {"state": "suspended"})
    lines = []
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg("cluster.ready_timeout_s=1", "cluster.local_queue=team-a"),
                      _kube(custom=custom), lines):
            pass
    assert "cluster.ready_timeout_s" in str(e.value) and "Kueue" in str(e.value)
    assert custom.applied() == [("rayclusters", "gpt2-blog")]
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]
    assert custom.objects == {}  # nothing left in the fake API


def test_applied_body_is_the_golden_blog_cluster(cf_cfg):
    seen = {}
    custom = FakeCustom(on_apply=lambda plural, body: seen.update(body=json.loads(json.dumps(body))),
                        status=lambda p, o, n: {"state": "failed", "reason": "image pull backoff"})
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg("cluster.num_workers=1", "cluster.worker_cpus=2",
                             "cluster.worker_memory_gb=8", "cluster.gpus_per_worker=1"),
                      _kube(custom=custom)):
            pass
    assert "image pull backoff" in str(e.value)
    assert seen["body"] == yaml.safe_load((GOLDEN / "raycluster-blog.yaml").read_text())
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]


def test_ctrl_c_while_waiting_deletes(cf_cfg):
    def status(plural, obj, n):
        if n >= 2:
            raise KeyboardInterrupt
        return {"state": ""}

    custom = FakeCustom(status=status)
    with pytest.raises(KeyboardInterrupt):
        with _backend(cf_cfg("cluster.ready_timeout_s=60"), _kube(custom=custom)):
            pass
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]


def test_dashboard_401_deletes(cf_cfg, unauthorized_server):
    custom = FakeCustom()
    with pytest.raises(LLMOpsError) as e:
        with _backend(cf_cfg(f"cluster.dashboard_url={unauthorized_server}"), _kube(custom=custom)):
            pass
    msg = str(e.value)
    assert "401" in msg and "cluster.dashboard_url" in msg and "kube-token-abc123" not in msg
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]


def test_reused_cluster_is_not_applied_nor_deleted(cf_cfg, unauthorized_server):
    custom = FakeCustom(existing=["gpt2-blog"])
    lines = []
    with pytest.raises(LLMOpsError):  # the dashboard refuses, but the cluster is the user's
        with _backend(cf_cfg(f"cluster.dashboard_url={unauthorized_server}"), _kube(custom=custom),
                      lines):
            pass
    assert custom.applied() == [] and custom.deleted() == []
    assert any("existing RayCluster gpt2-blog" in ln for ln in lines)


def test_keep_leaves_the_cluster(cf_cfg, unauthorized_server):
    custom = FakeCustom()
    with pytest.raises(LLMOpsError):
        with _backend(cf_cfg("cluster.keep=true", f"cluster.dashboard_url={unauthorized_server}"),
                      _kube(custom=custom)):
            pass
    assert custom.applied() == [("rayclusters", "gpt2-blog")] and custom.deleted() == []


# ---------------------------------------------------------------- jobs on a real head (dashboard)
@pytest.mark.slow
def test_raycluster_mode_trains_and_deletes(ray_head, cf_cfg, tmp_path):
    """Apply (fake API) -> ready -> job on the dashboard (real head) with the kube token -> delete."""
    custom = FakeCustom()
    cfg = cf_cfg(f"cluster.dashboard_url={ray_head.address}", "training.lr=0.5")
    lines = []
    with _backend(cfg, _kube(custom=custom), lines) as b:
        assert b.headers() == {"Authorization": "Bearer kube-token-abc123"}
        out = b.run_training(cfg, _ctx(cfg, tmp_path).training_task())
    assert out.metrics["global_step"] == 2
    assert (Path(out.model_uri) / "weights.txt").read_text() == "lr=0.5\n"
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]
    assert any("SUCCEEDED" in ln for ln in lines)


@pytest.mark.slow
def test_job_dying_mid_run_surfaces_and_deletes(ray_head, cf_cfg, tmp_path):
    custom = FakeCustom()
    cfg = cf_cfg(f"cluster.dashboard_url={ray_head.address}", "training.max_steps=999")
    with pytest.raises(LLMOpsError) as e:
        with _backend(cfg, _kube(custom=custom)) as b:
            b.run_training(cfg, _ctx(cfg, tmp_path).training_task())
    assert "FAILED" in str(e.value) and "training diverged at step 3" in str(e.value)
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]


class _Operator:
    """Stands in for the KubeRay operator: an applied RayJob runs its entrypoint on the real head
    (K8sJobMode: the submitter runs `ray job submit`), as an image with llmops installed would."""

    def __init__(self, head):
        from ray.job_submission import JobSubmissionClient

        self.head = head
        self.client = JobSubmissionClient(head.address)
        self.job_id = None

    def on_apply(self, plural, body):
        rt = yaml.safe_load(body["spec"]["runtimeEnvYAML"])
        assert body["spec"]["shutdownAfterJobFinishes"] is True
        rt["py_modules"] = [str(Path(__import__("llmops").__file__).parent), PROBE]
        self.job_id = self.client.submit_job(entrypoint=body["spec"]["entrypoint"], runtime_env=rt)

    def status(self, plural, obj, n):
        if self.job_id is None:
            return {"jobDeploymentStatus": "Initializing"}
        js = self.client.get_job_status(self.job_id).value
        dep = {"SUCCEEDED": "Complete", "FAILED": "Failed", "STOPPED": "Failed"}.get(js, "Running")
        return {"jobDeploymentStatus": dep, "jobStatus": js, "jobId": self.job_id,
                "dashboardURL": self.head.address.replace("http://", ""),
                "message": "Job entrypoint command failed with exit code 1" if js == "FAILED" else ""}


@pytest.mark.slow
def test_rayjob_mode_follows_to_complete_and_deletes(ray_head, cf_cfg, tmp_path):
    op = _Operator(ray_head)
    custom = FakeCustom(status=op.status, on_apply=op.on_apply)
    cfg = cf_cfg("cluster.mode=rayjob", "cluster.name=gpt2-job", "cluster.ready_timeout_s=60",
                 "cluster.poll_interval_s=0.3")
    lines = []
    b = _backend(cfg, _kube(custom=custom), lines, sleep=__import__("time").sleep)
    with b:
        out = b.run_training(cfg, _ctx(cfg, tmp_path).training_task())
    assert out.metrics["global_step"] == 2 and out.metrics["probe"]["method"] == "full"
    assert custom.applied() == [("rayjobs", "gpt2-job")]
    assert custom.deleted() == [("rayjobs", "gpt2-job")]
    assert any("Complete SUCCEEDED" in ln for ln in lines)


# ------------------------------------------------------------------ secret envs: by reference
SECRET_ENVS = ["+cluster.envs.AWS_SECRET_ACCESS_KEY=${oc.env:AWS_SECRET_ACCESS_KEY}",
               "+cluster.envs.AWS_S3_ENDPOINT=http://minio.minio.svc:9000"]


def test_secret_env_is_applied_in_a_secret_and_deleted_with_the_cluster(cf_cfg, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "applied-secret-value-42")
    seen = {}
    core = FakeCore()
    custom = FakeCustom(on_apply=lambda plural, body: seen.update(body=json.loads(json.dumps(body))),
                        status=lambda p, o, n: {"state": "failed", "reason": "quota"})
    lines = []
    with pytest.raises(LLMOpsError, match="quota"):
        with _backend(cf_cfg(*SECRET_ENVS), _kube(core=core, custom=custom), lines):
            pass
    # the Secret went first, with the value; the RayCluster only refers to it
    assert core.calls[0] == ("apply", "secrets", "gpt2-blog-env")
    assert "applied-secret-value-42" not in json.dumps(seen["body"])
    head = seen["body"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
        "name": "gpt2-blog-env", "key": "AWS_SECRET_ACCESS_KEY"}}} in head["env"]
    assert {"name": "AWS_S3_ENDPOINT", "value": "http://minio.minio.svc:9000"} in head["env"]
    assert ("delete", "secrets", "gpt2-blog-env") in core.calls and core.secrets == {}
    assert custom.deleted() == [("rayclusters", "gpt2-blog")]
    assert not any("applied-secret-value-42" in ln for ln in lines)


def test_rayjob_secret_env_is_filled_in_memory_only(cf_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "applied-secret-value-42")
    core = FakeCore()
    custom = FakeCustom(status=lambda p, o, n: {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED",
                                                "message": "admission refused"})
    cfg = cf_cfg(*SECRET_ENVS, "cluster.mode=rayjob")
    with pytest.raises(LLMOpsError, match="admission refused"):
        with _backend(cfg, _kube(core=core, custom=custom)) as b:
            filled = {}
            orig = core.patch_namespaced_secret
            core.patch_namespaced_secret = lambda n, ns, body, **kw: (filled.update(body), orig(n, ns, body, **kw))[1]
            b.run_training(cfg, _ctx(cfg, tmp_path).training_task())
    assert filled["stringData"] == {"AWS_SECRET_ACCESS_KEY": "applied-secret-value-42"}
    job = [c for c in custom.calls if c[0] == "apply"]
    assert job == [("apply", "rayjobs", "gpt2-blog")]
    assert custom.deleted() == [("rayjobs", "gpt2-blog")] and core.secrets == {}
    assert "applied-secret-value-42" not in "".join(p.read_text(errors="ignore")
                                                     for p in tmp_path.rglob("*") if p.is_file())


def test_missing_env_secret_and_missing_env_var(cf_cfg, monkeypatch):
    custom = FakeCustom()
    with pytest.raises(LLMOpsError, match="cluster.env_secret = 'team-s3': no such Secret"):
        with _backend(cf_cfg("cluster.env_secret=team-s3", "+cluster.envs.HF_TOKEN=x"),
                      _kube(custom=custom)):
            pass
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    with pytest.raises(LLMOpsError, match="AWS_SECRET_ACCESS_KEY not set in the environment.*cluster.envs"):
        with _backend(cf_cfg(*SECRET_ENVS), _kube(custom=custom)):
            pass
    assert custom.applied() == []
