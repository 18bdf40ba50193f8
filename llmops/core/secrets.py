"""Secret masking for every config that is printed, saved, logged, shipped or rendered.

A value is secret when
  - its key looks like one (``*secret*``, ``*password*``, ``*token*``, ``*_key``/``*key_*``/
    ``*apikey*``/``X-Api-Key``, ``authorization``, ``credentials``) and it is a non-empty string
    (flags and numbers such as ``token_auth: true`` or ``max_new_tokens: 20`` are not secrets,
    nor is a toleration's ``key``);
  - it comes from an environment variable whose *name* says so (``is_secret_env_name``:
    ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``, ``*_KEY``, ``AWS_ACCESS_KEY_ID``, ...) through
    ``${oc.env:NAME}`` - directly, inside a longer string, or through another interpolation;
  - or it comes through ``${llmops.secret:NAME}``, which reads environment variable NAME and marks
    its value secret whatever the name.
Any other environment value (``${oc.env:AWS_S3_ENDPOINT}``, a bucket) is an ordinary value, shown
and usable everywhere.

Masked values are replaced by ``MASK``; the real values are remembered, so that any other string
that carries one (a URL, a header, a log line, an error message) is scrubbed as well.
``secret_values(cfg)`` lists a config's secrets, for the checks that refuse one where it would
become part of a name, a path, a label or a prompt (llmops.config.validate).

``install_log_filter()`` scrubs every log record as it is made (so handlers added later are
covered too) and also adds a filter to the root logger's handlers; it also remembers the values of
secret-named environment variables.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from llmops.core.tree import child_nodes

MASK = "***"
SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|apikey|api_key|access_key|private_key|_key$|^key_|"
    r"authorization|credential|session)",
    re.IGNORECASE,
)
# flags and names that contain a secret-ish word but hold no secret
NOT_SECRET_KEYS = {"token_auth", "secret_name", "existing_secret", "env_secret", "pass_secrets",
                   "max_new_tokens", "tokens", "tokens_per_s", "tokenizer", "train_tokenizer_vocab"}
ENV_INTERP = re.compile(r"\$\{oc\.env:")
ENV_NAMES = re.compile(r"\$\{oc\.env:\s*([^,}\s]+)")
SECRET_RESOLVER = "llmops.secret"
SECRET_INTERP = re.compile(r"\$\{llmops\.secret:")

_known_secrets: set[str] = set()


# environment variable names that say their value is secret: their values are remembered (and so
# scrubbed from logs), masked, and reach pods only through a Secret (llmops.k8s.secret_env)
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN(?!IZER|S)|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|"
                        r"_KEY$|_KEY_ID$|^KEY_|AUTH$|AUTHORIZATION|SESSION)", re.IGNORECASE)
# ... but these name a setting, a file or a place, not a secret
NOT_SECRET_ENV = re.compile(r"(^TOKENIZERS_|_(FILE|PATH|DIR|NAME|ID_FILE|URL|ENDPOINT|REGION)$)",
                            re.IGNORECASE)


def is_secret_env_name(name: str) -> bool:
    """An environment variable whose name says it holds a secret (`AWS_SECRET_ACCESS_KEY`,
    `HF_TOKEN`, `AWS_SESSION_TOKEN`, `DB_PASSWORD`, `OPENAI_API_KEY`, ...); not
    `TOKENIZERS_PARALLELISM`, `AWS_S3_ENDPOINT`, `*_FILE`."""
    name = str(name)
    return bool(SECRET_ENV.search(name)) and not NOT_SECRET_ENV.search(name)


def carries_secret_source(raw: Any) -> bool:
    """A raw (unresolved) config string that takes a secret in: `${llmops.secret:...}` or
    `${oc.env:NAME}` with a secret-looking NAME."""
    if not isinstance(raw, str):
        return False
    return bool(SECRET_INTERP.search(raw)) or any(is_secret_env_name(n) for n in ENV_NAMES.findall(raw))


def secret_resolver(name: str) -> str:
    """`${llmops.secret:NAME}`: the value of environment variable NAME, marked secret."""
    name = str(name).strip()
    if name not in os.environ:
        raise ValueError(f"${{{SECRET_RESOLVER}:{name}}}: environment variable {name} is not set")
    value = os.environ[name]
    remember(value)
    return value


def register_resolver() -> None:
    """Register `${llmops.secret:NAME}` with OmegaConf (idempotent; done when this module loads)."""
    if not OmegaConf.has_resolver(SECRET_RESOLVER):
        OmegaConf.register_new_resolver(SECRET_RESOLVER, secret_resolver)


def is_secret_key(key: str) -> bool:
    key = str(key)
    norm = key.replace("-", "_")
    return (key not in NOT_SECRET_KEYS and norm.lower() not in NOT_SECRET_KEYS
            and bool(SECRET_KEY.search(norm)))


def remember_env(environ: Any = None) -> int:
    """Remember the values of secret-named environment variables; returns how many."""
    n = 0
    for name, value in (os.environ if environ is None else environ).items():
        if is_secret_env_name(name) and isinstance(value, str) and len(value) >= 8 \
                and value.lower() not in ("true", "false"):
            remember(value)
            n += 1
    return n


# placeholders that can sit under a secret-looking key but hide nothing (scrubbing them everywhere
# would only garble logs)
NOT_SECRET_VALUES = {"none", "null", "true", "false", "auto", "default", "disabled", "enabled",
                     "changeme", "unset", MASK}


def remember(value: str) -> None:
    """Scrub `value` from every log line from now on (values shorter than 4 chars are ignored)."""
    if isinstance(value, str) and len(value) >= 4 and value.lower() not in NOT_SECRET_VALUES:
        _known_secrets.add(value)


def scrub(text: str) -> str:
    for s in sorted(_known_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return text


def mask(cfg: Any, *, resolve: bool = True) -> Any:
    """A plain container of `cfg` with secrets masked (and remembered for scrubbing)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        _collect(cfg, "", remember)  # first remember every secret, so copies elsewhere are caught
        return _mask_node(cfg, "", resolve)
    _collect_plain(cfg, "")
    return _mask_plain(cfg, "")


