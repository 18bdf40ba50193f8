"""Secret values for pods, by reference: never a literal in a pod spec, a manifest or a plan.

An environment entry (``cluster.envs.K``, ``serving.env.K``) holds a secret when its key says so
(``llmops.core.secrets.is_secret_key``: ``AWS_SECRET_ACCESS_KEY``, ``HF_TOKEN``, ...) or its value
is ``${oc.env:NAME}`` with a secret-looking NAME (``llmops.core.secrets.is_secret_env_name``). Such an
entry reaches the container as ``valueFrom.secretKeyRef`` (key ``K``) of

- a Secret llmops makes (``<object name>-env``): rendered with ``${env:NAME}`` placeholders, filled
  from the environment in memory by :func:`fill` just before it is applied, applied and deleted
  with the objects that use it; or
- a Secret the user names (``cluster.env_secret`` / ``serving.env_secret``) holding key ``K``:
  llmops only checks it exists, and never reads the entry's value.

A secret entry given as a literal (not from the environment) is a config error: it would sit in
the saved config and in the pod spec.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from llmops.core import secrets
from llmops.core.errors import ConfigError, LLMOpsError

PLACEHOLDER = "${env:%s}"
PLACEHOLDER_RE = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
ENV_REF = re.compile(r"^\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)(?:,[^}]*)?\}$")


@dataclass
class EnvSplit:
    """An env mapping split into literal values and secret entries (entry -> env var name)."""

    plain: dict = field(default_factory=dict)
    secret: dict = field(default_factory=dict)
    secret_name: Optional[str] = None  # the Secret the refs point to
    existing: bool = False             # the user's Secret: llmops neither makes nor deletes it

    def refs(self) -> list[dict]:
        """The container env entries of the secret values."""
        return [{"name": k, "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": k}}}
                for k in self.secret]

    def secret_body(self, namespace: str, labels: dict) -> Optional[dict]:
        """The Secret llmops applies (placeholders only), or None (no secret entries, or the
        user's own Secret)."""
        if not self.secret or self.existing:
            return None
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": self.secret_name, "namespace": namespace, "labels": dict(labels)},
                "stringData": {k: PLACEHOLDER % env for k, env in self.secret.items()}}


def split_env(node: Any, key: str, secret_key: str, default_name: str,
              existing: Optional[str] = None) -> EnvSplit:
    """Split the env mapping `node` (config key `key`). `existing` is the user's Secret (config
    key `secret_key`); otherwise secret entries go to a Secret named `default_name`."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else dict(node or {})
    out = EnvSplit(secret_name=str(existing) if existing else default_name, existing=bool(existing))
    bad = []
    for k, v in raw.items():
        m = ENV_REF.match(v) if isinstance(v, str) else None
        from_env_secret = bool(m) and secrets.is_secret_env_name(m.group(1))
        if not (secrets.is_secret_key(str(k)) or from_env_secret):
            out.plain[str(k)] = str(node[k])  # resolved: ${oc.env:AWS_S3_ENDPOINT} stays literal
        elif existing:
            out.secret[str(k)] = str(k)
        elif m:
            out.secret[str(k)] = m.group(1)
        else:
            secrets.remember(str(v))  # so that no message shows it (a command-line override)
            bad.append(f"{key}.{k}: a secret value cannot be written into a pod spec; give it as "
                       f"${{oc.env:{k}}} (llmops puts it in a Secret at apply time) or name an "
                       f"existing Secret holding key {k} in {secret_key}")
    if bad:
        raise ConfigError(bad)
    return out


def fill(obj: dict, hint: str = "") -> dict:
    """A copy of a Secret with its ${env:NAME} placeholders filled from the environment, in memory
    (the values are remembered for scrubbing from logs and errors)."""
    out = json.loads(json.dumps(obj))
    missing = []
    for k, v in (out.get("stringData") or {}).items():
        m = PLACEHOLDER_RE.match(str(v))
        if m:
            val = os.environ.get(m.group(1))
            if not val:
                missing.append(m.group(1))
                continue
            secrets.remember(val)
            out["stringData"][k] = val
    if missing:
        raise LLMOpsError(f"Secret {obj['metadata']['name']}: {', '.join(missing)} not set in the "
                          f"environment; set {'them' if len(missing) > 1 else 'it'}{hint}")
    return out


def has_placeholders(obj: dict) -> bool:
    return any(PLACEHOLDER_RE.match(str(v)) for v in (obj.get("stringData") or {}).values())
