"""Kubernetes API failures as errors a user can act on: what llmops was doing, on which object, and
the API server's own words (its Status ``message``), plus what to do for 401, 403 and an
unreachable server. Every message is scrubbed of remembered secret values."""

from __future__ import annotations

import json
from llmops.core import secrets
from llmops.core.errors import LLMOpsError


def server_message(e: BaseException) -> str:
    """The API server's own words from an ApiException (its Status `message`), else its body."""
    body = getattr(e, "body", None)
    if body:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (ValueError, TypeError):
            pass
        return str(body)[:500]
    return str(getattr(e, "reason", None) or e)[:500]


def api_error(action: str, e: BaseException, *, server: str = "the API server",
              auth_hint: str = "") -> LLMOpsError:
    """`e` (an ApiException, or a connection error from urllib3) while doing `action`, as an
    LLMOpsError. `auth_hint` says which config keys chose the credentials (for 401)."""
    status = getattr(e, "status", None)
    if not status:  # no HTTP answer at all: connection refused, DNS, TLS, timeout
        text = (f"{action}: the Kubernetes API server at {server} is unreachable "
                f"({type(e).__name__}: {str(e)[:300]}). Check the server URL{auth_hint}, the VPN, "
                "or that the cluster is up")
        return LLMOpsError(secrets.scrub(text))
    reason = getattr(e, "reason", "") or ""
    text = f"{action}: the API server ({server}) answered {status} {reason}: {server_message(e)}"
    if status == 401:
        text += (" (the credentials were refused: the token has expired or is not valid; log in "
                 f"again with `oc login` / refresh the kubeconfig, or renew the token{auth_hint})")
    elif status == 403:
        text += " (the credentials in use lack permission: check RBAC for this namespace)"
    return LLMOpsError(secrets.scrub(text))
