"""Render: config -> Kubernetes objects (dicts) through the Jinja2 templates in templates/serving/.

Every `{{ value }}` in a template is escaped for YAML by the environment itself (``finalize``):
a value becomes a JSON scalar or flow collection, which YAML reads back as exactly that value, so a
newline, a colon, a quote or a ``{{`` inside a value stays data. Templates use StrictUndefined.
KServe's own ``{{.Name}}`` placeholder is written literally with ``{% raw %}``.
Pure: no file is written and nothing is contacted.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any, Optional
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from llmops.core.errors import LLMOpsError
from llmops.core.names import ISVC_NAME_MAX, k8s_name, label_value
from llmops.k8s.secret_env import PLACEHOLDER, split_env
from llmops.serving import LAYOUT, MODEL_FORMATS, PROTOCOLS, RUNTIME_KINDS

LABEL_RUN_ID = "llmops.io/run-id"
LABEL_RECIPE = "llmops.io/recipe"
MANAGED_BY = ("app.kubernetes.io/managed-by", "llmops")
# placeholders in the rendered Secret; kube.py fills them from the environment at apply time
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")



# ------------------------------------------------------------------------------------ escaping
def _ascii_json(value: Any) -> str:
    """JSON text that YAML reads back unchanged: non-ASCII as \\u / \\U escapes (YAML has no
    surrogate pairs, so characters beyond the BMP get \\U + 8 hex digits)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=False)
    out = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7F:
            out.append(ch)
        elif o <= 0xFFFF:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    return "".join(out)


def to_yaml(value: Any) -> str:
    if hasattr(value, "value") and not isinstance(value, (str, bytes)):  # enums
        value = value.value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return _ascii_json(value)


@lru_cache(maxsize=1)
def environment():
    import jinja2
    from markupsafe import Markup

    from llmops.core.resources import templates_dir

    def finalize(value: Any):
        # macro output (already rendered template text) passes; every value is escaped for YAML
        if isinstance(value, Markup):
            return value
        return Markup(to_yaml(value))

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        finalize=finalize,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


# --------------------------------------------------------------------------------------- names
def _enum(v: Any) -> str:
    return str(getattr(v, "value", v))


def isvc_name(cfg: DictConfig, run_id: str) -> str:
    """The InferenceService name: serving.name, or derived from the run id (DNS-1035, short)."""
    if cfg.serving.name:
        return str(cfg.serving.name)
    return derived_isvc_name(run_id)


def derived_isvc_name(run_id: str) -> str:
    return k8s_name(str(run_id), ISVC_NAME_MAX, dns1035=True)


def names(cfg: DictConfig, run_id: str) -> dict:
    s = cfg.serving
    isvc = isvc_name(cfg, run_id)
    kind = _enum(s.kind)
    return {
        "isvc": isvc,
        "runtime": str(s.runtime_name) if s.runtime_name else f"{isvc}-{kind.replace('_', '-')}",
        "secret": str(s.secret_name) if s.secret_name else f"{isvc}-s3",
        "service_account": f"{isvc}-sa",
    }


def run_labels(cfg: DictConfig, run_id: str, recipe: str) -> dict:
    labels = {LABEL_RUN_ID: label_value(run_id), LABEL_RECIPE: label_value(recipe),
              MANAGED_BY[0]: MANAGED_BY[1]}
    for k, v in (cfg.serving.labels or {}).items():
        labels.setdefault(str(k), str(v))
    return labels


def run_selector(run_id: str, recipe: str) -> str:
    """The label selector that matches exactly the objects one run applied."""
    return f"{LABEL_RUN_ID}={label_value(run_id)},{LABEL_RECIPE}={label_value(recipe)}"


