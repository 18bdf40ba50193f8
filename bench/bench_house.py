"""The house in figures: import cycles among llmops modules (function-level imports included), the
largest cycle, the longest modules. Reads source files with `ast` (imports nothing), so it can
measure any checkout: `python bench/bench_house.py [TREE]` (default: this repository).

Prints `figure NAME=VALUE UNIT` lines; compare two trees by running it on each.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted((root / "llmops").rglob("*.py")):
        parts = p.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(m: str) -> str:
        while m and m not in mods:
            m = m.rsplit(".", 1)[0] if "." in m else ""
        return m

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    head = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(head + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                r = resolve(t) if t.startswith("llmops") else ""
                if r and r != name:
                    graph[name].add(r)
    return graph


def cycles(graph: dict[str, set[str]], nodes) -> list[list[str]]:
    index, low, on, stack, out = {}, {}, set(), [], []
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1])
    mods = modules(root)
    found = cycles(import_graph(mods), mods)
    print(f"figure modules={len(mods)} modules")
    print(f"figure import_cycles={len(found)} cycles")
    print(f"figure largest_cycle={max((len(c) for c in found), default=0)} modules")
    for c in found:
        print(f"# cycle of {len(c)}: {' '.join(c)}")
    lengths = sorted(((len(p.read_text().splitlines()), n) for n, p in mods.items()), reverse=True)
    for n_lines, name in lengths[:5]:
        print(f"figure lines_{name}={n_lines} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
