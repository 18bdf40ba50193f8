"""dataset.source=stdlib_docs (the quickstart): the docstrings of this Python's standard library,
one document per module, read from the source files with `ast` (nothing is imported)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from llmops.data.common import holdout_rows, holdout_settings

NAME = "stdlib_docs"

# third-party code, tests, generated data (pydoc_data: a topics dump; encodings: codec tables)
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
             "lib2to3", "ensurepip", "turtledemo", "pydoc_data", "encodings"}


def stdlib_root() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def stdlib_files() -> list[Path]:
    """The standard library's .py files, in a fixed order (tests and third-party code excluded)."""
    root = stdlib_root()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(x for x in dirnames if x not in SKIP_DIRS and not x.startswith("."))
        for f in sorted(filenames):
            if f.endswith(".py"):
                files.append(Path(dirpath) / f)
    return files


def stdlib_doc(path: Path) -> str:
    """All docstrings of one module (module, classes, functions, in source order)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return ""
    parts: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            # one line per paragraph: docstrings wrap at ~72 columns, and a corpus made of those
            # line breaks teaches a tiny model that the likeliest next token is a newline
            paras = (" ".join(p.split()) for p in doc.strip().split("\n\n"))
            parts.append("\n".join(p for p in paras if p))
        body = [c for c in getattr(node, "body", [])
                if isinstance(c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        stack.extend(reversed(body))
    return "\n".join(parts) + "\n" if parts else ""


def stdlib_documents(num_proc: int = 1, files: Optional[list[Path]] = None) -> list[str]:
    """One document per standard-library module with a docstring, in a fixed order."""
    files = stdlib_files() if files is None else files
    if num_proc > 1:
        from llmops.data.encode import process_pool

        with process_pool(num_proc) as pool:
            docs = pool.map(stdlib_doc, files, chunksize=16)
    else:
        docs = [stdlib_doc(p) for p in files]
    return [d for d in docs if d]


def check(c) -> None:
    pass  # nothing to check: the standard library is always there


def check_inputs(cfg) -> None:
    pass


def describe(cfg) -> dict:
    import sysconfig

    return {"stdlib": sysconfig.get_paths()["stdlib"]}


def holds_out(cfg) -> bool:
    return True


def row_settings(cfg) -> dict:
    return holdout_settings(cfg)


def fingerprint(cfg, sha256: Callable) -> dict:
    """The files' names, sizes and mtimes (not their content: reading 600 files costs seconds)."""
    root = stdlib_root()
    h = hashlib.sha256()
    for p in stdlib_files():
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"stdlib": str(root), "python": sys.version.split()[0], "files": h.hexdigest()[:20]}


def load_rows(cfg) -> dict[str, list[str]]:
    return holdout_rows(cfg, stdlib_documents(int(cfg.dataset.num_proc)))


def empty_key(cfg, split: str) -> str:
    return "dataset.source"


def split_label(cfg, split: str) -> str:
    return f"{split} split"
