"""Checks of the `serving` and `smoke_test` config sections: names, runtime facts, storage binding."""

from __future__ import annotations

from llmops.config.validate import Checker
from llmops.core.names import ISVC_NAME_MAX, SERVING_NAME_MAX, dns1035_problem, dns1123_problem, k8s_name
from llmops.serving import MODEL_FORMATS, PROTOCOLS


def check(c: Checker) -> None:
    c.positive_ints("serving.replicas", "smoke_test.max_new_tokens")
    c.nonnegative_ints("serving.gpus", "smoke_test.retries", "serving.ready_timeout_s")
    if c.get("smoke_test.target") not in ("local", "endpoint"):
        c.add("smoke_test.target", "'local' or 'endpoint'")
    if c.get("smoke_test.target") == "endpoint" and not c.get("serving.apply"):
        c.add("smoke_test.target", "'local' unless serving.apply=true (there is no endpoint to call)")
    serving_kind = str(c.value("serving.kind"))
    if serving_kind != "none":
        for key in ("serving.namespace", "serving.runtime_name", "serving.secret_name"):
            v = c.get(key)
            if v is not None:
                p = dns1123_problem(v)
                if p:
                    c.add(key, p)
        if c.get("serving.name") is not None:
            # KServe derives "<name>-predictor" (and more) from it: DNS-1035, room for suffixes
            p = dns1035_problem(c.get("serving.name"), SERVING_NAME_MAX)
            if p:
                c.add("serving.name", p)
        else:
            try:
                k8s_name(str(c.get("run_id")), ISVC_NAME_MAX)
            except ValueError as e:
                c.add("run_id", str(e))
        storage_kind = str(getattr(c.get("storage.kind"), "value", c.get("storage.kind")))
        own_uri = serving_kind == "llmisvc" and c.get("serving.model_uri")
        if c.get("serving.apply") and storage_kind == "local" and not own_uri:
            c.add("serving.apply", "storage=s3 or storage=pvc: KServe cannot read a model on local disk")
        fmt = c.get("serving.model_format")
        if serving_kind in MODEL_FORMATS and fmt not in MODEL_FORMATS[serving_kind]:
            c.add("serving.model_format",
                  f"a model format the {serving_kind} runtime serves: {list(MODEL_FORMATS[serving_kind])}")
        proto = str(getattr(c.get("serving.protocol"), "value", c.get("serving.protocol")))
        if serving_kind in PROTOCOLS and proto not in PROTOCOLS[serving_kind]:
            c.add("serving.protocol", f"a protocol the {serving_kind} runtime speaks: "
                  f"{list(PROTOCOLS[serving_kind])}")
        if serving_kind == "caikit_tgis" and not c.get("serving.transformer_image"):
            c.add("serving.transformer_image", "the Caikit image (caikit_tgis has two containers)")
        binding = str(getattr(c.get("serving.storage_binding"), "value", c.get("serving.storage_binding")))
        if binding == "data_connection" and storage_kind != "s3":
            c.add("serving.storage_binding", "'service_account' unless storage=s3 (a data connection "
                  "is an S3 Secret)")
        if c.get("serving.existing_secret") and not c.get("serving.secret_name"):
            c.add("serving.existing_secret", "serving.secret_name set to the existing Secret's name")
        c.check("serving.poll_interval_s", lambda v: v > 0, "a number of seconds > 0")
        check_llmisvc(c, serving_kind)


LLMISVC_ONLY = ("serving.model_uri", "serving.scheduler", "serving.gateway", "serving.gateway_refs",
                "serving.base_refs")
MODEL_URI_SCHEMES = ("s3://", "pvc://", "oci://", "hf://")


def check_llmisvc(c: Checker, serving_kind: str) -> None:
    """What an LLMInferenceService needs, and the keys only it reads."""
    if serving_kind != "llmisvc":
        for key in LLMISVC_ONLY:
            if c.get(key):
                c.add(key, f"unset unless serving=llmisvc (the {serving_kind} runtime does not read it)")
        return
    uri = c.get("serving.model_uri")
    if uri is not None and not str(uri).startswith(MODEL_URI_SCHEMES):
        c.add("serving.model_uri", f"a URI KServe can pull a model from: {', '.join(MODEL_URI_SCHEMES)}...")
    if c.value("serving.deployment_mode") != "RawDeployment":
        c.add("serving.deployment_mode", "RawDeployment: an LLMInferenceService has no Serverless mode")
    if c.value("serving.storage_binding") != "service_account":
        c.add("serving.storage_binding", "'service_account' (an LLMInferenceService reads S3 credentials "
              "through its pod's ServiceAccount)")
    if c.get("serving.expose_route"):
        c.add("serving.expose_route", "false: an LLMInferenceService is reached through its router "
              "(serving.gateway or serving.gateway_refs)")
    for i, ref in enumerate(c.get("serving.gateway_refs") or []):
        ref = dict(ref)
        bad = set(ref) - {"name", "namespace"} or not ref.get("name")
        p = None if bad else next(filter(None, (dns1123_problem(str(v)) for v in ref.values())), None)
        if bad or p:
            c.add("serving.gateway_refs", f"entry {i}: {p or 'expected {name: GATEWAY, namespace: NS}'}")
    for i, ref in enumerate(c.get("serving.base_refs") or []):
        p = dns1123_problem(str(ref))
        if p:
            c.add("serving.base_refs", f"entry {i}: {p}")
