"""KubeRay bodies: built without a cluster, strict against the CRD schemas and their CEL rules,
equal to golden files; secret envs reach the pods only by Secret reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from llmops.core.errors import ConfigError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kuberay"
IMAGE = "quay.io/modh/ray:2.58.0-py311-cu121"
BLOG = ["cluster=codeflare", f"cluster.image={IMAGE}", "cluster.name=gpt2-blog",
        "cluster.namespace=llm-demo", "cluster.num_workers=1", "cluster.worker_cpus=2",
        "cluster.worker_memory_gb=8", "cluster.gpus_per_worker=1", "run_id=golden"]
FOUR_GPU = ["cluster=codeflare", f"cluster.image={IMAGE}", "cluster.name=gpt2-4gpu",
            "cluster.namespace=llm-demo", "cluster.num_workers=4", "cluster.worker_cpus=8",
            "cluster.cpus_per_worker=4", "cluster.worker_memory_gb=32", "cluster.gpus_per_worker=1",
            "cluster.local_queue=team-a",
            "cluster.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
            "cluster.volumes=[{name: models, persistentVolumeClaim: {claimName: models}}]",
            "cluster.volume_mounts=[{name: models, mountPath: /mnt/models}]", "run_id=golden"]


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """Composed configs, cached for this module: these tests only read them."""
    from llmops.pipeline.checks import compose as _compose
    from llmops.config.compose import strip_hydra

    base = tmp_path_factory.mktemp("kuberay")
    cache: dict = {}

    def _c(recipe: str = "quickstart", *overrides: str):
        key = (recipe, overrides)
        if key not in cache:
            cfg, _ = _compose(recipe, [f"paths.output_root={base / 'outputs'}",
                                       f"paths.cache_dir={base / 'cache'}", *overrides])
            cache[key] = strip_hydra(cfg)
        return cache[key]

    return _c


def _golden(name: str, body: dict) -> None:
    path = GOLDEN / name
    if os.environ.get("LLMOPS_UPDATE_GOLDEN"):
        path.write_text(yaml.safe_dump(body, sort_keys=False))
    assert body == yaml.safe_load(path.read_text()), f"{path} differs; LLMOPS_UPDATE_GOLDEN=1 rewrites it"


@pytest.mark.parametrize("name,overrides", [("raycluster-blog.yaml", BLOG),
                                            ("raycluster-4gpu.yaml", FOUR_GPU)])
def test_raycluster_bodies_match_golden_and_crd(compose, name, overrides):
    from llmops.clusters import kuberay
    from llmops.k8s import validate

    body = kuberay.raycluster_body(compose("quickstart", *overrides))
    assert validate.problems(body) == []
    _golden(name, body)
    # what the fields mean, not only that they did not change
    worker = body["spec"]["workerGroupSpecs"][0]
    res = worker["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1" and worker["rayStartParams"]["num-gpus"] == "1"
    assert body["spec"]["rayVersion"] == "2.58.0"
    assert body["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def test_blog_cluster_has_the_blog_shape(compose):
    from llmops.clusters import kuberay

    body = kuberay.raycluster_body(compose("quickstart", *BLOG))
    w = body["spec"]["workerGroupSpecs"][0]
    res = w["template"]["spec"]["containers"][0]["resources"]
    assert w["replicas"] == 1 and res["requests"]["cpu"] == "2" and res["limits"]["memory"] == "8G"
    four = kuberay.raycluster_body(compose("quickstart", *FOUR_GPU))
    assert four["spec"]["workerGroupSpecs"][0]["replicas"] == 4
    assert four["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_rayjob_body_is_strict_valid_with_kueue_suspend(compose):
    from llmops.clusters import kuberay

    cfg = compose("quickstart", *FOUR_GPU[:-1], "cluster.mode=rayjob", "cluster.name=gpt2-job",
                  "cluster.job_timeout_s=3600")
    body = kuberay.rayjob_body(cfg, "python -m llmops.clusters.job_entry", {"pip": ["x"]})
    assert kuberay.check_body(body) == []  # no transition rule applies to this body
    spec = body["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["suspend"] is True
    assert spec["ttlSecondsAfterFinished"] == 300 and spec["activeDeadlineSeconds"] == 3600
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"pip": ["x"]}
    # pods of a RayJob cluster do not restart
    assert spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_unknown_fields_and_wrong_types_are_errors(compose):
    from llmops.clusters import kuberay
    from llmops.k8s import validate

    body = kuberay.raycluster_body(compose("quickstart", *BLOG))
    body["spec"]["workerGroupSpecs"][0]["replica"] = 2  # typo
    body["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    problems = validate.problems(body)
    assert any("workerGroupSpecs[0]" in p and "'replica'" in p for p in problems)
    assert any("imagePullPolicy" in p for p in problems)
    body["metadata"]["name"] = "9" + "a" * 60
    assert any("metadata.name" in p and "at most 53" in p for p in validate.problems(body))
    with pytest.raises(Exception, match="3 problems in the RayCluster body"):
        kuberay.check_body(body)


def test_derived_names_are_bounded_dns1035_and_deterministic(compose):
    from llmops.clusters import kuberay
    from llmops.core.names import dns1035_problem

    long_id = "2024-My_Recipe.with.a.very.long.name-and-more-words-" + "x" * 40
    cfg = compose("quickstart", "cluster=codeflare", f"cluster.image={IMAGE}", f"run_id={long_id}")
    a, b = kuberay.cluster_name(cfg), kuberay.cluster_name(cfg)
    assert a == b and len(a) <= 53 and dns1035_problem(a, 53) is None
    j = kuberay.rayjob_name(cfg)
    assert len(j) <= 47 and dns1035_problem(j, 47) is None
    other = compose("quickstart", "cluster=codeflare", f"cluster.image={IMAGE}", f"run_id={long_id}y")
    assert kuberay.cluster_name(other) != a  # same prefix, different hash suffix


@pytest.mark.parametrize("image,ok", [
    (IMAGE, True), ("rayproject/ray:2.58.0-py311-gpu", True), ("ray:2.58", True),
    ("rayproject/ray:2.52.1-py311-cu121", False), ("quay.io/modh/ray:latest", False),
    ("quay.io/modh/ray@sha256:" + "a" * 64, False), ("quay.io/modh/ray", False),
    ("registry:5000/ray:2.9.0", False),
])
def test_image_must_be_a_ray_258_tag(image, ok):
    from llmops.clusters.kuberay import image_problem

    assert (image_problem(image) is None) is ok


def test_config_errors_name_the_key(compose):
    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=codeflare")
    assert "cluster.image" in str(e.value) and "2.58" in str(e.value)
    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=codeflare", "cluster.image=rayproject/ray:2.41.0",
                "cluster.name=Bad_Name", "cluster.namespace=No", "cluster.cpus_per_worker=4",
                "cluster.worker_cpus=2")
    msg = str(e.value)
    for key in ("cluster.image", "cluster.name", "cluster.namespace", "cluster.cpus_per_worker"):
        assert key in msg
    assert "Ray 2.41" in msg
    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=codeflare", f"cluster.image={IMAGE}", "cluster.mode=rayjob",
                "cluster.name=" + "a" * 50)
    assert "at most 47" in str(e.value)
    with pytest.raises(ConfigError) as e:
        compose("quickstart", "cluster=codeflare", f"cluster.image={IMAGE}", "cluster.mode=rayjob",
                "cluster.pass_secrets=true")
    assert "cluster.pass_secrets" in str(e.value)


def test_plan_writes_the_body_without_any_api_call(compose, tmp_path, monkeypatch, capsys):
    """`llmops plan ... cluster=codeflare --out DIR`: no kubeconfig, no network, valid files."""
    from llmops.clusters import get_backend
    from llmops.pipeline.engine import RunContext
    from llmops.k8s.manifests import write_objects

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    import kubernetes.client

    def refuse(*a, **k):
        raise AssertionError("plan made an API call")

    monkeypatch.setattr(kubernetes.client.ApiClient, "call_api", refuse)
    cfg = compose("quickstart", *BLOG)
    ctx = RunContext(run_dir=tmp_path / "r", run_id="golden", recipe="quickstart", dry_run=True)
    plan = get_backend(cfg).plan(cfg, ctx)
    assert plan["name"] == "gpt2-blog" and plan["deletes_after_run"] is True
    paths = write_objects(plan["objects"], tmp_path / "out")
    assert [p.name for p in paths] == ["00-raycluster-gpt2-blog.yaml"]
    from llmops.k8s import validate

    assert validate.problems(yaml.safe_load(paths[0].read_text())) == []
    assert not (tmp_path / "r").exists()  # nothing written by the plan itself

    job = compose("quickstart", *BLOG, "cluster.mode=rayjob")
    jplan = get_backend(job).plan(job, ctx)
    assert jplan["objects"][0]["kind"] == "RayJob"


# ----------------------------------------------------------------------- CEL rules of the CRD
def test_a_broken_crd_rule_stops_the_plan_with_its_message(compose, tmp_path):
    """spec.managedBy has a CEL rule (x-kubernetes-validations) a JSON schema cannot express."""
    from llmops.clusters import get_backend
    from llmops.core.errors import LLMOpsError
    from llmops.pipeline.engine import RunContext

    ctx = RunContext(run_dir=tmp_path / "r", run_id="golden", recipe="quickstart", dry_run=True)
    cfg = compose("quickstart", *BLOG, "cluster.mode=rayjob", "cluster.managed_by=team-a/dispatcher")
    with pytest.raises(LLMOpsError) as e:
        get_backend(cfg).plan(cfg, ctx)
    assert ("RayJob/gpt2-blog: spec.managedBy: the managedBy field value must be either "
            "'ray.io/kuberay-operator' or 'kueue.x-k8s.io/multikueue'") in str(e.value)

    ok = compose("quickstart", *BLOG, "cluster.mode=rayjob", "cluster.managed_by=kueue.x-k8s.io/multikueue")
    plan = get_backend(ok).plan(ok, ctx)
    assert plan["objects"][-1]["spec"]["managedBy"] == "kueue.x-k8s.io/multikueue"
    # the immutability rule on the same field is a transition rule: skipped, and said so
    assert any("spec.managedBy" in n and "oldSelf" in n for n in plan["not_checked"])


# ------------------------------------------------------------------ secret envs: by reference
SECRET_ENVS = ["+cluster.envs.AWS_SECRET_ACCESS_KEY=${oc.env:AWS_SECRET_ACCESS_KEY}",
               "+cluster.envs.AWS_ACCESS_KEY_ID=${oc.env:AWS_ACCESS_KEY_ID}",
               "+cluster.envs.HF_HUB=${oc.env:HUB_ACCESS_TOKEN}",
               "+cluster.envs.AWS_S3_ENDPOINT=http://minio.minio.svc:9000"]


def test_plan_carries_secret_refs_not_values(compose, tmp_path, monkeypatch):
    from llmops.clusters import get_backend
    from llmops.pipeline.engine import RunContext

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plan-secret-value-5678")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANVALUE")
    monkeypatch.setenv("HUB_ACCESS_TOKEN", "hub-token-value-1234")
    ctx = RunContext(run_dir=tmp_path / "r", run_id="golden", recipe="quickstart", dry_run=True)
    for mode, kind in (("raycluster", "RayCluster"), ("rayjob", "RayJob")):
        cfg = compose("quickstart", *BLOG, f"cluster.mode={mode}", *SECRET_ENVS)
        plan = get_backend(cfg).plan(cfg, ctx)
        text = yaml.safe_dump(plan)
        for value in ("plan-secret-value-5678", "AKIAPLANVALUE", "hub-token-value-1234"):
            assert value not in text
        secret, body = plan["objects"]
        assert secret["kind"] == "Secret" and body["kind"] == kind
        assert secret["metadata"]["name"] == "gpt2-blog-env"
        assert secret["stringData"] == {"AWS_SECRET_ACCESS_KEY": "${env:AWS_SECRET_ACCESS_KEY}",
                                        "AWS_ACCESS_KEY_ID": "${env:AWS_ACCESS_KEY_ID}",
                                        "HF_HUB": "${env:HUB_ACCESS_TOKEN}"}
        spec = body["spec"] if kind == "RayCluster" else body["spec"]["rayClusterSpec"]
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
                "secretKeyRef": {"name": "gpt2-blog-env", "key": "AWS_SECRET_ACCESS_KEY"}}
            assert env["HF_HUB"]["valueFrom"]["secretKeyRef"]["key"] == "HF_HUB"
            assert env["AWS_S3_ENDPOINT"] == {"name": "AWS_S3_ENDPOINT",
                                              "value": "http://minio.minio.svc:9000"}


def test_a_literal_secret_env_is_a_config_error(compose):
    with pytest.raises(ConfigError) as e:
        compose("quickstart", *BLOG, "+cluster.envs.HF_TOKEN=hf_literal_value_123")
    msg = str(e.value)
    assert "cluster.envs.HF_TOKEN" in msg and "${oc.env:HF_TOKEN}" in msg and "cluster.env_secret" in msg
    assert "hf_literal_value_123" not in msg


def test_existing_env_secret_is_referenced(compose, tmp_path):
    from llmops.clusters import get_backend
    from llmops.pipeline.engine import RunContext

    ctx = RunContext(run_dir=tmp_path / "r", run_id="golden", recipe="quickstart", dry_run=True)
    cfg = compose("quickstart", *BLOG, "cluster.env_secret=team-s3",
                  "+cluster.envs.HF_TOKEN=in-the-secret")
    plan = get_backend(cfg).plan(cfg, ctx)
    assert [o["kind"] for o in plan["objects"]] == ["RayCluster"]  # llmops makes no Secret
    env = plan["objects"][0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "team-s3", "key": "HF_TOKEN"}}} in env
