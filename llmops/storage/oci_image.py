"""Deterministic modelcar images in an OCI image layout folder, and unpacking one.

The image built here has two layers:

  1. a shell: ``bin/busybox`` (Debian's ``busybox-static``) and ``bin/sh``, ``bin/ln``,
     ``bin/sleep`` as symlinks to it, plus an empty ``mnt/`` - or, with a base image, the
     layers of that image;
  2. the model folder under ``models/``.

Layers are deterministic (entries sorted by path, mtime 0, uid/gid 0, no user names, mode 0755
for folders and executables and 0644 for other files, gzip with mtime 0 and no file name), and
the config and manifest are canonical JSON (sorted keys, no timestamps, no tag): the same folder
gives the same manifest digest, whatever the run id or the time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import shutil
import struct
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Optional, Union

from llmops.storage.manifest import model_files
from llmops.storage.oci_settings import (DEFAULT_BUSYBOX, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST,
                                         OCIError)

# image config label: the model files (relative path -> size, sha256), what `verify` returns
LABEL_FILES = "io.llmops.files"
SHELL_APPLETS = ("ln", "sh", "sleep")  # what KServe's modelcar sidecar runs
MODELS_DIR = "models"  # the model lies under /models in the image
DEFAULT_CMD = ["sh", "-c", "sleep infinity"]
GZIP_LEVEL = 6  # part of the digest: changing it changes every model layer's digest
ELF_MACHINES = {62: "amd64", 183: "arm64", 40: "arm", 3: "386", 21: "ppc64le", 22: "s390x", 243: "riscv64"}
MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class _HashWriter:
    def __init__(self, f: Any):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        self.f.write(b)
        return len(b)

    def flush(self) -> None:
        pass


class _HashReader:
    def __init__(self, f: BinaryIO):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        self.n += len(b)
        return b


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    path: Optional[Path] = None  # None: a base image's blob that lives only in the registry
    diff_id: Optional[str] = None

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class BaseImage:
    """A base image on some registry: its config (parsed) and layer descriptors."""

    registry: str
    repo: str
    reference: str
    config: dict
    layers: tuple[Blob, ...]


@dataclass
class Image:
    """A built image in an OCI image layout folder (``oci-layout``, ``index.json``, ``blobs/``)."""

    layout: Path
    manifest: bytes
    digest: str
    config: Blob
    layers: list[Blob]
    files: dict = field(default_factory=dict)  # model files: rel path -> {"size", "sha256"}
    base: Optional[BaseImage] = None

    @property
    def blobs(self) -> list[Blob]:
        return [self.config] + self.layers


@dataclass(frozen=True)
class _Entry:
    name: str  # path inside the layer
    kind: str  # "dir" | "file" | "symlink"
    mode: int
    source: Optional[Path] = None
    target: str = ""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _elf_info(path: Path) -> tuple[str, bool]:
    """(architecture, statically linked) of an ELF executable."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise OCIError(f"{path}: not an ELF executable; expected a static busybox (storage.busybox)")
        is64, little = head[4] == 2, head[5] == 1
        end = "<" if little else ">"
        machine = struct.unpack(end + "H", head[18:20])[0]
        if is64:
            phoff, = struct.unpack(end + "Q", head[32:40])
            phentsize, phnum = struct.unpack(end + "HH", head[54:58])
        else:
            phoff, = struct.unpack(end + "I", head[28:32])
            phentsize, phnum = struct.unpack(end + "HH", head[42:46])
        static = True
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ptype, = struct.unpack(end + "I", f.read(4))
            if ptype == 3:  # PT_INTERP: needs a dynamic loader the image does not have
                static = False
    return ELF_MACHINES.get(machine, f"elf-{machine}"), static


