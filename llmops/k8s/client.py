"""The one Kubernetes client of llmops: one way to get credentials, one way to call the API.

Credentials (``cluster.auth``, used by the cluster backends and by serving alike):

- ``kubeconfig``: ``$KUBECONFIG`` (read at every connect) or ``~/.kube/config``;
- ``incluster``: the pod's service account;
- ``token``: a bearer token and the API server URL from the environment variables named by
  ``cluster.bearer_env`` and ``cluster.server_env`` (default ``LLMOPS_K8S_TOKEN`` and
  ``LLMOPS_K8S_SERVER``);
- ``auto``: in-cluster inside a pod, else token when both variables are set, else kubeconfig.

:class:`Kube` makes the calls: server-side apply (field manager ``llmops``, ``force=True``,
``fieldValidation=Strict``, ``application/apply-patch+yaml``) of any object by its apiVersion and
kind (``dry_run=True``: ``dryRun=All``, the server validates and answers as if applied, stores
nothing), get (None when absent; cluster-scoped objects too), API discovery, delete, delete by label
selector. Every API failure becomes an
:class:`LLMOpsError` naming the action, the object and the server's message
(:mod:`llmops.k8s.errors`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from llmops.core import secrets
from llmops.core.errors import LLMOpsError
from llmops.k8s.errors import api_error

FIELD_MANAGER = "llmops"
APPLY = {"field_manager": FIELD_MANAGER, "force": True, "field_validation": "Strict",
         "_content_type": "application/apply-patch+yaml"}
AUTH_METHODS = ("auto", "kubeconfig", "incluster", "token")
CORE_KINDS = {"Namespace": "namespace", "Secret": "secret", "ServiceAccount": "service_account",
              "Pod": "pod"}


@dataclass(frozen=True)
class Auth:
    """Which credentials to use; the config keys it came from are named in errors."""

    method: str = "auto"
    bearer_env: str = "LLMOPS_K8S_TOKEN"
    server_env: str = "LLMOPS_K8S_SERVER"

    @classmethod
    def from_config(cls, cfg) -> "Auth":
        """From ``cluster.auth``, ``cluster.bearer_env``, ``cluster.server_env`` (all kinds)."""
        from omegaconf import OmegaConf

        def get(key: str, default: str) -> str:  # a saved config of an older run may lack them
            v = OmegaConf.select(cfg, f"cluster.{key}", default=None)
            return str(v) if v is not None else default

        return cls(get("auth", cls.method), get("bearer_env", cls.bearer_env),
                   get("server_env", cls.server_env))

    def resolved(self) -> str:
        if self.method != "auto":
            return self.method
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return "incluster"
        if os.environ.get(self.bearer_env) and os.environ.get(self.server_env):
            return "token"
        return "kubeconfig"

    def hint(self) -> str:
        """Where these credentials come from, for error messages."""
        method = self.resolved()
        if method == "token":
            return (f" (cluster.auth={self.method}: token in ${self.bearer_env} = cluster.bearer_env, "
                    f"server in ${self.server_env} = cluster.server_env)")
        if method == "incluster":
            return f" (cluster.auth={self.method}: the pod's service account)"
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        return f" (cluster.auth={self.method}: the kubeconfig {where})"


def api_client(auth: Auth):
    """An authenticated kubernetes ``ApiClient`` for `auth` (no request is made)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if auth.method not in AUTH_METHODS:
        raise LLMOpsError(f"cluster.auth = {auth.method!r}: expected one of {', '.join(AUTH_METHODS)}")
    method = auth.resolved()
    conf = client.Configuration()
    try:
        if method == "token":
            token, server = os.environ.get(auth.bearer_env), os.environ.get(auth.server_env)
            if not token or not server:
                raise LLMOpsError(
                    f"cluster.auth = token: set {auth.bearer_env} (a bearer token; "
                    f"cluster.bearer_env) and {auth.server_env} (the API server URL; "
                    "cluster.server_env) in the environment")
            secrets.remember(token)
            conf.host = server
            conf.api_key = {"authorization": token}
            conf.api_key_prefix = {"authorization": "Bearer"}
        elif method == "incluster":
            config.load_incluster_config(client_configuration=conf)
        else:
            # the client reads $KUBECONFIG once, at import; read it now so a changed one counts
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=conf)
    except ConfigException as e:
        if method == "incluster":
            raise LLMOpsError(f"cluster.auth = {auth.method}: no service account here ({e})") from None
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise LLMOpsError(
            f"cluster.auth = {auth.method}: no usable kubeconfig ({where}: {e}). Log in first "
            f"(`oc login ...` or `kubectl config use-context ...`), or set cluster.auth=token "
            f"with {auth.bearer_env} and {auth.server_env} in the environment") from None
    return client.ApiClient(conf)


