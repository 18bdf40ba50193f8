"""cluster=kubeflow, mode=cluster: the TrainJob body (no API call, strict against the Trainer CRDs,
golden files) and the submit/follow/delete path and its faults against a stand-in API server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the Kubeflow SDK is installed beside llmops without its pins (.ci/run; pyproject.toml says why)
pytest.importorskip("kubeflow.trainer", reason="the Kubeflow SDK is not installed: pip install --no-deps "
                    "'kubeflow==0.5.*' 'kubeflow-trainer-api>=2.3,<2.4' 'kubeflow-katib-api>=0.19,<0.20'")
import yaml

from llmops.core.errors import ConfigError, LLMOpsError
from tests.clusters.helpers import ctx_with_prepared_data
from tests.clusters.trainer_standin import TrainerStandIn, runtime

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kubeflow"
SECRET = "s3cr3t-value-kf-9876"
BIG = ["cluster=kubeflow", "cluster.namespace=llm-demo", "cluster.nodes=2", "cluster.node_cpus=8",
       "cluster.node_memory_gb=32", "cluster.node_gpus=1", "cluster.local_queue=team-a",
       "cluster.image=quay.io/acme/llmops-trainer:0.1", "cluster.job_timeout_s=7200",
       "cluster.env_from=['AWS_SECRET_ACCESS_KEY=s3-creds/secret-key']", "run_id=golden"]


@pytest.fixture(autouse=True)
def _schema_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLMOPS_SCHEMA_CACHE", str(tmp_path_factory.getbasetemp() / "crd-cache"))


@pytest.fixture
def standin(tmp_path, monkeypatch):
    s = TrainerStandIn(namespaces=("default", "llm-demo")).start()
    monkeypatch.setenv("KUBECONFIG", s.kubeconfig(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield s
    s.stop()


@pytest.fixture
def kf(compose):
    def make(*overrides):
        return compose("quickstart", "cluster=kubeflow", "cluster.namespace=llm-demo",
                       "cluster.poll_interval_s=0.05", *overrides)
    return make


def _golden(name: str, body: dict) -> None:
    path = GOLDEN / name
    if os.environ.get("LLMOPS_UPDATE_GOLDEN"):
        path.write_text(yaml.safe_dump(body, sort_keys=False))
    assert body == yaml.safe_load(path.read_text()), f"{path} differs; LLMOPS_UPDATE_GOLDEN=1 rewrites it"


def _run(cfg, tmp_path, **kw):
    from llmops.clusters.kubeflow import KubeflowBackend

    lines: list[str] = []
    ctx = ctx_with_prepared_data(cfg, tmp_path)
    with KubeflowBackend(cfg, echo=kw.pop("echo", lines.append), **kw) as b:
        return b.run_training(cfg, ctx.training_task()), lines


# ------------------------------------------------------------------------------------- plan
@pytest.mark.parametrize("name,overrides", [("trainjob-quickstart.yaml", ["cluster=kubeflow", "run_id=golden"]),
                                            ("trainjob-2node-gpu.yaml", BIG)])
def test_plan_writes_the_trainjob_strictly_valid_golden_and_without_api_calls(name, overrides, tmp_path,
                                                                              monkeypatch, capsys):
    import kubernetes.client

    from llmops.commands.plan import main as plan_main
    from llmops.k8s.validate import problems

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setattr(kubernetes.client.ApiClient, "call_api",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("plan made an API call")))
    out = tmp_path / "manifests"
    assert plan_main(["quickstart", *overrides, f"paths.output_root={tmp_path}", "--out", str(out)]) == 0
    files = sorted(out.glob("*-trainjob-*.yaml"))
    assert [f.name for f in files] == ["00-trainjob-golden.yaml"]
    body = yaml.safe_load(files[0].read_text())
    assert problems(body) == []
    _golden(name, body)
    spec = body["spec"]
    assert spec["runtimeRef"] == {"kind": "ClusterTrainingRuntime", "name": "torch-distributed"}
    assert spec["trainer"]["command"][-1].rstrip().endswith('torchrun "trainjob_entry.py"')
    if name == "trainjob-2node-gpu.yaml":
        assert spec["trainer"]["numNodes"] == 2 and spec["activeDeadlineSeconds"] == 7200
        assert spec["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
        assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        env = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        env = env["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert env == [{"name": "AWS_SECRET_ACCESS_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}}}]


def test_a_field_the_crd_lacks_is_a_strict_validation_error(compose):
    from llmops.clusters.kubeflow import PLAN_PAYLOAD, trainjob_body
    from llmops.k8s.validate import problems

    body = trainjob_body(compose("quickstart", "cluster=kubeflow"), PLAN_PAYLOAD, "x")
    body["spec"]["trainer"]["numNode"] = 2
    assert any("numNode" in p for p in problems(body))
    assert problems(runtime()) == [] and problems(runtime("mpi-x", "mpi")) == []  # the stand-in's runtimes


def test_bad_kubeflow_settings_are_named_before_anything_runs(compose):
    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=kubeflow", "cluster.mode=local", "cluster.nodes=2",
                "cluster.name=Bad_Name", "cluster.env_from=['TOKEN=no-key']",
                "+cluster.envs.HF_TOKEN=abc123")
    msg = str(e.value)
    assert "cluster.nodes = 2" in msg and "cluster.mode=local" in msg
    assert "cluster.name = 'Bad_Name'" in msg and "cluster.env_from.0" in msg
    with pytest.raises(ConfigError, match="cluster.envs.HF_TOKEN: a secret would be stored"):
        compose("quickstart", "cluster=kubeflow", "+cluster.envs.HF_TOKEN=abc123")
    with pytest.raises(ConfigError, match="cluster.mode = .*cluster or local with cluster=kubeflow"):
        compose("quickstart", "cluster=kubeflow", "cluster.mode=rayjob")


# --------------------------------------------------------------------------- submit and follow
def test_trainjob_is_the_planned_one_carries_no_secret_and_is_deleted(standin, kf, tmp_path, monkeypatch):
    from llmops.clusters.kubeflow import PLAN_PAYLOAD, job_name, trainjob_body

    monkeypatch.setenv("MY_HF_TOKEN", SECRET)
    standin.queues.add(("llm-demo", "team-a"))
    cfg = kf("cluster.local_queue=team-a", "cluster.env_from=['HF_TOKEN=hf/token']",
             "model.revision=${oc.env:MY_HF_TOKEN}")
    out, lines = _run(cfg, tmp_path)
    assert out.metrics == {"eval_loss": 1.5}
    assert "step 2" in lines and any("Complete" in ln for ln in lines)
    [sent] = standin.created
    assert SECRET not in yaml.safe_dump(sent)  # the config travels with references only
    planned = trainjob_body(cfg, PLAN_PAYLOAD, job_name(cfg))
    payload_free = lambda b: {**b, "spec": {**b["spec"], "trainer": {
        k: v for k, v in b["spec"]["trainer"].items() if k != "command"}}}
    planned["metadata"].pop("namespace")
    assert payload_free(sent) == payload_free(planned)
    assert standin.deleted == [("llm-demo", job_name(cfg))] and not standin.trainjobs


def test_keep_leaves_the_trainjob_but_ctrl_c_deletes_it(standin, kf, tmp_path):
    cfg = kf("cluster.keep=true", "run_id=keep-1")
    _run(cfg, tmp_path / "a")
    assert ("llm-demo", "keep-1") in standin.trainjobs and not standin.deleted

    def interrupt(line):
        if "Running" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(kf("cluster.keep=true", "run_id=ctrlc-1"), tmp_path / "b", echo=interrupt)
    assert ("llm-demo", "ctrlc-1") in standin.deleted


def test_a_failed_trainjob_says_why_and_is_deleted(standin, kf, tmp_path):
    standin.behaviour = "fail"
    with pytest.raises(LLMOpsError, match="failed: training: transformers rejects these settings"):
        _run(kf("run_id=fail-1"), tmp_path)
    assert standin.deleted == [("llm-demo", "fail-1")]


def test_a_trainjob_that_never_starts_times_out_and_is_deleted(standin, kf, tmp_path):
    standin.behaviour = "pending"
    with pytest.raises(LLMOpsError, match=r"did not start within cluster.ready_timeout_s = 1 s"):
        _run(kf("run_id=pend-1", "cluster.ready_timeout_s=1"), tmp_path)
    assert standin.deleted == [("llm-demo", "pend-1")]


@pytest.mark.parametrize("overrides,expect", [
    (["cluster.runtime=no-such-runtime"], r"cluster.runtime = 'no-such-runtime': no TrainingRuntime"),
    (["cluster.runtime=mpi-distributed"], r"cluster.runtime = 'mpi-distributed': not a torch runtime"),
    (["cluster.local_queue=nope"], r"cluster.local_queue = 'nope': no Kueue LocalQueue"),
    (["cluster.namespace=missing-ns"], r"cluster.namespace = 'missing-ns': no such namespace"),
])
def test_missing_or_wrong_runtime_queue_namespace_name_the_key(standin, kf, tmp_path, overrides, expect):
    standin.cluster_runtimes["mpi-distributed"] = runtime("mpi-distributed", "mpi")
    with pytest.raises(LLMOpsError, match=expect):
        _run(kf(*overrides), tmp_path)
    assert not standin.created  # nothing was submitted


def test_no_kubeconfig_and_unreachable_server_name_the_credentials(kf, tmp_path, monkeypatch):
    from tests.fixtures.ray_head import free_port

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(LLMOpsError, match=r"cluster.auth = kubeconfig: no usable kubeconfig"):
        _run(kf("cluster.auth=kubeconfig"), tmp_path / "a")
    dead = TrainerStandIn()
    dead.server.server_address = ("127.0.0.1", free_port())  # a port nobody listens on
    monkeypatch.setenv("KUBECONFIG", dead.kubeconfig(tmp_path / "kc"))
    dead.server.server_close()
    with pytest.raises(LLMOpsError, match=r"unreachable"):
        _run(kf(), tmp_path / "b")