# -------------------------------------------------------------------------------------- checks
def check(cfg: DictConfig) -> None:
    """What must hold before anything is rendered (the same rules as config validation)."""
    s = cfg.serving
    kind = _enum(s.kind)
    if kind not in RUNTIME_KINDS:
        raise LLMOpsError(f"serving.kind = {kind!r}: expected one of {list(RUNTIME_KINDS)}")
    fmt = str(s.model_format)
    if fmt not in MODEL_FORMATS[kind]:
        raise LLMOpsError(
            f"serving.model_format = {fmt!r}: the {kind} runtime serves {list(MODEL_FORMATS[kind])}; "
            f"a mismatch leaves the InferenceService without a runtime")
    proto = _enum(s.protocol)
    if proto not in PROTOCOLS[kind]:
        raise LLMOpsError(f"serving.protocol = {proto!r}: the {kind} runtime speaks {list(PROTOCOLS[kind])}")
    if kind == "caikit_tgis" and not s.transformer_image:
        raise LLMOpsError("serving.transformer_image: the caikit_tgis runtime needs the Caikit image")


# ------------------------------------------------------------------------------------- context
def _s3_facts(storage: DictConfig) -> dict:
    endpoint = storage.endpoint_url
    region = str(storage.region or "us-east-1")
    if endpoint:
        u = urlparse(str(endpoint))
        host = u.netloc or u.path
        https = u.scheme != "http"
        endpoint_url = str(endpoint) if u.scheme else f"https://{endpoint}"
    else:
        host, https = "s3.amazonaws.com", True
        endpoint_url = f"https://s3.{region}.amazonaws.com"
    return {"endpoint_url": endpoint_url, "host": host, "https": "1" if https else "0",
            "region": region, "verify": "1" if storage.verify else "0", "bucket": str(storage.bucket)}


def _bucket_path(uri: str) -> str:
    """s3://bucket/a/b/ -> a/b/ (the data connection's `path`)."""
    u = urlparse(uri)
    return u.path.lstrip("/")


def context(cfg: DictConfig, run_id: str, recipe: str, uris: dict) -> dict:
    """Everything the templates read. `uris`: {"hf": ..., "caikit": ...} as KServe reads them."""
    check(cfg)
    s = cfg.serving
    kind = _enum(s.kind)
    n = names(cfg, run_id)
    labels = run_labels(cfg, run_id, recipe)
    # serving.env: secret values by secretKeyRef (a Secret <isvc>-env, or serving.env_secret)
    env = split_env(s.env or {}, "serving.env", "serving.env_secret", f"{n['isvc']}-env",
                    s.env_secret or None)
    storage_kind = _enum(cfg.storage.kind)
    binding = _enum(s.storage_binding)
    llmisvc = kind == "llmisvc"
    model_uri = str(s.model_uri) if llmisvc and s.model_uri else str(uris[LAYOUT[kind]])
    protocol = _enum(s.protocol)

    # S3 credentials only when KServe reads the model from this run's S3 store
    s3 = storage_kind == "s3" and (not llmisvc or model_uri.startswith("s3://"))
    use_secret = s3 and not s.existing_secret
    service_account = n["service_account"] if s3 and binding == "service_account" else None
    storage_key = n["secret"] if s3 and binding == "data_connection" else None

    isvc_labels = dict(labels)
    if s.expose_route:
        isvc_labels["networking.kserve.io/visibility"] = "exposed"
    # an LLMInferenceService has no deployment modes: it is always a Deployment behind a route
    isvc_annotations = {} if llmisvc else {"serving.kserve.io/deploymentMode": _enum(s.deployment_mode)}
    if not llmisvc and _enum(s.deployment_mode) == "Serverless":
        isvc_annotations.update({
            "serving.knative.openshift.io/enablePassthrough": "true",
            "sidecar.istio.io/inject": "true",
            "sidecar.istio.io/rewriteAppHTTPProbers": "true",
        })
    if s.token_auth:
        isvc_annotations["security.opendatahub.io/enable-auth"] = "true"

    requests = {"cpu": str(s.cpu_request), "memory": str(s.memory_request)}
    limits = {"cpu": str(s.cpu_limit), "memory": str(s.memory_limit)}
    if s.gpus:
        requests["nvidia.com/gpu"] = str(s.gpus)
        limits["nvidia.com/gpu"] = str(s.gpus)

    ctx = {
        "kind": kind,
        "namespace": str(s.namespace),
        "labels": labels,
        "isvc_name": n["isvc"],
        "isvc_labels": isvc_labels,
        "isvc_annotations": isvc_annotations,
        "runtime_name": n["runtime"],
        "runtime_labels": {**labels, "opendatahub.io/dashboard": "true"},
        "runtime_annotations": {
            "openshift.io/display-name": f"{kind} (llmops {recipe})",
            "opendatahub.io/apiProtocol": "gRPC" if protocol == "grpc" else "REST",
        },
        "image": str(s.image),
        "transformer_image": str(s.transformer_image) if s.transformer_image else None,
        "model_format": str(s.model_format),
        "protocol": protocol,
        "replicas": int(s.replicas),
        "tolerations": OmegaConf.to_container(s.tolerations, resolve=True) if s.tolerations else [],
        "env": env.plain,
        "env_refs": env.refs(),
        "env_secret": env.secret_body(str(s.namespace), labels),
        "args": [str(a) for a in (s.args or [])],
        "requests": requests,
        "limits": limits,
        "service_account": service_account,
        "storage_key": storage_key,
        "storage_path": _bucket_path(model_uri) if storage_key else None,
        "storage_uri": model_uri,
        "secret_name": n["secret"],
        "use_secret": use_secret,
        "create_namespace": bool(s.create_namespace),
    }
    if llmisvc:
        ctx.update(llmisvc_context(s))
    if s3:
        facts = _s3_facts(cfg.storage)
        ctx["s3"] = facts
        ctx["placeholders"] = {k: PLACEHOLDER % k for k in CREDENTIAL_ENV}
        ctx["secret_labels"] = {**labels, "opendatahub.io/dashboard": "true",
                                "opendatahub.io/managed": "true"}
        ctx["secret_annotations"] = {
            "serving.kserve.io/s3-endpoint": facts["host"],
            "serving.kserve.io/s3-usehttps": facts["https"],
            "serving.kserve.io/s3-region": facts["region"],
            "serving.kserve.io/s3-verifyssl": facts["verify"],
            "opendatahub.io/connection-type": "s3",
            "opendatahub.io/connection-type-protocol": "s3",
            "openshift.io/display-name": n["secret"],
        }
    return ctx