def connect(cfg) -> "Kube":
    """A :class:`Kube` with the credentials the config names (``cluster.auth``)."""
    auth = Auth.from_config(cfg)
    return Kube(api_client(auth), auth)


def group_version(api_version: str) -> tuple[str, str]:
    """(group, version) of an apiVersion; the core group is ""."""
    group, _, version = api_version.rpartition("/")
    return group, version


def plural(kind: str) -> str:
    """The resource name of a kind (every kind llmops applies pluralizes with an 's')."""
    return kind.lower() + "s"


class Kube:
    """CoreV1Api + CustomObjectsApi over one ApiClient, with errors a user can act on. `core` and
    `custom` may be given (test fakes of the kubernetes API classes)."""

    def __init__(self, api_client_=None, auth: Optional[Auth] = None, *, core=None, custom=None):
        from kubernetes import client

        self.api_client = api_client_ or client.ApiClient()
        self.auth = auth or Auth()
        self.core = core or client.CoreV1Api(self.api_client)
        self.custom = custom or client.CustomObjectsApi(self.api_client)
        self.server = self.api_client.configuration.host or "the Kubernetes API server"

    # -- errors
    def error(self, action: str, e: BaseException) -> LLMOpsError:
        return api_error(action, e, server=self.server, auth_hint=self.auth.hint())

    def call(self, action: str, fn: Callable, *args, missing_ok: bool = False, **kw) -> Any:
        """`fn(*args, **kw)`; an API failure raises :meth:`error`. With `missing_ok`, a 404
        returns None."""
        from kubernetes.client.exceptions import ApiException

        try:
            out = fn(*args, **kw)
        except (KeyboardInterrupt, LLMOpsError):
            raise
        except ApiException as e:
            if missing_ok and e.status == 404:
                return None
            raise self.error(action, e) from None
        except Exception as e:  # urllib3 connection errors, timeouts, TLS
            raise self.error(action, e) from None
        return out if isinstance(out, (dict, type(None))) else self.api_client.sanitize_for_serialization(out)

    def auth_header(self) -> dict:
        """The Authorization header of these credentials (for the Ray dashboard), if any."""
        value = self.api_client.configuration.get_api_key_with_prefix("authorization")
        if value:
            secrets.remember(value.split(" ", 1)[-1])
            return {"Authorization": value}
        return {}

    # -- one method per verb, for any kind llmops handles
    def _core(self, verb: str, kind: str, namespaced: bool = True) -> Callable:
        name = CORE_KINDS[kind]
        return getattr(self.core, f"{verb}_{name}" if kind == "Namespace" or not namespaced
                       else f"{verb}_namespaced_{name}")

    def get(self, api_version: str, kind: str, namespace: Optional[str], name: str) -> Optional[dict]:
        """The object as the server has it, or None when there is none."""
        action = f"read {kind}/{name}" + (f" in {namespace}" if namespace else "")
        if kind in CORE_KINDS:
            args = (name,) if kind == "Namespace" else (name, namespace)
            return self.call(action, self._core("read", kind), *args, missing_ok=True)
        g, v = group_version(api_version)
        if namespace is None:  # cluster-scoped: ClusterServingRuntime, CustomResourceDefinition
            return self.call(action, self.custom.get_cluster_custom_object, group=g, version=v,
                             plural=plural(kind), name=name, missing_ok=True)
        return self.call(action, self.custom.get_namespaced_custom_object, group=g, version=v,
                         namespace=namespace, plural=plural(kind), name=name, missing_ok=True)

    def resources(self, api_version: str) -> Optional[list[str]]:
        """The resource names the server serves at `api_version` (discovery, ``GET
        /apis/GROUP/VERSION``), or None when it serves no such group/version."""
        g, v = group_version(api_version)
        out = self.call(f"discover {api_version}", self.custom.get_api_resources, g, v, missing_ok=True)
        return None if out is None else [str(r.get("name")) for r in out.get("resources") or []]

    def version(self) -> dict:
        """The server's version (``GET /version``): the first call, to see that it answers."""
        from kubernetes import client

        return self.call("reach the API server", client.VersionApi(self.api_client).get_code)

    def apply(self, obj: dict, timeout_s: Optional[float] = None, *, dry_run: bool = False) -> dict:
        """Server-side apply of one object (strict field validation). `dry_run`: ``dryRun=All``,
        the server runs every stage of the apply (admission, validation) and stores nothing."""
        kind, meta = obj["kind"], obj["metadata"]
        name, ns = meta["name"], meta.get("namespace")
        action = f"{'dry-run ' if dry_run else ''}apply {kind}/{name} in {ns or 'cluster'}"
        kw = dict(APPLY, **({"_request_timeout": timeout_s} if timeout_s else {}),
                  **({"dry_run": "All"} if dry_run else {}))
        if kind in CORE_KINDS:
            args = (name, obj) if kind == "Namespace" else (name, ns, obj)
            return self.call(action, self._core("patch", kind), *args, **kw)
        g, v = group_version(obj["apiVersion"])
        return self.call(action, self.custom.patch_namespaced_custom_object, g, v, ns,
                         plural(kind), name, obj, **kw)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object (foreground: its dependents first); False when it was not there."""
        action = f"delete {kind}/{name} in {namespace}"
        if kind in CORE_KINDS:
            fn, args = self._core("delete", kind), (name, namespace)
        else:
            g, v = group_version(api_version)
            fn, args = self.custom.delete_namespaced_custom_object, (g, v, namespace, plural(kind), name)
        return self.call(action, fn, *args, propagation_policy="Foreground", missing_ok=True) is not None

    def delete_collection(self, api_version: str, kind: str, namespace: str, selector: str) -> bool:
        """Delete every `kind` object labelled `selector`; False when the kind is not served."""
        action = f"delete {kind} objects with {selector} in {namespace}"
        if kind in CORE_KINDS:
            out = self.call(action, self._core("delete_collection", kind), namespace,
                            label_selector=selector, missing_ok=True)
        else:
            g, v = group_version(api_version)
            out = self.call(action, self.custom.delete_collection_namespaced_custom_object, g, v,
                            namespace, plural(kind), label_selector=selector, missing_ok=True)
        return out is not None

    # -- checks before anything is applied
    def check_namespace(self, namespace: str, key: str) -> None:
        """The namespace exists (a 403 on reading it passes: the apply will tell)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespace(namespace)
        except ApiException as e:
            if e.status == 404:
                raise LLMOpsError(f"{key} = {namespace!r}: no such namespace on {self.server}; "
                                  "create it or pick another") from None
            if e.status == 403:
                return
            raise self.error(f"read Namespace/{namespace}", e) from None
        except (KeyboardInterrupt, LLMOpsError):
            raise
        except Exception as e:
            raise self.error(f"read Namespace/{namespace}", e) from None
