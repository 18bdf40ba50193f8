"""CRD `x-kubernetes-validations` (CEL) rules evaluated offline, against the shipped CRDs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from llmops.k8s.cel import (
    TRANSITION_REASON,
    CelUnsupportedError,
    cel_problems,
    cel_report,
    crd_schema,
    crd_versions,
    prepare_object,
    rule_sites,
    unsupported_rules,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
LLMISVC = SCHEMAS / "kserve" / "serving.kserve.io_llminferenceservices.yaml"
LLMISVC_CONFIG = SCHEMAS / "kserve" / "serving.kserve.io_llminferenceserviceconfigs.yaml"
RAYJOB = SCHEMAS / "kuberay" / "ray.io_rayjobs.yaml"
RAYCLUSTER = SCHEMAS / "kuberay" / "ray.io_rayclusters.yaml"
TRAINJOB = SCHEMAS / "kubeflow" / "trainer.kubeflow.org_trainjobs.yaml"
CLUSTER_RUNTIME = SCHEMAS / "kubeflow" / "trainer.kubeflow.org_clustertrainingruntimes.yaml"

# rules per CRD version that must be found (all/served-storage version counts as shipped)
EXPECTED_MIN_RULES = {
    ("serving.kserve.io_llminferenceservices.yaml", "v1alpha2"): 80,
    ("serving.kserve.io_llminferenceservices.yaml", "v1alpha1"): 80,
    ("serving.kserve.io_llminferenceserviceconfigs.yaml", "v1alpha2"): 20,
    ("ray.io_rayjobs.yaml", "v1"): 7,
    ("ray.io_rayclusters.yaml", "v1"): 3,
    ("trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"): 10,
    ("trainer.kubeflow.org_trainingruntimes.yaml", "v1alpha1"): 5,
    ("trainer.kubeflow.org_clustertrainingruntimes.yaml", "v1alpha1"): 5,
}


ALL_VERSIONS = [(p, v) for p in sorted(SCHEMAS.glob("*/*.yaml")) for v in crd_versions(p)]


# --------------------------------------------------------------------------- (a) all compile


@pytest.mark.parametrize("path,version", ALL_VERSIONS,
                         ids=[f"{p.name}:{v}" for p, v in ALL_VERSIONS])
def test_every_shipped_rule_compiles(path, version):
    schema = crd_schema(path, version)
    sites = rule_sites(schema)
    want = EXPECTED_MIN_RULES.get((path.name, version))
    if want is not None:
        assert len(sites) >= want, f"{path.name} {version}: only {len(sites)} rules found"
    assert unsupported_rules(schema) == []


def test_rule_count_matches_a_plain_search_of_the_file():
    """rule_sites reaches every rule: none hides under a keyword the walk does not follow."""
    def count(node):
        if isinstance(node, dict):
            return len(node.get("x-kubernetes-validations") or ()) + sum(map(count, node.values()))
        if isinstance(node, list):
            return sum(map(count, node))
        return 0

    for path, version in ALL_VERSIONS:
        schema = crd_schema(path, version)
        assert len(rule_sites(schema)) == count(schema), (path.name, version)
    assert len(rule_sites(crd_schema(LLMISVC))) == 130
    assert len(rule_sites(crd_schema(RAYJOB))) == 9


def test_a_rule_that_does_not_compile_is_reported_not_skipped():
    schema = {"type": "object", "properties": {"a": {
        "type": "string",
        "x-kubernetes-validations": [
            {"rule": "self.noSuchFunction()", "message": "m1"},
            {"rule": "self ==", "message": "m2"},
            {"rule": "self != ''", "message": "not empty"},
        ]}}}
    bad = unsupported_rules(schema)
    assert len(bad) == 2 and all(b.startswith("a: unsupported rule") for b in bad)
    assert "noSuchFunction" in bad[0]
    rep = cel_report({"a": ""}, schema)
    assert len(rep.unsupported) == 2
    assert rep.problems == ["a: not empty"]
    with pytest.raises(CelUnsupportedError, match="noSuchFunction"):
        cel_problems({"a": "x"}, schema)
    # the rules sit on an absent node: nothing applies, nothing to raise
    assert cel_problems({}, schema) == []


# --------------------------------------------------------------------------- (b) valid objects


def llmisvc() -> dict:
    """KServe's CPU sample (docs/samples/llmisvc/opt-125m-cpu)."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": {"name": "opt-125m", "namespace": "demo"},
        "spec": {
            "model": {"uri": "hf://facebook/opt-125m", "name": "facebook/opt-125m"},
            "replicas": 1,
            "router": {"route": {}},
            "template": {"containers": [{
                "name": "main",
                "image": "vllm/vllm-openai-cpu:v0.11.0",
                "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}],
                "resources": {"limits": {"cpu": "1", "memory": "10Gi"},
                              "requests": {"cpu": "100m", "memory": "8Gi"}},
            }]},
        },
    }


