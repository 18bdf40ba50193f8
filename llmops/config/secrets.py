"""Secret masking for every config that is printed, saved, logged, shipped or rendered.

A value is secret when its key looks like one (``*secret*``, ``*password*``, ``*token*``,
``*_key``/``*key_*``/``*apikey*``, ``authorization``, ``credentials``) and it is a non-empty
string, or when it came from the environment through ``${oc.env:...}``. Masked values are
replaced by ``MASK``; the real values are remembered so that a logging filter can scrub them from
any log line that would otherwise carry one.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

MASK = "***"
SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|apikey|api_key|access_key|private_key|_key$|^key_|"
    r"authorization|credential|session)",
    re.IGNORECASE,
)
# flags and names that contain a secret-ish word but hold no secret
NOT_SECRET_KEYS = {"token_auth", "secret_name", "existing_secret", "pass_secrets", "max_new_tokens",
                   "tokens", "tokens_per_s", "tokenizer", "train_tokenizer_vocab"}
ENV_INTERP = re.compile(r"\$\{oc\.env:")

_known_secrets: set[str] = set()


def is_secret_key(key: str) -> bool:
    return key not in NOT_SECRET_KEYS and bool(SECRET_KEY.search(key))


def remember(value: str) -> None:
    """Scrub `value` from every log line from now on (values shorter than 4 chars are ignored)."""
    if isinstance(value, str) and len(value) >= 4:
        _known_secrets.add(value)


def scrub(text: str) -> str:
    for s in sorted(_known_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return text


def mask(cfg: Any, *, resolve: bool = True) -> Any:
    """A plain container of `cfg` with secrets masked (and remembered for scrubbing)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return _mask_node(cfg, "", resolve)
    return _mask_plain(cfg, "")


def _mask_node(node: Any, key: str, resolve: bool) -> Any:
    if isinstance(node, DictConfig):
        out = {}
        for k in node.keys():
            if k == "hydra" and key == "":
                continue
            child = node._get_node(k)
            out[k] = _mask_child(node, child, str(k), resolve)
        return out
    if isinstance(node, ListConfig):
        return [_mask_child(node, node._get_node(i), key, resolve) for i in range(len(node))]
    return node


def _mask_child(parent: Any, child: Any, key: str, resolve: bool) -> Any:
    raw = child._value() if child is not None else None
    if isinstance(raw, str) and ENV_INTERP.search(raw):
        try:
            remember(str(child._dereference_node()._value()))
        except Exception:
            pass
        return MASK
    if isinstance(child, (DictConfig, ListConfig)):
        return _mask_node(child, key, resolve)
    value = raw
    if resolve and child is not None and child._is_interpolation():
        try:
            value = child._dereference_node()._value()
        except Exception:
            value = raw
    if hasattr(value, "value") and not isinstance(value, (str, bytes)):  # enums
        value = value.value
    if isinstance(value, str) and value and is_secret_key(key):
        remember(value)
        return MASK
    return value


def _mask_plain(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return {k: _mask_plain(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_plain(v, key) for v in obj]
    if isinstance(obj, str) and obj and is_secret_key(key):
        remember(obj)
        return MASK
    return obj


def masked_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(mask(cfg)))


class ScrubFilter(logging.Filter):
    """Replaces remembered secret values in log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known_secrets:
            try:
                msg = record.getMessage()
            except Exception:
                return True
            clean = scrub(msg)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


def install_log_filter() -> None:
    """Add the scrubbing filter to every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, ScrubFilter) for f in h.filters):
            h.addFilter(ScrubFilter())
