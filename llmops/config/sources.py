"""Where recipes and config options come from: the recipe path.

A *source* is a config root: recipes (primary configs) at its top level, config-group options in
sub-folders (``model/team_gpt.yaml``). Sources, first wins:

1. ``$LLMOPS_RECIPE_PATH`` entries (``os.pathsep``-separated): local folders, or S3 prefixes
   ``s3://bucket/recipes/`` (read-only; the endpoint and credentials come from boto3's usual
   environment, e.g. ``AWS_ENDPOINT_URL``),
2. ``hydra.searchpath=[file://DIR,...]`` given on the ``llmops run`` command line,
3. installed team packages: every Hydra ``SearchPathPlugin`` in the ``hydra_plugins`` namespace
   that adds a ``pkg://`` or ``file://`` entry (Hydra uses the same plugins when composing),
4. llmops' own ``recipes/`` (and ``conf/`` for the built-in options).

A recipe name defined by two sources is a *clash*: the first source wins, and ``llmops recipes
ls`` (and ``llmops run``, as a warning) names both.

Nothing heavy is imported here; boto3 only when an S3 source is used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from llmops.core import resources
from llmops.core.errors import LLMOpsError
from llmops.core.yamlio import MAX_BYTES, bounded_text, load_yaml_text

log = logging.getLogger("llmops")

RECIPE_PATH_ENV = "LLMOPS_RECIPE_PATH"
CACHE_ENV = "LLMOPS_CACHE_DIR"
_BUILTIN_PLUGIN_PROVIDERS = {"hydra", "main", "schema", "llmops"}


@dataclass(frozen=True)
class RecipeSource:
    kind: str  # folder | s3 | package | builtin | searchpath
    label: str  # what `recipes ls` prints as the source
    location: str  # file path or s3:// URI or pkg:// entry

    @property
    def is_s3(self) -> bool:
        return self.kind == "s3"

    def local_dir(self) -> Optional[Path]:
        """The folder holding this source's files (an S3 source: its read-only local mirror)."""
        if self.is_s3:
            return None
        return Path(self.location)

    def hydra_entry(self) -> str:
        return self.location if self.is_s3 else f"file://{self.location}"

    # -- listing
    def recipe_names(self) -> dict[str, str]:
        """name -> a location string (path or s3 URI) of every recipe at the top level."""
        if self.is_s3:
            return {n: f"{self.location.rstrip('/')}/{n}.yaml"
                    for n in s3_source(self.location).list_names("")}
        d = Path(self.location)
        if not d.is_dir():
            return {}
        return {p.stem: str(p) for p in sorted(d.glob("*.yaml"))}

    def group_options(self, group: str) -> dict[str, str]:
        if self.is_s3:
            return {n: f"{self.location.rstrip('/')}/{group}/{n}.yaml"
                    for n in s3_source(self.location).list_names(group)}
        gd = Path(self.location) / group
        if not gd.is_dir():
            return {}
        return {p.stem: str(p) for p in sorted(gd.glob("*.yaml"))}

    def fetch_recipe(self, name: str) -> Path:
        """A local file holding recipe `name` (an S3 recipe is downloaded to the cache)."""
        if not self.is_s3:
            return Path(self.location) / f"{name}.yaml"
        return s3_source(self.location).download(f"{name}.yaml")


def _split_path_env(value: str) -> list[str]:
    """Split on os.pathsep, keeping `s3://...` (whose ':' is the separator too) in one piece."""
    parts = value.split(os.pathsep)
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if p in ("s3", "file") and i + 1 < len(parts) and parts[i + 1].startswith("//"):
            out.append(f"{p}:{parts[i + 1]}")
            i += 2
            continue
        out.append(p)
        i += 1
    return [p.strip() for p in out if p.strip()]


def env_sources() -> list[RecipeSource]:
    out = []
    for entry in _split_path_env(os.environ.get(RECIPE_PATH_ENV, "")):
        if entry.startswith("s3://"):
            out.append(RecipeSource("s3", f"{RECIPE_PATH_ENV} (s3)", normalize_s3(entry)))
        else:
            entry = entry[len("file://"):] if entry.startswith("file://") else entry
            p = str(Path(entry).expanduser().resolve())
            out.append(RecipeSource("folder", RECIPE_PATH_ENV, p))
    return out


def normalize_s3(uri: str) -> str:
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise LLMOpsError(f"recipe source '{uri}': expected s3://BUCKET/PREFIX/")
    return uri.rstrip("/") + "/"


def searchpath_sources(overrides: Iterable[str]) -> list[RecipeSource]:
    """`hydra.searchpath=[file://DIR, s3://b/p, ...]` entries of a command line."""
    out = []
    for o in overrides or []:
        key, sep, val = o.partition("=")
        if not sep or key.lstrip("+") != "hydra.searchpath":
            continue
        for e in (x.strip().strip("'\"") for x in val.strip().strip("[]").split(",")):
            if e.startswith("file://"):
                out.append(RecipeSource("searchpath", "hydra.searchpath",
                                        str(Path(e[len("file://"):]).expanduser().resolve())))
            elif e.startswith("s3://"):
                out.append(RecipeSource("s3", "hydra.searchpath (s3)", normalize_s3(e)))
    return out


_plugin_cache: Optional[list[RecipeSource]] = None