def ray_cluster_spec() -> dict:
    return {
        "rayVersion": "2.58.0",
        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
            {"name": "ray-head", "image": "rayproject/ray:2.58.0"}]}}},
        "workerGroupSpecs": [{"groupName": "w", "replicas": 1, "minReplicas": 1,
                              "maxReplicas": 1, "rayStartParams": {},
                              "template": {"spec": {"containers": [
                                  {"name": "ray-worker", "image": "rayproject/ray:2.58.0"}]}}}],
    }


def rayjob() -> dict:
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "train"},
        "spec": {
            "entrypoint": "python -m llmops.train",
            "managedBy": "ray.io/kuberay-operator",
            "deletionStrategy": {"onSuccess": {"policy": "DeleteCluster"},
                                 "onFailure": {"policy": "DeleteNone"}},
            "rayClusterSpec": ray_cluster_spec(),
        },
    }


def raycluster() -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc"},
            "spec": {**ray_cluster_spec(), "managedBy": "ray.io/kuberay-operator"}}


def trainjob() -> dict:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "fine-tune", "labels": {"team": "a"}},
            "spec": {"runtimeRef": {"name": "torch-distributed"},
                     "initializer": {"model": {"storageUri": "hf://facebook/opt-125m"}}}}


def cluster_runtime() -> dict:
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
            "metadata": {"name": "torch-distributed"},
            "spec": {"mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
                     "template": {"spec": {"replicatedJobs": [{"name": "node", "template": {
                         "spec": {"template": {"spec": {"containers": [
                             {"name": "node", "image": "pytorch/pytorch"}]}}}}}]}}}}


@pytest.mark.parametrize("crd,make", [
    (LLMISVC, llmisvc), (RAYJOB, rayjob), (RAYCLUSTER, raycluster), (TRAINJOB, trainjob),
    (CLUSTER_RUNTIME, cluster_runtime)], ids=["llmisvc", "rayjob", "raycluster", "trainjob",
                                              "clustertrainingruntime"])
def test_valid_objects_pass(crd, make):
    obj = make()
    before = copy.deepcopy(obj)
    rep = cel_report(obj, crd_schema(crd))
    assert rep.problems == [] and rep.unsupported == []
    assert obj == before, "the caller's object is not changed"
    assert cel_problems(obj, crd_schema(crd)) == []


def test_valid_objects_do_evaluate_rules():
    """The passes above are not vacuous: rules on the present nodes were run."""
    assert cel_report(llmisvc(), crd_schema(LLMISVC)).evaluated >= 1   # spec
    assert cel_report(rayjob(), crd_schema(RAYJOB)).evaluated == 3       # strategy x2, managedBy
    # root name rules x2, storageUri, and managedBy (filled in by its schema default)
    assert cel_report(trainjob(), crd_schema(TRAINJOB)).evaluated == 4


# --------------------------------------------------------------------------- (c) broken objects