def _model_entries(folder: Path) -> list[_Entry]:
    """The model folder as layer entries under models/, sorted. No link is followed out of the
    folder (see `llmops.storage.manifest.model_files`); a link to a file inside becomes a regular
    file with that file's content, as in every other store."""
    files = model_files(folder)
    dirs = {PurePosixPath(rel).parents[i].as_posix() for rel in files
            for i in range(len(PurePosixPath(rel).parents) - 1)}
    entries = [_Entry(MODELS_DIR, "dir", 0o755)]
    for rel in sorted(dirs | set(files)):
        name = f"{MODELS_DIR}/{rel}"
        if rel in dirs:
            entries.append(_Entry(name, "dir", 0o755))
        else:
            p = files[rel]
            entries.append(_Entry(name, "file", 0o755 if os.stat(p).st_mode & 0o111 else 0o644, source=p))
    return entries


def _shell_entries(busybox: Path) -> list[_Entry]:
    out = [_Entry("bin", "dir", 0o755), _Entry("bin/busybox", "file", 0o755, source=busybox)]
    out += [_Entry(f"bin/{a}", "symlink", 0o777, target="busybox") for a in SHELL_APPLETS]
    out.append(_Entry("mnt", "dir", 0o755))
    return out


def _write_layer(entries: list[_Entry], blobs: Path, files: Optional[dict] = None) -> Blob:
    """A gzip'd tar of `entries`, as deterministic as the entries: mtime 0, uid/gid 0, no names."""
    fd, tmp_name = tempfile.mkstemp(prefix=".layer-", dir=blobs)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            outer = _HashWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=outer, mtime=0, compresslevel=GZIP_LEVEL) as gz:
                inner = _HashWriter(gz)
                with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for e in entries:
                        ti = tarfile.TarInfo(e.name)
                        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = 0, 0, 0, "", "", e.mode
                        if e.kind == "dir":
                            ti.type = tarfile.DIRTYPE
                            tar.addfile(ti)
                        elif e.kind == "symlink":
                            ti.type, ti.linkname = tarfile.SYMTYPE, e.target
                            tar.addfile(ti)
                        else:
                            assert e.source is not None
                            with open(e.source, "rb") as f:
                                ti.size = os.fstat(f.fileno()).st_size
                                reader = _HashReader(f)
                                tar.addfile(ti, reader)
                            if reader.n != ti.size:
                                raise OCIError(f"{e.source}: changed while it was packed")
                            if files is not None:
                                files[e.name[len(MODELS_DIR) + 1:]] = {"size": ti.size,
                                                                      "sha256": reader.h.hexdigest()}
        digest = "sha256:" + outer.h.hexdigest()
        final = blobs / digest.split(":", 1)[1]
        os.replace(tmp, final)
        return Blob(digest, outer.n, MEDIA_LAYER_GZIP, final, "sha256:" + inner.h.hexdigest())
    finally:
        tmp.unlink(missing_ok=True)


def _write_blob(blobs: Path, data: bytes, media_type: str) -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    p = blobs / digest.split(":", 1)[1]
    p.write_bytes(data)
    return Blob(digest, len(data), media_type, p)


def host_architecture() -> str:
    m = platform.machine().lower()
    return MACHINE_ARCH.get(m, m)