def package_sources(refresh: bool = False) -> list[RecipeSource]:
    """Entries that installed SearchPathPlugins add (team recipe packages)."""
    global _plugin_cache
    if _plugin_cache is not None and not refresh:
        return _plugin_cache
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    out: list[RecipeSource] = []
    try:
        plugins = Plugins.instance().discover(SearchPathPlugin)
    except Exception as e:  # a broken plugin must not break `llmops recipes ls`
        log.warning("could not list Hydra search path plugins: %s", e)
        plugins = []
    for cls in plugins:
        sp = ConfigSearchPathImpl()
        try:
            cls().manipulate_search_path(sp)
        except Exception as e:
            log.warning("search path plugin %s failed: %s", cls.__name__, e)
            continue
        for el in sp.get_path():
            if el.provider in _BUILTIN_PLUGIN_PROVIDERS:
                continue
            path = el.path
            local = _resolve_entry(path)
            if local is None:
                continue
            label = f"package {el.provider}" if el.provider else f"package {cls.__module__}"
            out.append(RecipeSource("package", label, str(local)))
    _plugin_cache = out
    return out


def _resolve_entry(path: str) -> Optional[Path]:
    if path.startswith("file://"):
        return Path(path[len("file://"):]).resolve()
    if path.startswith("pkg://"):
        import importlib.util

        mod = path[len("pkg://"):].strip("/").replace("/", ".")
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return None


def builtin_source() -> RecipeSource:
    return RecipeSource("builtin", "llmops (built-in)", str(resources.recipes_dir()))


def sources(overrides: Iterable[str] = ()) -> list[RecipeSource]:
    """Every recipe source, first wins."""
    seen, out = set(), []
    for s in env_sources() + searchpath_sources(overrides) + package_sources() + [builtin_source()]:
        if s.location not in seen:
            seen.add(s.location)
            out.append(s)
    return out


@dataclass
class RecipeEntry:
    name: str
    source: RecipeSource
    location: str
    shadowed: list["RecipeEntry"]


def all_recipes(overrides: Iterable[str] = ()) -> dict[str, RecipeEntry]:
    """name -> the winning entry (with the entries it shadows)."""
    out: dict[str, RecipeEntry] = {}
    for s in sources(overrides):
        for name, loc in s.recipe_names().items():
            e = RecipeEntry(name, s, loc, [])
            if name in out:
                out[name].shadowed.append(e)
            else:
                out[name] = e
    return dict(sorted(out.items()))


def clash_message(e: RecipeEntry) -> str:
    others = "; ".join(f"{o.location} ({o.source.label})" for o in e.shadowed)
    return (f"recipe '{e.name}' is defined by {1 + len(e.shadowed)} sources: "
            f"{e.location} ({e.source.label}) wins over {others}")


# ------------------------------------------------------------------------------------------ S3
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "~/.cache/llmops")).expanduser() / "recipe-sources"


class S3RecipeSource:
    """Read-only access to `s3://bucket/prefix/`: list and get objects; never writes."""

    def __init__(self, uri: str):
        self.uri = normalize_s3(uri)
        rest = self.uri[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/")
        self._client = None
        self._checked = False

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            cfg = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2,
                                                                      "mode": "standard"})
            self._client = boto3.client("s3", config=cfg)
        return self._client

    def key(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def _fail(self, e: Exception, what: str) -> LLMOpsError:
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        return LLMOpsError(
            f"recipe source {self.uri} is unreachable ({what}; endpoint {endpoint}): "
            f"{type(e).__name__}: {e}. Check {RECIPE_PATH_ENV} / hydra.searchpath, the endpoint "
            f"(AWS_ENDPOINT_URL) and credentials, or remove the source"
        )

    def check(self) -> None:
        if self._checked:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key("") + "/", MaxKeys=1)
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, "listing the prefix") from None
        self._checked = True

    def _list(self, rel: str) -> tuple[list[str], list[str]]:
        """(sub-folders, yaml file names) directly under `rel`."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.check()
        base = self.key(rel)
        base = base + "/" if base else ""
        dirs, files = [], []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                dirs += [p["Prefix"][len(base):].strip("/") for p in page.get("CommonPrefixes", [])]
                files += [o["Key"][len(base):] for o in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, f"listing {base}") from None
        return dirs, [f for f in files if f.endswith(".yaml") and "/" not in f]

    def list_names(self, rel: str) -> list[str]:
        return sorted(f[: -len(".yaml")] for f in self._list(rel)[1])

    def list_dirs(self, rel: str) -> list[str]:
        return sorted(self._list(rel)[0])

    def exists(self, rel: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check()
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(e, f"reading {rel}") from None
        except BotoCoreError as e:
            raise self._fail(e, f"reading {rel}") from None

    def read_text(self, rel: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check()
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))
            raw = obj["Body"].read(MAX_BYTES + 1)
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, f"reading {rel}") from None
        return bounded_text(raw, f"{self.uri}{rel}")

    def read_yaml_text(self, rel: str) -> str:
        """A config file's text, refused (naming its URI) when over the YAML bounds."""
        text = self.read_text(rel)
        load_yaml_text(text, f"{self.uri}{rel}")
        return text

    def download(self, rel: str) -> Path:
        """Copy one file into the local cache (atomically) and return its path."""
        from llmops.core.io import atomic_write_text

        text = self.read_yaml_text(rel)
        dest = cache_dir() / "s3" / self.bucket / (self.prefix or "_") / rel
        atomic_write_text(dest, text)
        return dest


_s3_sources: dict[str, S3RecipeSource] = {}


def s3_source(uri: str) -> S3RecipeSource:
    uri = normalize_s3(uri)
    if uri not in _s3_sources:
        _s3_sources[uri] = S3RecipeSource(uri)
    return _s3_sources[uri]
