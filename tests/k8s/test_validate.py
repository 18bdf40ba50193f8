"""k8s.validate: one CRD registry (KServe, KubeRay, Kubeflow Trainer, at the apiVersion's own
version), one closing rule, and the CRD's CEL rules after the schema check."""

from __future__ import annotations

import pytest

from llmops.core.errors import LLMOpsError
from llmops.k8s import validate


@pytest.fixture(autouse=True)
def _schema_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLMOPS_SCHEMA_CACHE", str(tmp_path_factory.getbasetemp() / "crd-cache"))


def _obj(api, kind, spec, name="demo"):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "team-a"},
            "spec": spec}


@pytest.mark.parametrize("api,kind", [
    ("serving.kserve.io/v1alpha2", "LLMInferenceService"),
    ("serving.kserve.io/v1alpha1", "LLMInferenceService"),
    ("serving.kserve.io/v1alpha2", "LLMInferenceServiceConfig"),
    ("ray.io/v1", "RayJob"),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"),
])
def test_every_shipped_crd_is_known_and_closed(api, kind):
    probs = validate.problems(_obj(api, kind, {"notAField": 1}))
    assert any("spec: Additional properties are not allowed ('notAField' was unexpected)" in p
               for p in probs), probs
    assert not any("no schema" in p for p in probs)


def test_an_unknown_version_has_no_schema():
    assert validate.problems(_obj("serving.kserve.io/v9", "LLMInferenceService", {})) == [
        "LLMInferenceService/demo: no schema for apiVersion 'serving.kserve.io/v9' kind "
        "'LLMInferenceService'"]


def test_cel_rule_failure_is_a_problem_with_the_rule_message():
    job = _obj("trainer.kubeflow.org/v1alpha1", "TrainJob",
               {"runtimeRef": {"name": "torch-distributed"}, "managedBy": "someone-else"})
    with pytest.raises(LLMOpsError) as e:
        validate.validate_objects([job])
    assert ("TrainJob/demo: spec.managedBy: ManagedBy must be trainer.kubeflow.org/trainjob-"
            "controller or kueue.x-k8s.io/multikueue if set") in str(e.value)
    job["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    notes = validate.validate_objects([job])
    # the immutability rules (oldSelf) only apply to updates: not evaluated, and said so
    assert any("spec.managedBy" in n and "self == oldSelf" in n and "update" in n for n in notes)


def test_cel_false_checks_the_schema_only_and_says_the_rules_were_skipped():
    job = _obj("trainer.kubeflow.org/v1alpha1", "TrainJob",
               {"runtimeRef": {"name": "torch-distributed"}, "managedBy": "someone-else"})
    notes = validate.validate_objects([job], cel=False)  # the CEL rule it breaks is not run
    assert notes == ["TrainJob/demo: CRD rules (CEL) not checked: validation asked without them"]
    job["spec"]["managedBy"] = 7  # the schema is still checked
    with pytest.raises(LLMOpsError, match=r"TrainJob/demo: spec.managedBy: 7 is not of type 'string'"):
        validate.validate_objects([job], cel=False)
    with pytest.raises(LLMOpsError, match="ManagedBy must be"):
        validate.validate_objects([dict(job, spec={**job["spec"], "managedBy": "someone-else"})])


def test_schema_problems_come_before_cel():
    """An object that does not decode is not handed to CEL (the API server would not either)."""
    job = _obj("trainer.kubeflow.org/v1alpha1", "TrainJob",
               {"runtimeRef": {"name": "t"}, "managedBy": 7})
    probs = validate.problems(job)
    assert probs and all("is not of type 'string'" in p for p in probs)


def test_int_or_string_fields_accept_both():
    """x-kubernetes-int-or-string is integer or string; objects listing properties are closed."""
    from llmops.k8s.validate import closed

    s = closed({"type": "object", "properties": {"p": {"x-kubernetes-int-or-string": True}}})
    assert s["additionalProperties"] is False
    assert s["properties"]["p"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