def llmisvc_context(s: DictConfig) -> dict:
    """What only the LLMInferenceService template reads: router options and presets."""
    return {
        "scheduler": bool(s.scheduler),
        "gateway": bool(s.gateway),
        "gateway_refs": OmegaConf.to_container(s.gateway_refs, resolve=True) if s.gateway_refs else [],
        "base_refs": [str(r) for r in (s.base_refs or [])],
    }


# -------------------------------------------------------------------------------------- render
def render_template(name: str, ctx: dict) -> dict:
    import jinja2
    import yaml

    try:
        text = environment().get_template(name).render(**ctx)
    except jinja2.UndefinedError as e:
        raise LLMOpsError(f"template {name}: {e} (a value the template needs is missing)") from None
    try:
        obj = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise LLMOpsError(f"template {name} rendered text that is not YAML: {e}") from None
    if not isinstance(obj, dict):
        raise LLMOpsError(f"template {name} rendered {type(obj).__name__}, expected one object")
    return obj


def render(cfg: DictConfig, run_id: str, recipe: str, uris: dict) -> list[dict]:
    """The objects to apply, in apply order: [Namespace], [Secret], [ServiceAccount],
    ServingRuntime, InferenceService (serving=llmisvc: one LLMInferenceService instead)."""
    ctx = context(cfg, run_id, recipe, uris)
    objs = []
    if ctx["create_namespace"]:
        objs.append(render_template("serving/namespace.yaml.j2", ctx))
    if ctx["use_secret"]:
        objs.append(render_template("serving/secret.yaml.j2", ctx))
    if ctx["env_secret"]:
        objs.append(ctx["env_secret"])
    if ctx["service_account"]:
        objs.append(render_template("serving/serviceaccount.yaml.j2", ctx))
    if ctx["kind"] == "llmisvc":
        objs.append(render_template("serving/llminferenceservice.yaml.j2", ctx))
        return objs
    objs.append(render_template(f"serving/runtime-{ctx['kind']}.yaml.j2", ctx))
    objs.append(render_template("serving/inferenceservice.yaml.j2", ctx))
    return objs


def find(objects: list[dict], kind: str) -> Optional[dict]:
    return next((o for o in objects if o.get("kind") == kind), None)
