"""The Kubernetes CEL libraries (lists, regex, URLs, quantities, sets) on top of cel-expr-python.

`kubernetes_extension()` declares them for the engine (`llmops.k8s.cel` builds its environment
with it); `KUBERNETES_FUNCTIONS` names them.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from fractions import Fraction
from typing import Any, Callable

__all__ = ["KUBERNETES_FUNCTIONS", "kubernetes_extension"]

# Kubernetes CEL functions implemented here on top of the engine's standard library (which
# already has has(), size(), matches(), startsWith/endsWith/contains, all/exists/exists_one/
# map/filter, duration(), timestamp(), int()/double()/string(), `in`, ...). The strings
# extension (charAt, indexOf, lastIndexOf, lowerAscii, upperAscii, replace, split, substring,
# trim, join, format, reverse, strings.quote) and optional types (`?.`, `[?`, optional.of,
# optional.none, orValue, hasValue, value, or) and cel.bind come from cel-expr-python's own
# extensions.
KUBERNETES_FUNCTIONS = (
    # lists library
    "list.isSorted", "list.sum", "list.min", "list.max", "list.indexOf", "list.lastIndexOf",
    # regex library
    "string.find", "string.findAll",
    # URL library
    "isURL", "url", "url.getScheme", "url.getHost", "url.getHostname", "url.getPort",
    "url.getEscapedPath", "url.getQuery",
    # quantity library
    "isQuantity", "quantity", "quantity.sign", "quantity.isInteger", "quantity.asInteger",
    "quantity.asApproximateFloat", "quantity.add", "quantity.sub", "quantity.compareTo",
    "quantity.isGreaterThan", "quantity.isLessThan",
    # sets extension
    "sets.contains", "sets.equivalent", "sets.intersects",
)


def kubernetes_extension():
    """The functions of `KUBERNETES_FUNCTIONS` as a cel-expr-python extension ("kubernetes")."""
    from cel_expr_python import cel

    T = cel.Type
    L = T.List(T.DYN)

    def fn(name, *overloads):
        return cel.FunctionDecl(name, [cel.Overload(oid, ret, params, is_member=member, impl=impl)
                                       for oid, ret, params, member, impl in overloads])

    return cel.CelExtension("kubernetes", [
        # lists
        fn("isSorted", ("list_is_sorted", T.BOOL, [L], True, _is_sorted)),
        fn("sum", ("list_sum", T.DYN, [L], True, _sum)),
        fn("min", ("list_min", T.DYN, [L], True, lambda xs: _minmax(xs, min, "min"))),
        fn("max", ("list_max", T.DYN, [L], True, lambda xs: _minmax(xs, max, "max"))),
        fn("indexOf", ("list_index_of", T.INT, [L, T.DYN], True, _index_of)),
        fn("lastIndexOf", ("list_last_index_of", T.INT, [L, T.DYN], True, _last_index_of)),
        # regex
        fn("find", ("string_find", T.STRING, [T.STRING, T.STRING], True, _find)),
        fn("findAll",
           ("string_find_all", T.List(T.STRING), [T.STRING, T.STRING], True, _find_all),
           ("string_find_all_n", T.List(T.STRING), [T.STRING, T.STRING, T.INT], True,
            _find_all)),
        # URLs
        fn("isURL", ("is_url_string", T.BOOL, [T.STRING], False, _is_url)),
        fn("url", ("string_to_url", T.DYN, [T.STRING], False, _url)),
        fn("getScheme", ("url_get_scheme", T.STRING, [T.DYN], True, _url_part("scheme"))),
        fn("getHost", ("url_get_host", T.STRING, [T.DYN], True, _url_part("host"))),
        fn("getHostname", ("url_get_hostname", T.STRING, [T.DYN], True,
                           _url_part("hostname"))),
        fn("getPort", ("url_get_port", T.STRING, [T.DYN], True, _url_part("port"))),
        fn("getEscapedPath", ("url_get_escaped_path", T.STRING, [T.DYN], True,
                              _url_part("path"))),
        fn("getQuery", ("url_get_query", T.Map(T.STRING, T.List(T.STRING)), [T.DYN], True,
                        _url_query)),
        # quantities
        fn("isQuantity", ("is_quantity_string", T.BOOL, [T.STRING], False, _is_quantity)),
        fn("quantity", ("string_to_quantity", T.DYN, [T.STRING], False, _quantity)),
        fn("sign", ("quantity_sign", T.INT, [T.DYN], True, _q_sign)),
        fn("isInteger", ("quantity_is_integer", T.BOOL, [T.DYN], True, _q_is_integer)),
        fn("asInteger", ("quantity_as_integer", T.INT, [T.DYN], True, _q_as_integer)),
        fn("asApproximateFloat", ("quantity_as_float", T.DOUBLE, [T.DYN], True, _q_as_float)),
        fn("add", ("quantity_add", T.DYN, [T.DYN, T.DYN], True, _q_add)),
        fn("sub", ("quantity_sub", T.DYN, [T.DYN, T.DYN], True, _q_sub)),
        fn("compareTo", ("quantity_compare_to", T.INT, [T.DYN, T.DYN], True, _q_cmp)),
        fn("isGreaterThan", ("quantity_is_greater_than", T.BOOL, [T.DYN, T.DYN], True,
                             lambda a, b: _q_cmp(a, b) > 0)),
        fn("isLessThan", ("quantity_is_less_than", T.BOOL, [T.DYN, T.DYN], True,
                          lambda a, b: _q_cmp(a, b) < 0)),
        # sets
        fn("sets.contains", ("list_sets_contains_list", T.BOOL, [L, L], False,
                             lambda a, b: all(_in(x, a) for x in b))),
        fn("sets.equivalent", ("list_sets_equivalent_list", T.BOOL, [L, L], False,
                               lambda a, b: all(_in(x, a) for x in b)
                               and all(_in(x, b) for x in a))),
        fn("sets.intersects", ("list_sets_intersects_list", T.BOOL, [L, L], False,
                               lambda a, b: any(_in(x, a) for x in b))),
    ])


# --------------------------------------------------------------------------- library impls
# An exception raised here becomes a CEL error value (a rule evaluation error).


def _parses(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    """The `isURL`/`isQuantity` kind of function: whether `parse` takes the string (no ValueError)."""
    def accepts(s: str) -> bool:
        try:
            parse(s)
        except ValueError:
            return False
        return True
    return accepts


def _num_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _in(x: Any, xs: list) -> bool:
    return any(_num_eq(x, y) for y in xs)


def _is_sorted(xs: list) -> bool:
    return all(not (xs[i + 1] < xs[i]) for i in range(len(xs) - 1))


def _sum(xs: list) -> Any:
    if not xs:
        return 0
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


def _minmax(xs: list, f, name: str) -> Any:
    if not xs:
        raise ValueError(f"{name} called on empty list")
    return f(xs)


def _index_of(xs: list, x: Any) -> int:
    return next((i for i, y in enumerate(xs) if _num_eq(x, y)), -1)


def _last_index_of(xs: list, x: Any) -> int:
    return next((i for i in range(len(xs) - 1, -1, -1) if _num_eq(x, xs[i])), -1)


def _find(s: str, pattern: str) -> str:
    m = re.search(pattern, s)
    return m.group(0) if m else ""


def _find_all(s: str, pattern: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    found = [m.group(0) for m in re.finditer(pattern, s)]
    return found if limit < 0 else found[:limit]


_URL_TAG = "__kubernetes_url__"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")


def _parse_request_uri(s: str) -> urllib.parse.SplitResult:
    """Approximately Go's url.ParseRequestURI: an absolute URI or an absolute path, no
    fragment, no control characters or spaces."""
    if not s or any(c <= " " or c == "\x7f" for c in s):
        raise ValueError(f"URL parse error: invalid URL {s!r}")
    if s.startswith("/"):
        u = urllib.parse.urlsplit(s, allow_fragments=False)
        return u
    scheme, sep, _ = s.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise ValueError(f"URL parse error: invalid URI for request {s!r}")
    u = urllib.parse.urlsplit(s, allow_fragments=False)
    if u.netloc:
        _ = u.port   # raises ValueError on a bad port
    return u


_is_url = _parses(_parse_request_uri)


def _url(s: str) -> dict:
    u = _parse_request_uri(s)
    host = u.netloc.rpartition("@")[2]
    hostname = u.hostname or ""   # IPv6 literals without their brackets, as Go's Hostname()
    port = "" if u.port is None else str(u.port)
    return {_URL_TAG: s, "scheme": u.scheme, "host": host, "hostname": hostname, "port": port,
            "path": u.path, "query": u.query}


def _url_part(key: str):
    def get(u: Any) -> str:
        if not (isinstance(u, dict) and _URL_TAG in u):
            raise TypeError("no such overload: expected a URL (from url())")
        return u[key]
    return get


def _url_query(u: Any) -> dict:
    q = _url_part("query")(u)
    out: dict[str, list[str]] = {}
    for k, v in urllib.parse.parse_qsl(q, keep_blank_values=True):
        out.setdefault(k, []).append(v)
    return out


_Q_TAG = "__kubernetes_quantity__"
_Q_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                   r"(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_Q_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
             "": Fraction(1), "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
             "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
             "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30),
             "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}


def _parse_quantity(s: str) -> Fraction:
    m = _Q_RE.match(s)
    if not m:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {s!r}")
    num, suf = Fraction(m.group(1)), m.group(2) or ""
    if suf[:1] in ("e", "E"):
        return num * Fraction(10) ** int(suf[1:])
    value = num * _Q_SUFFIX[suf]
    # the API server rounds up to nano units
    return Fraction(math.ceil(value * 10**9), 10**9)


def _q(v: Fraction) -> dict:
    return {_Q_TAG: f"{v.numerator}/{v.denominator}"}


def _qv(q: Any) -> Fraction:
    if isinstance(q, dict) and _Q_TAG in q:
        return Fraction(q[_Q_TAG])
    if isinstance(q, int) and not isinstance(q, bool):
        return Fraction(q)
    raise TypeError("no such overload: expected a quantity (from quantity())")


_is_quantity = _parses(_parse_quantity)


def _quantity(s: str) -> dict:
    return _q(_parse_quantity(s))


def _q_sign(q: Any) -> int:
    v = _qv(q)
    return (v > 0) - (v < 0)


def _q_is_integer(q: Any) -> bool:
    v = _qv(q)
    return v.denominator == 1 and -(2**63) <= v < 2**63


def _q_as_integer(q: Any) -> int:
    if not _q_is_integer(q):
        raise ValueError("cannot convert value to integer")
    return int(_qv(q))


def _q_as_float(q: Any) -> float:
    return float(_qv(q))


def _q_add(a: Any, b: Any) -> dict:
    return _q(_qv(a) + _qv(b))


def _q_sub(a: Any, b: Any) -> dict:
    return _q(_qv(a) - _qv(b))


def _q_cmp(a: Any, b: Any) -> int:
    x, y = _qv(a), _qv(b)
    return (x > y) - (x < y)