def secret_values(cfg: Any) -> set[str]:
    """The secret values of a config (see the module docstring), remembered for scrubbing too."""
    found: set[str] = set()
    if isinstance(cfg, (DictConfig, ListConfig)):
        _collect(cfg, "", found.add)
    for v in found:
        remember(v)
    return {v for v in found if v in _known_secrets}


def _collect(node: Any, key: str, sink: Callable[[str], None]) -> None:
    in_dict = isinstance(node, DictConfig)  # a list's items go by the list's key
    for k, child in child_nodes(node, root=key == ""):
        _collect_leaf(child, str(k) if in_dict else key, sink)


def _collect_leaf(child: Any, key: str, sink: Callable[[str], None]) -> None:
    if isinstance(child, (DictConfig, ListConfig)):
        _collect(child, key, sink)
        return
    if child is None:
        return
    raw = child._value()
    if not (carries_secret_source(raw) or is_secret_key(key)):
        return
    try:
        value = child._dereference_node()._value() if child._is_interpolation() else raw
    except Exception:
        return
    if isinstance(value, str) and value and not ENV_INTERP.search(value):
        sink(value)


def _collect_plain(obj: Any, key: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _collect_plain(v, str(k))
    elif isinstance(obj, list):
        for v in obj:
            _collect_plain(v, key)
    elif isinstance(obj, str) and obj and is_secret_key(key):
        remember(obj)


def _mask_node(node: Any, key: str, resolve: bool) -> Any:
    if isinstance(node, DictConfig):
        return {k: _mask_child(node, child, str(k), resolve) for k, child in child_nodes(node, root=key == "")}
    if isinstance(node, ListConfig):
        return [_mask_child(node, child, key, resolve) for _, child in child_nodes(node)]
    return node


def _mask_child(parent: Any, child: Any, key: str, resolve: bool) -> Any:
    raw = child._value() if child is not None else None
    if carries_secret_source(raw):
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
    if isinstance(value, str):
        return scrub(value)  # e.g. ${a} where a came from oc.env, or a URL embedding a token
    return value


def _mask_plain(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return {k: _mask_plain(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_plain(v, key) for v in obj]
    if isinstance(obj, str) and obj and is_secret_key(key):
        remember(obj)
        return MASK
    if isinstance(obj, str):
        return scrub(obj)
    return obj


def scrub_tree(obj: Any) -> Any:
    """A copy of a plain tree (dicts, lists) with every remembered secret scrubbed from its
    strings; keys decide nothing here (a manifest's placeholders stay as they are)."""
    if isinstance(obj, dict):
        return {k: scrub_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_tree(v) for v in obj]
    return scrub(obj) if isinstance(obj, str) else obj


def masked_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(mask(cfg)))


class ScrubFilter(logging.Filter):
    """Replaces remembered secret values in log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub_record(record)
        return True


def _scrub_record(record: logging.LogRecord) -> None:
    if not _known_secrets:
        return
    try:
        msg = record.getMessage()
    except Exception:
        return
    clean = scrub(msg)
    if clean != msg:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        clean = scrub(text)
        if clean != text:
            record.exc_text = clean  # formatters print exc_text when it is set
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


def install_log_filter() -> None:
    """Scrub remembered secrets from every log record (idempotent).

    Records are scrubbed as they are made (a log record factory), which covers every handler,
    also those added later; the root logger's handlers get a `ScrubFilter` as well.
    """
    remember_env()
    old = logging.getLogRecordFactory()
    if not getattr(old, "_llmops_scrub", False):
        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old(*args, **kwargs)
            _scrub_record(record)
            return record

        factory._llmops_scrub = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, ScrubFilter) for f in h.filters):
            h.addFilter(ScrubFilter())


register_resolver()
