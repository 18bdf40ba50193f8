"""Names, in one place: the rules for a name that becomes a path component or an object-key segment
(recipe names, run_name, run_id), the Kubernetes rules (DNS-1123/1035 labels,
subdomains, qualified names, label values), the length limits of the kinds llmops creates, and
Kubernetes names derived from recipe and run ids (valid, bounded, deterministic, distinct)."""

from __future__ import annotations

import hashlib
import re
from typing import Optional


# length limits of the names llmops derives
NAME_MAX = 63          # a DNS-1123 label
ISVC_NAME_MAX = 45     # an InferenceService: KServe appends "-predictor" (and more) to it
SERVING_NAME_MAX = 53  # serving.name given by the user: room for KServe's suffixes
RAYCLUSTER_MAX = 53    # KubeRay: RayCluster names
RAYJOB_MAX = 47        # KubeRay: RayJob names (the cluster it makes appends a suffix)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# a path component (a folder or file name, an S3 key segment): portable characters only
PATH_COMPONENT_MAX_BYTES = 255  # NAME_MAX of Linux file systems (ext4, xfs, tmpfs), and macOS
PATH_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,-]*$")
PATH_COMPONENT_CHARS = "letters, digits and '._+=@,-', starting with a letter, digit or '_'"


def path_component_problem(value: str, max_bytes: int = PATH_COMPONENT_MAX_BYTES) -> Optional[str]:
    """None when `value` is safe as one path component (and one object-key segment), else why not.

    Refused: empty, '.', '..', a separator ('/' or '\\') or anything outside the portable
    characters (spaces, control characters, quotes), a leading '.' or '-', over `max_bytes` bytes."""
    if not isinstance(value, str) or not value:
        return "expected a non-empty name"
    if value in (".", ".."):
        return f"'{value}' is not a name (it names a folder relative to another)"
    n = len(value.encode("utf-8"))
    if n > max_bytes:
        return (f"'{value[:40]}...' is {n} bytes; a file name is at most {max_bytes} bytes "
                "(it names a folder)")
    if "/" in value or "\\" in value:
        return f"'{value}' contains a path separator; expected a single name ({PATH_COMPONENT_CHARS})"
    if not PATH_COMPONENT.match(value):
        return f"'{value}' has characters a name may not have; expected {PATH_COMPONENT_CHARS}"
    return None


def dns1123_problem(value: str, max_len: int = 63) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return "expected a non-empty DNS-1123 name"
    if len(value) > max_len:
        return f"'{value}' is {len(value)} characters; at most {max_len} allowed"
    if not DNS1123_LABEL.match(value):
        return (
            f"'{value}' is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns1035_problem(value: str, max_len: int = 63) -> Optional[str]:
    p = dns1123_problem(value, max_len)
    if p:
        return p.replace("DNS-1123", "DNS-1035")
    if not DNS1035_LABEL.match(value):
        return f"'{value}' is not a DNS-1035 label: it must start with a lower-case letter"
    return None

def label_value(value: str) -> str:
    """`value` as a valid label value (<= 63 chars of [A-Za-z0-9-_.], alphanumeric at the ends);
    a changed value ends in a short hash of the original so distinct inputs stay distinct."""
    v = str(value)
    if len(v) <= 63 and LABEL_VALUE.match(v):
        return v
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", v).strip("-_.")
    digest = hashlib.sha256(v.encode()).hexdigest()[:6]
    clean = clean[: 63 - 7].rstrip("-_.")
    return f"{clean}-{digest}" if clean else digest


def k8s_name(base: str, max_len: int = 63, *, dns1035: bool = True) -> str:
    """Lower-case DNS label made from `base`, at most `max_len` characters.

    Anything that is not [a-z0-9-] becomes '-'. A name that had to be changed (cleaned, prefixed
    or shortened) keeps its head and ends in '-' plus 6 hex digits of the sha256 of the original,
    so two run ids that differ only in case or punctuation, or share a long prefix, still get
    different names; a valid name is kept as it is; the same input always gets the same name.
    DNS-1035 (RayCluster, RayJob, Service) also needs a leading letter: 'x-' is prepended when
    the name would start with a digit.
    """
    if not base:
        raise ValueError("cannot derive a Kubernetes name from an empty string")
    name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if dns1035 and (not name or not name[0].isalpha()):
        name = "x-" + name
    if not name.strip("-x"):
        raise ValueError(f"cannot derive a Kubernetes name from {base!r}")
    if name != base or len(name) > max_len:
        # changed (case, punctuation, a prefix, length): a hash of the original keeps two inputs
        # that map to the same cleaned text apart ('My_Run' and 'my-run')
        digest = hashlib.sha256(base.encode()).hexdigest()[:6]
        name = name[: max_len - 7].rstrip("-") + "-" + digest
    return name