def test_llmisvc_replicas_and_scaling_are_exclusive():
    obj = llmisvc()
    obj["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2,
                              "keda": {"triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}}
    assert cel_problems(obj, crd_schema(LLMISVC)) == [
        "spec: replicas and scaling are mutually exclusive; use scaling for autoscaled "
        "deployments or replicas for static deployments"]
    del obj["spec"]["replicas"]
    assert cel_problems(obj, crd_schema(LLMISVC)) == []


def test_llmisvc_min_replicas_above_max():
    obj = llmisvc()
    del obj["spec"]["replicas"]
    obj["spec"]["scaling"] = {"minReplicas": 3, "maxReplicas": 2,
                              "keda": {"triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}}
    assert cel_problems(obj, crd_schema(LLMISVC)) == [
        "spec.scaling: minReplicas cannot exceed maxReplicas"]


def test_llmisvc_route_rules_see_schema_defaults():
    """A Gateway API backendRef defaults group "" and kind Service: the rule reads them (an
    undefaulted object would give a 'no such key' evaluation error instead)."""
    obj = llmisvc()
    obj["spec"]["router"]["route"] = {"http": {"spec": {"rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
         "backendRefs": [{"name": "svc"}]}]}}}
    schema = crd_schema(LLMISVC)
    assert cel_problems(obj, schema) == [
        "spec.router.route.http.spec.rules[0].backendRefs[0]: Must have port for Service reference"]
    obj["spec"]["router"]["route"]["http"]["spec"]["rules"][0]["backendRefs"][0]["port"] = 8000
    assert cel_problems(obj, schema) == []
    obj["spec"]["router"]["route"]["http"]["spec"]["rules"][0]["matches"][0]["path"]["value"] = "v1"
    assert cel_problems(obj, schema) == [
        "spec.router.route.http.spec.rules[0].matches[0].path: value must be an absolute path "
        "and start with '/' when type one of ['Exact', 'PathPrefix']"]


def test_rayjob_deletion_strategy_needs_both_policies():
    obj = rayjob()
    del obj["spec"]["deletionStrategy"]["onFailure"]
    assert cel_problems(obj, crd_schema(RAYJOB)) == [
        "spec.deletionStrategy: deletionStrategy requires either BOTH onSuccess and onFailure, "
        "OR the deletionRules field (cannot be empty)"]


def test_rayjob_deletion_condition_exclusive_fields():
    obj = rayjob()
    obj["spec"]["deletionStrategy"] = {"deletionRules": [
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED"}},
        {"policy": "DeleteSelf",
         "condition": {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed"}}]}
    assert cel_problems(obj, crd_schema(RAYJOB)) == [
        "spec.deletionStrategy.deletionRules[1].condition: JobStatus and JobDeploymentStatus "
        "cannot be used together within the same deletion condition."]


def test_raycluster_managed_by_value():
    obj = raycluster()
    obj["spec"]["managedBy"] = "someone-else"
    assert cel_problems(obj, crd_schema(RAYCLUSTER)) == [
        "spec.managedBy: the managedBy field value must be either 'ray.io/kuberay-operator' "
        "or 'kueue.x-k8s.io/multikueue'"]


def test_trainjob_name_must_be_a_dns_label():
    obj = trainjob()
    obj["metadata"]["name"] = "Fine_Tune"
    assert cel_problems(obj, crd_schema(TRAINJOB)) == [
        "(root): metadata.name must match RFC 1035 DNS label format"]


def test_trainjob_storage_uri_needs_a_scheme():
    obj = trainjob()
    obj["spec"]["initializer"]["model"]["storageUri"] = "facebook/opt-125m"
    assert cel_problems(obj, crd_schema(TRAINJOB)) == [
        "spec.initializer.model.storageUri: storageUri may be empty, or it must be a valid URI "
        "(scheme://...)"]


def test_training_runtime_one_ml_policy_only():
    obj = cluster_runtime()
    obj["spec"]["mlPolicy"]["mpi"] = {"numProcPerNode": 1}
    assert cel_problems(obj, crd_schema(CLUSTER_RUNTIME)) == [
        "spec.mlPolicy: Only one of the policy can be configured"]


# --------------------------------------------------------------------------- (d) oldSelf rules


def test_transition_rules_are_reported_as_skipped():
    sites = rule_sites(crd_schema(RAYCLUSTER))
    assert [(s.schema_path, s.rule) for s in sites if s.transition] == [
        ("spec.gcsFaultToleranceOptions.backend", "self == oldSelf"),
        ("spec.managedBy", "self == oldSelf")]
    assert all(s.skip_reason == TRANSITION_REASON for s in sites if s.transition)
    rep = cel_report(raycluster(), crd_schema(RAYCLUSTER))
    assert rep.skipped == [("spec.managedBy", "self == oldSelf", TRANSITION_REASON)]
    assert rep.evaluated == 1

    rep = cel_report(trainjob(), crd_schema(TRAINJOB))
    assert sorted(p for p, _, _ in rep.skipped) == [
        "spec.initializer", "spec.managedBy", "spec.runtimeRef"]


def test_transition_rule_counts_per_crd():
    counts = {p.name: sum(s.transition for s in rule_sites(crd_schema(p)))
              for p in (LLMISVC, LLMISVC_CONFIG, RAYJOB, RAYCLUSTER, TRAINJOB, CLUSTER_RUNTIME)}
    assert counts == {LLMISVC.name: 0, LLMISVC_CONFIG.name: 0, RAYJOB.name: 3,
                      RAYCLUSTER.name: 2, TRAINJOB.name: 13, CLUSTER_RUNTIME.name: 6}


# --------------------------------------------------------------------------- the CEL environment


def _one(rule: str, prop: dict, value, **extra) -> list[str]:
    schema = {"type": "object", "properties": {"x": {
        **prop, "x-kubernetes-validations": [{"rule": rule, **extra}]}}}
    return cel_problems({"x": value}, schema)


@pytest.mark.parametrize("rule,prop,value", [
    # JSON values get their schema's CEL type
    ("type(self) == double", {"type": "number"}, 1),
    ("type(self) == int", {"type": "integer"}, 3),
    ("type(self) == bool", {"type": "boolean"}, True),
    ("self > timestamp('2024-01-01T00:00:00Z')", {"type": "string", "format": "date-time"},
     "2025-03-01T10:00:00Z"),
    ("self == duration('90s')", {"type": "string", "format": "duration"}, "1m30s"),
    ("self == b'hi'", {"type": "string", "format": "byte"}, "aGk="),
    ("!has(self.b) && has(self.a) && self.a.size() == 0",
     {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}},
                                       "b": {"type": "string"}}}, {"a": []}),
    ("self.d == 'dflt'", {"type": "object", "properties": {"d": {"type": "string",
                                                                 "default": "dflt"}}}, {}),
    ("!has(self.unknown)", {"type": "object", "properties": {"a": {"type": "string"}}},
     {"unknown": 1}),
    ("self.k == 2.0 && type(self.k) == double",
     {"type": "object", "additionalProperties": {"type": "number"}}, {"k": 2}),
    # Kubernetes libraries
    ("self.isSorted() && self.sum() == 6 && self.min() == 1 && self.max() == 3",
     {"type": "array", "items": {"type": "integer"}}, [1, 2, 3]),
    ("self.indexOf(2) == 1 && self.lastIndexOf(2) == 2 && self.indexOf(9) == -1",
     {"type": "array", "items": {"type": "integer"}}, [1, 2, 2]),
    ("![3, 1].isSorted() && [1.5, 2.5].sum() == 4.0", {"type": "string"}, ""),
    ("self.find('[0-9]+') == '123' && self.findAll('[a-z]') == ['a', 'b'] "
     "&& self.findAll('[a-z]', 1) == ['a']", {"type": "string"}, "a123b"),
    ("isURL(self) && url(self).getScheme() == 'https' && url(self).getHost() == 'ex.org:8443'"
     " && url(self).getHostname() == 'ex.org' && url(self).getPort() == '8443'"
     " && url(self).getEscapedPath() == '/a%20b' && url(self).getQuery() == {'q': ['1', '2']}",
     {"type": "string"}, "https://ex.org:8443/a%20b?q=1&q=2"),
    ("!isURL(self) && isURL('/just/a/path')", {"type": "string"}, "no scheme here"),
    ("isQuantity(self) && quantity(self).isLessThan(quantity('1')) "
     "&& quantity(self).add(quantity('500m')) == quantity('1')"
     " && quantity('1Ki').asInteger() == 1024"
     " && quantity(self).sign() == 1 && !quantity(self).isInteger()"
     " && quantity('2G').compareTo(quantity('1Gi')) == 1 && !isQuantity('1.2.3')",
     {"type": "string"}, "500m"),
    ("sets.contains([1, 2, 3], [2]) && sets.equivalent([1, 2], [2, 1]) "
     "&& !sets.intersects([1], [2])", {"type": "string"}, ""),
    # engine extensions the Kubernetes environment has
    ("self.lowerAscii().split('-').join('.') == 'a.b' && self.indexOf('-') == 1"
     " && self.replace('-', '') == 'AB' && self.substring(1) == '-B'", {"type": "string"}, "A-B"),
    ("self.?missing.orValue('none') == 'none' && !self.?missing.hasValue()",
     {"type": "object", "properties": {"missing": {"type": "string"}}}, {}),
])
def test_cel_environment(rule, prop, value):
    assert _one(rule, prop, value) == []


def test_messages():
    assert _one("self > 1", {"type": "integer"}, 0) == ["x: failed rule: self > 1"]
    assert _one("self > 1", {"type": "integer"}, 0, message="too small") == ["x: too small"]
    assert _one("self > 1", {"type": "integer"}, 0, message="m",
                messageExpression="'got ' + string(self)") == ["x: got 0"]
    # a messageExpression that errors falls back to message
    assert _one("self > 1", {"type": "integer"}, 0, message="m",
                messageExpression="string(1/self)") == ["x: m"]
    assert _one("self.a > 1", {"type": "object", "properties": {"a": {"type": "integer"}}},
                {"a": 0}, message="m", fieldPath=".a") == ["x.a: m"]


def test_evaluation_errors_are_problems():
    probs = _one("self.a == 1", {"type": "object", "properties": {"a": {"type": "integer"}}}, {})
    assert len(probs) == 1 and probs[0].startswith("x: rule evaluation error:")
    assert "a" in probs[0]
    probs = _one("[1].min() == 1 && [].min() == 0", {"type": "string"}, "")
    assert len(probs) == 1 and "empty list" in probs[0]


def test_root_sees_only_name_and_generate_name_of_metadata():
    schema = {"type": "object", "properties": {"metadata": {"type": "object"}},
              "x-kubernetes-validations": [
                  {"rule": "!has(self.metadata.labels) && self.metadata.name == 'n'"}]}
    obj = {"apiVersion": "v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}}}
    assert cel_problems(obj, schema) == []
    assert prepare_object(obj, schema) == obj   # apiVersion/kind/metadata survive pruning


def test_crd_schema_versions():
    assert crd_schema(LLMISVC)["properties"]["apiVersion"]["type"] == "string"
    assert len(rule_sites(crd_schema(LLMISVC, "v1alpha1"))) == 127
    from llmops.core.errors import LLMOpsError

    with pytest.raises(LLMOpsError, match="no version 'v9'"):
        crd_schema(LLMISVC, "v9")


def test_optional_old_self_rules_run_on_create_with_no_old_value():
    schema = {"type": "object", "properties": {"x": {
        "type": "integer", "x-kubernetes-validations": [
        {"rule": "!oldSelf.hasValue() || self >= oldSelf.value()", "optionalOldSelf": True,
         "message": "may only grow"},
        {"rule": "oldSelf.hasValue()", "optionalOldSelf": True, "message": "no old value"},
        {"rule": "self == oldSelf", "message": "immutable"},
        {"rule": "string(self) == 'oldSelf'", "message": "a string that mentions oldSelf"},
    ]}}}
    rep = cel_report({"x": 1}, schema)
    assert rep.problems == ["x: no old value", "x: a string that mentions oldSelf"]
    assert rep.skipped == [("x", "self == oldSelf", TRANSITION_REASON)]
    assert rep.evaluated == 3
