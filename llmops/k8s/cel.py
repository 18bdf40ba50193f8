"""Offline evaluation of a CRD's `x-kubernetes-validations` (CEL) rules, as the API server does
on create.

JSON-schema validation skips these rules. Here an object is walked alongside the CRD version's
openAPIV3Schema (`properties`, `items`, `additionalProperties`); at every schema node that has
rules and whose object node is present, each rule is evaluated with `self` bound to that node.
Before that the object is prepared the way the API server prepares a create request: unknown
fields are pruned, schema `default`s are applied, and values get the CEL type their schema
gives them (`number` -> double, `format: date-time|date` -> timestamp, `format: duration` ->
duration, `format: byte` -> bytes; at the root and at embedded resources, `metadata` shows only
`name` and `generateName`).

Nothing is skipped silently:
- transition rules (those using `oldSelf`) apply only to updates: `rule_sites()` and
  `CelReport.skipped` list them with the reason;
- a rule (or messageExpression) that does not compile, or calls a function this module does not
  implement, is "unsupported": `unsupported_rules(schema)` lists them for a whole schema,
  `cel_report()` lists the ones that applied to the object, and `cel_problems()` raises
  `CelUnsupportedError` rather than pass such an object.

The CEL engine is `cel-expr-python` (the CEL project's Python binding of cel-cpp) with its
strings and optional-types extensions; the Kubernetes CEL libraries on top of it (lists, regex,
URLs, quantities, sets) are implemented in Python in `llmops.k8s.cel_lib`.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmops.core.errors import LLMOpsError
from llmops.k8s.cel_lib import kubernetes_extension

__all__ = [
    "CelReport",
    "CelUnsupportedError",
    "RuleSite",
    "cel_problems",
    "cel_report",
    "compile_rule",
    "crd_schema",
    "crd_versions",
    "prepare_object",
    "rule_sites",
    "unsupported_rules",
]

TRANSITION_REASON = "transition rule (uses oldSelf): evaluated by the API server only on update"


class CelUnsupportedError(LLMOpsError):
    """A CRD rule could not be compiled (syntax, or a function not implemented here)."""

    def __init__(self, unsupported: list[str]):
        self.unsupported = list(unsupported)
        n = len(self.unsupported)
        super().__init__(
            f"{n} CRD validation rule{'s' if n != 1 else ''} cannot be evaluated offline:\n"
            + "\n".join(f"  - {u}" for u in self.unsupported))


@dataclass(frozen=True)
class RuleSite:
    """One `x-kubernetes-validations` entry and where in the schema it sits."""

    schema_path: str          # e.g. "spec.router.route.http.spec.rules[*].filters"
    rule: str
    message: str | None = None
    message_expression: str | None = None
    field_path: str | None = None
    reason: str | None = None
    optional_old_self: bool = False

    @property
    def transition(self) -> bool:
        """True for a transition rule (it refers to `oldSelf`)."""
        return _uses_old_self(self.rule)

    @property
    def skip_reason(self) -> str | None:
        """Why the rule is not evaluated on create, or None. A transition rule applies only to
        updates, unless it sets `optionalOldSelf: true`: then it also runs on create, with
        `oldSelf` = optional.none()."""
        return TRANSITION_REASON if self.transition and not self.optional_old_self else None

    def sources(self) -> tuple[str, str | None]:
        """The rule and messageExpression as evaluated on create."""
        if self.transition and self.optional_old_self:
            wrap = "cel.bind(oldSelf, optional.none(), {})".format
            return wrap(self.rule), (wrap(self.message_expression)
                                     if self.message_expression else None)
        return self.rule, self.message_expression


@dataclass
class CelReport:
    """What evaluating an object's rules found. `problems` are rule failures (and evaluation
    errors), as the API server would reject them; `skipped` are the transition rules that
    applied to a present node but were not evaluated, with the reason; `unsupported` are rules
    that applied but could not be compiled here."""

    problems: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)   # (path, rule, reason)
    unsupported: list[str] = field(default_factory=list)
    evaluated: int = 0


# --------------------------------------------------------------------------- CRD files


def crd_schema(path: str | Path, version: str | None = None) -> dict:
    """The openAPIV3Schema of one version of the CRD in file `path` (default: the storage
    version). A copy: callers may change it."""
    versions = _crd_versions(path)
    if version is None:
        v = next((v for v in versions if v.get("storage")), versions[0])
    else:
        v = next((v for v in versions if v.get("name") == version), None)
        if v is None:
            names = ", ".join(str(x.get("name")) for x in versions)
            raise LLMOpsError(f"{path}: no version {version!r} (versions: {names})")
    try:
        return copy.deepcopy(v["schema"]["openAPIV3Schema"])
    except (KeyError, TypeError) as e:
        raise LLMOpsError(f"{path}: version {v.get('name')!r} has no openAPIV3Schema") from e


def crd_versions(path: str | Path) -> list[str]:
    """The version names of the CRD in file `path`, in file order."""
    return [str(v.get("name")) for v in _crd_versions(path)]


def _crd_versions(path: str | Path) -> list[dict]:
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as e:
        raise LLMOpsError(f"CRD file missing: {p}") from e
    return _crd_file(str(p.resolve()), mtime)


@lru_cache(maxsize=32)
def _crd_file(path: str, _mtime: int) -> list[dict]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, "rb") as f:
        crd = yaml.load(f, Loader=loader)
    try:
        versions = crd["spec"]["versions"]
        assert isinstance(versions, list) and versions
    except (TypeError, KeyError, AssertionError) as e:
        raise LLMOpsError(f"{path}: not a CustomResourceDefinition (no spec.versions)") from e
    return versions


# --------------------------------------------------------------------------- rules in a schema


def rule_sites(schema: dict) -> list[RuleSite]:
    """Every `x-kubernetes-validations` rule reachable through properties/items/
    additionalProperties, in schema order. `site.transition` marks the oldSelf ones."""
    out: list[RuleSite] = []

    def walk(s: Any, path: str) -> None:
        if not isinstance(s, dict):
            return
        for r in s.get("x-kubernetes-validations") or ():
            out.append(_site(path, r))
        for k, sub in (s.get("properties") or {}).items():
            walk(sub, _join(path, k))
        if isinstance(s.get("items"), dict):
            walk(s["items"], path + "[*]")
        if isinstance(s.get("additionalProperties"), dict):
            walk(s["additionalProperties"], path + "[*]")

    walk(schema, "")
    return out


def _site(path: str, r: dict) -> RuleSite:
    return RuleSite(path or "(root)", r["rule"], r.get("message"), r.get("messageExpression"),
                    r.get("fieldPath"), r.get("reason"), bool(r.get("optionalOldSelf")))


def unsupported_rules(schema: dict) -> list[str]:
    """Every rule (transition rules included) and messageExpression of `schema` that does not
    compile here, as "<schema path>: <error>"; empty when all compile."""
    out = []
    for site in rule_sites(schema):
        for src in site.sources():
            if src is None:
                continue
            err = _compile(src)[1]
            if err:
                out.append(f"{site.schema_path}: {err}")
    return out


def compile_rule(rule: str):
    """Compile one CEL expression in the Kubernetes environment (`self` and `oldSelf`
    declared); raise CelUnsupportedError if it does not compile."""
    prog, err = _compile(rule)
    if err:
        raise CelUnsupportedError([err])
    return prog


# --------------------------------------------------------------------------- evaluation


def cel_problems(obj: dict, schema: dict) -> list[str]:
    """The rule failures of `obj` as the API server would report them on create:
    "<json path>: <message>". Transition rules are not evaluated (see `cel_report().skipped`);
    a rule that applies but cannot be compiled raises CelUnsupportedError."""
    rep = cel_report(obj, schema)
    if rep.unsupported:
        raise CelUnsupportedError(rep.unsupported)
    return rep.problems


def cel_report(obj: dict, schema: dict) -> CelReport:
    """Evaluate every rule of `schema` that applies to `obj` (on a node present in the object,
    after pruning and defaulting) and report failures, skipped rules and unsupported rules."""
    rep = CelReport()
    tree = prepare_object(obj, schema)
    _walk(tree, schema, "", True, rep)
    return rep


def _walk(node: Any, s: Any, path: str, resource_root: bool, rep: CelReport) -> None:
    if not isinstance(s, dict) or node is None:
        return
    rules = s.get("x-kubernetes-validations")
    if rules:
        self_val = _restrict_metadata(node) if resource_root else node
        for r in rules:
            _evaluate(_site(path, r), self_val, path or "(root)", rep)
    if isinstance(node, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        for k, v in node.items():
            if k in props:
                _walk(v, props[k], _join(path, k), _is_embedded(props[k]), rep)
            elif isinstance(ap, dict):
                _walk(v, ap, _join(path, k), _is_embedded(ap), rep)
    elif isinstance(node, list) and isinstance(s.get("items"), dict):
        items = s["items"]
        for i, v in enumerate(node):
            _walk(v, items, f"{path}[{i}]", _is_embedded(items), rep)


def _is_embedded(s: Any) -> bool:
    return isinstance(s, dict) and bool(s.get("x-kubernetes-embedded-resource"))


def _evaluate(site: RuleSite, self_val: Any, path: str, rep: CelReport) -> None:
    if site.skip_reason:
        rep.skipped.append((path, site.rule, site.skip_reason))
        return
    rule_src, msg_src = site.sources()
    prog, err = _compile(rule_src)
    if err:
        rep.unsupported.append(f"{path}: {err}")
        return
    rep.evaluated += 1
    where = path + _field_path_suffix(site.field_path)
    ok, value = _run(prog, self_val)
    if not ok:
        rep.problems.append(f"{where}: rule evaluation error: {value} (rule: {site.rule})")
        return
    if value is True:
        return
    if value is not False:
        rep.problems.append(f"{where}: rule did not evaluate to a bool (got {value!r}; "
                            f"rule: {site.rule})")
        return
    msg = None
    if msg_src:
        mprog, merr = _compile(msg_src)
        if merr:
            rep.unsupported.append(f"{path}: messageExpression: {merr}")
        else:
            mok, mval = _run(mprog, self_val)
            # like the API server: an error, a non-string, an empty or a multi-line result
            # falls back to `message`
            if mok and isinstance(mval, str) and mval.strip() and "\n" not in mval:
                msg = mval
    if msg is None:
        msg = site.message or f"failed rule: {site.rule}"
    rep.problems.append(f"{where}: {msg}")


def _field_path_suffix(fp: str | None) -> str:
    if not fp:
        return ""
    return fp if fp.startswith((".", "[")) else "." + fp


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _restrict_metadata(node: Any) -> Any:
    """At the root of a resource (and of an embedded resource) CEL sees only metadata.name and
    metadata.generateName."""
    if isinstance(node, dict) and isinstance(node.get("metadata"), dict):
        md = {k: v for k, v in node["metadata"].items() if k in ("name", "generateName")}
        return {**node, "metadata": md}
    return node


# --------------------------------------------------------------------------- preparing the object


def prepare_object(obj: Any, schema: dict) -> Any:
    """`obj` as the API server hands it to CEL on create: unknown fields pruned, `default`s
    applied, values converted to the CEL type their schema gives them. Does not change `obj`."""
    return _prepare(obj, schema, True)


def _prepare(node: Any, s: Any, resource_root: bool = False) -> Any:
    if not isinstance(s, dict):
        return copy.deepcopy(node)
    if isinstance(node, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        keep_unknown = bool(s.get("x-kubernetes-preserve-unknown-fields")) or ap is True
        meta_keys = ("apiVersion", "kind", "metadata") if (
            resource_root or s.get("x-kubernetes-embedded-resource")) else ()
        out: dict = {}
        for k, v in node.items():
            if k in meta_keys:
                out[k] = copy.deepcopy(v)   # ObjectMeta & co.: not pruned by the CRD schema
            elif k in props:
                ps = props[k]
                if v is None and not ps.get("nullable"):
                    continue      # pruned; a default may fill it below
                out[k] = _prepare(v, ps)
            elif isinstance(ap, dict):
                out[k] = _prepare(v, ap)
            elif keep_unknown:
                out[k] = copy.deepcopy(v)
            # else: pruned, as the API server prunes unknown fields
        for k, ps in props.items():
            if k not in out and isinstance(ps, dict) and "default" in ps:
                out[k] = _prepare(copy.deepcopy(ps["default"]), ps)
        return out
    if isinstance(node, list):
        items = s.get("items")
        return [_prepare(v, items) for v in node]
    return _scalar(node, s)


def _scalar(v: Any, s: dict) -> Any:
    t, fmt = s.get("type"), s.get("format")
    if isinstance(v, bool) or v is None:
        return v
    if t == "number" and isinstance(v, int):
        return float(v)
    if t == "integer" and isinstance(v, float) and v.is_integer():
        return int(v)
    if t == "string" and isinstance(v, str):
        try:
            if fmt == "date-time":
                return _pb_timestamp(_dt.datetime.fromisoformat(v.replace("Z", "+00:00")))
            if fmt == "date":
                return _pb_timestamp(_dt.datetime.combine(_dt.date.fromisoformat(v),
                                                          _dt.time(), _dt.timezone.utc))
            if fmt == "duration":
                return _pb_duration(_go_duration(v))
            if fmt == "byte":
                return base64.b64decode(v, validate=True)
        except ValueError:
            return v      # not of its format: schema validation reports it
    return v


def _pb_timestamp(d: _dt.datetime):
    from google.protobuf import timestamp_pb2

    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(d)
    return ts


def _pb_duration(seconds: Fraction):
    from google.protobuf import duration_pb2

    du = duration_pb2.Duration()
    ns = int(seconds * 10**9)
    du.seconds, du.nanos = int(ns / 10**9), ns - int(ns / 10**9) * 10**9
    return du


_GO_UNITS = {"ns": Fraction(1, 10**9), "us": Fraction(1, 10**6), "µs": Fraction(1, 10**6),
             "μs": Fraction(1, 10**6), "ms": Fraction(1, 1000), "s": Fraction(1),
             "m": Fraction(60), "h": Fraction(3600)}
_GO_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def _go_duration(text: str) -> Fraction:
    """Go's time.ParseDuration: "1h30m", "-1.5s", "0"."""
    s = text
    sign = -1 if s.startswith("-") else 1
    s = s[1:] if s[:1] in ("+", "-") else s
    if s == "0":
        return Fraction(0)
    if not s:
        raise ValueError(text)
    total, pos = Fraction(0), 0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError(text)
        total += Fraction(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


# --------------------------------------------------------------------------- the CEL environment


def _uses_old_self(src: str) -> bool:
    return re.search(r"\boldSelf\b", _strip_strings(src)) is not None


def _strip_strings(src: str) -> str:
    return re.sub(r"""[rRbB]*("""
                  r'''"""(?:\\.|[^\\])*?"""|'{3}(?:\\.|[^\\])*?'{3}'''
                  r"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')""", '""', src, flags=re.S)


@lru_cache(maxsize=None)
def _compile(src: str):
    """(program, None) or (None, "unsupported rule ...: <compiler error>")."""
    env = _env()   # outside the try: a missing package is not an unsupported rule
    try:
        return env.compile(src), None
    except RuntimeError as e:  # the binding's compile errors
        first = " ".join(str(e).split())
        return None, f"unsupported rule {src!r}: {first}"


def _run(prog, self_val: Any) -> tuple[bool, Any]:
    v = prog.eval(data={"self": self_val, "oldSelf": None})
    if v.type().name() == "ERROR":
        return False, v.value()
    return True, v.plain_value()


@lru_cache(maxsize=1)
def _env():
    from cel_expr_python import cel
    from cel_expr_python.ext import ext_bindings, ext_optional, ext_strings

    return cel.NewEnv(variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN},
                      extensions=[ext_strings.ExtStrings(), ext_optional.ExtOptional(),
                                  ext_bindings.ExtBindings(), kubernetes_extension()])