def build_image(folder: Union[str, Path], layout: Union[str, Path], *, busybox: Union[str, Path] = DEFAULT_BUSYBOX,
                base: Optional[BaseImage] = None, tag: Optional[str] = None) -> Image:
    """Write the modelcar image of `folder` into the OCI image layout `layout` (created).

    Without `base`: layer 1 is the busybox shell, layer 2 the model under models/. With `base`
    (see `resolve_base`): that image's layers, then the model layer; its config is kept
    (env, entrypoint, cmd) with the model layer's diff_id appended. The manifest digest depends
    only on the folder's content (and the busybox binary or the base image)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OCIError(f"{folder}: not a folder; expected the exported model folder")
    layout = Path(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    model_entries = _model_entries(folder)  # refuses links outside before any work
    layers: list[Blob] = []
    history: list[dict] = []
    if base is None:
        bb = Path(busybox)
        if not bb.is_file():
            raise OCIError(f"no static busybox at {bb} (storage.busybox): install Debian's busybox-static "
                           "(apt-get install busybox-static) or set storage.base_image to an image with a shell")
        arch, static = _elf_info(bb)
        if not static:
            raise OCIError(f"{bb} (storage.busybox) is dynamically linked; the image has no libc: "
                           "expected a static busybox (Debian's busybox-static)")
        layers.append(_write_layer(_shell_entries(bb), blobs))
        history.append({"created_by": "llmops: busybox static (sh, ln, sleep)"})
        cfg: dict = {"architecture": arch, "os": "linux",
                     "config": {"Cmd": list(DEFAULT_CMD), "Env": ["PATH=/bin"], "WorkingDir": "/"},
                     "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    else:
        cfg = json.loads(json.dumps(base.config))
        cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        cfg.setdefault("history", [])
        layers.extend(base.layers)
    files: dict = {}
    model_layer = _write_layer(model_entries, blobs, files)
    layers.append(model_layer)
    history.append({"created_by": "llmops: model files under /models"})
    inner = cfg.setdefault("config", {})
    inner["Labels"] = {**(inner.get("Labels") or {}), LABEL_FILES: _canonical(files).decode()}
    if base is None:
        cfg["rootfs"]["diff_ids"] = [b.diff_id for b in layers]
    else:
        cfg["rootfs"]["diff_ids"] = list(cfg["rootfs"].get("diff_ids") or []) + [model_layer.diff_id]
    cfg["history"] = list(cfg.get("history") or []) + history
    config_blob = _write_blob(blobs, _canonical(cfg), MEDIA_CONFIG)
    manifest = _canonical({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                           "config": config_blob.descriptor(),
                           "layers": [b.descriptor() for b in layers]})
    mblob = _write_blob(blobs, manifest, MEDIA_MANIFEST)
    desc = mblob.descriptor()
    if tag:
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    write_index(layout, desc)
    return Image(layout, manifest, mblob.digest, config_blob, layers, files, base)


def write_index(layout: Path, manifest: dict) -> None:
    """The layout's ``oci-layout`` and its ``index.json`` naming one manifest (a descriptor)."""
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                                   "manifests": [manifest]}, indent=1))

def _layout_layers(layout: Path) -> list[tuple[Path, str]]:
    index = json.loads((layout / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / mdesc["digest"].split(":", 1)[1]).read_bytes())
    return [(layout / "blobs" / "sha256" / d["digest"].split(":", 1)[1], d["mediaType"])
            for d in manifest["layers"]]


def unpack(layout: Union[str, Path], dest: Union[str, Path], *, subdir: Optional[str] = None) -> Path:
    """Apply the image's layers in order into `dest` (tarfile's 'data' filter: nothing outside
    `dest`, no devices); with `subdir` (e.g. 'models'), only what lies under it, with the prefix
    removed. Whiteout files (.wh.NAME) remove NAME."""
    layout, dest = Path(layout), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    prefix = subdir.strip("/") + "/" if subdir else ""
    for path, mt in _layout_layers(layout):
        mode = "r:gz" if mt.endswith("gzip") else "r:"
        with tarfile.open(path, mode) as tar:
            members = []
            for m in tar.getmembers():
                name = m.name
                while name.startswith("./"):
                    name = name[2:]
                name = "" if name == "." else name
                if prefix:
                    if not name.startswith(prefix):
                        continue
                    name = name[len(prefix):]
                if not name:
                    continue
                base = PurePosixPath(name)
                if base.name.startswith(".wh."):
                    if base.name != ".wh..wh..opq":
                        victim = dest / base.parent / base.name[len(".wh."):]
                        if victim.is_dir() and not victim.is_symlink():
                            shutil.rmtree(victim)
                        else:
                            victim.unlink(missing_ok=True)
                    continue
                kw: dict = {"name": name}
                if m.islnk() and prefix:
                    if not m.linkname.startswith(prefix):
                        continue
                    kw["linkname"] = m.linkname[len(prefix):]
                members.append(m.replace(**kw, deep=False))
            tar.extractall(dest, members=members, filter="data")
    return dest

