"""The manifest of a stored folder (`llmops-manifest.json`): every file's relative path, size and
sha256. A prefix is complete only when its manifest is present: every store writes it last.

`model_files` is the one walk every store (and the Caikit layout copy) makes over a folder it
uploads: it never follows a symbolic link out of that folder. A link whose target lies outside
(file or folder) or does not exist is an error naming the link; a link to a file inside the folder
is stored as a regular file with that file's content; a link to a folder inside is refused (its
files are stored under their own path already, and a link to an ancestor would loop).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from llmops.core.errors import LLMOpsError

MANIFEST = "llmops-manifest.json"
TMP_PREFIX = ".llmops-tmp-"  # partial downloads: never part of a model


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def model_files(local: Path) -> dict[str, Path]:
    """Every file under `local` to store, by relative POSIX path (sorted), the manifest and partial
    downloads left out. Raises LLMOpsError naming a link that leads out of `local`, a dangling
    link, a link to a folder, or something that is not a file or folder."""
    local = Path(local)
    root = os.path.realpath(local)
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(local, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(local).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                real = os.path.realpath(p)
                if not _inside(real, root):
                    raise LLMOpsError(f"{p}: a symbolic link to {target!r}, outside the model folder {local}; "
                                      "expected only files inside it (copy the file in instead of linking)")
                if not os.path.exists(real):
                    raise LLMOpsError(f"{p}: a dangling symbolic link to {target!r}")
                if os.path.isdir(real):
                    raise LLMOpsError(f"{p}: a symbolic link to the folder {target!r}; expected files "
                                      "and folders only (links to files inside are copied as files)")
            elif stat.S_ISDIR(st.st_mode):
                continue
            elif not stat.S_ISREG(st.st_mode):
                raise LLMOpsError(f"{p}: not a regular file, folder or symbolic link; expected a model folder")
            if name == MANIFEST or name.startswith(TMP_PREFIX):
                continue
            out[rel] = p
    return dict(sorted(out.items()))


def build_manifest(local: Path, workers: int = 1) -> dict:
    """{"version": 1, "files": {rel: {"size", "sha256"}}} of `local` (see `model_files`)."""
    files = model_files(local)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as ex:  # hashlib releases the GIL
            shas = list(ex.map(lambda p: sha256_file(p, 4 << 20), files.values()))
    else:
        shas = [sha256_file(p) for p in files.values()]
    return {"version": 1, "files": {rel: {"size": p.stat().st_size, "sha256": s}
                                    for (rel, p), s in zip(files.items(), shas)}}


def copy_files(src: Path, dst: Path) -> None:
    """Copy the files `model_files(src)` lists into `dst` (links inside become regular files)."""
    for rel, p in model_files(src).items():
        target = Path(dst) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)


def verify_dir(local: Path, manifest: dict, where: str) -> None:
    for rel, meta in manifest["files"].items():
        p = local / rel
        if not p.is_file():
            raise LLMOpsError(f"{where}: file '{rel}' listed in {MANIFEST} is missing")
        if p.stat().st_size != meta["size"] or sha256_file(p) != meta["sha256"]:
            raise LLMOpsError(f"{where}: file '{rel}' does not match its sha256 in {MANIFEST}")
