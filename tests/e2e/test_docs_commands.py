"""Every `llmops` command in README.md and docs/*.md, run as a new user would: exactly as written
(only the locations of ../shared/data, endpoints and placeholders filled in), one document at a
time in a fresh working directory outside the repository, with an empty HOME (so an empty data
cache) and no run directory.

Conventions the documents follow (see docs/README or the top of each page):
- `# needs: WHAT` at the end of a line: it cannot run here (a live cluster, the hub). A
  `llmops run` line so marked is planned instead (`llmops plan` with the same arguments); other
  marked lines are listed as not run.
- `# exit N`: the command is expected to end with exit status N (default 0).
- `outputs/<run_id>` (or `outputs/RUN_ID`): the run directory of the last `llmops run` before it.
- `llmops serve ...` starts in the background; the lines after it talk to it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|shell|console)?\s*$")


def doc_commands(path: Path) -> list[str]:
    """The `llmops` command lines of a document's bash blocks, continuations joined."""
    out, in_block, pending = [], False, ""
    for line in path.read_text().splitlines():
        m = FENCE.match(line.strip())
        if m:
            in_block = not in_block  # a bare fence counts: only `llmops ...` lines are taken
            pending = ""
            continue
        if not in_block:
            continue
        s = line.strip()
        if s.startswith("$ "):
            s = s[2:]
        if pending:
            s = pending + " " + s
            pending = ""
        if s.endswith("\\"):
            pending = s[:-1].strip()
            continue
        if s.startswith("llmops ") or " && llmops " in s:
            out.append(s)
    return out


def split_comment(line: str) -> tuple[str, str]:
    """(command, trailing comment) — a '#' that starts a shell comment (after whitespace)."""
    m = re.search(r"\s#\s", line + " ")
    if not m:
        return line.strip(), ""
    return line[: m.start()].strip(), line[m.end():].strip()


def _latest_run(cwd: Path) -> str:
    runs = [p for p in (cwd / "outputs").glob("*/state.json")]
    if not runs:
        raise AssertionError("a command refers to a run directory, but no `llmops run` made one yet")
    return str(max(runs, key=lambda p: p.stat().st_mtime).parent.relative_to(cwd))


def fill(cmd: str, cwd: Path) -> str:
    if "../shared/data" in cmd:
        if not (SHARED / "data").is_dir():
            pytest.skip("../shared/data is absent")
        cmd = cmd.replace("../shared/data", str(SHARED / "data"))
    if re.search(r"outputs/(<run_id>|RUN_ID|quickstart-\.\.\.)", cmd):
        cmd = re.sub(r"outputs/(<run_id>|RUN_ID|quickstart-\.\.\.)", _latest_run(cwd), cmd)
    cmd = cmd.replace("[--port 8000]", "--port 0")
    return cmd


def as_plan(cmd: str) -> str:
    """A `llmops run` line planned instead of run: the same recipe and overrides."""
    args = shlex.split(cmd)
    i = args.index("run")
    rest = [a for a in args[i + 1:] if a not in ("-m", "--multirun")]
    return shlex.join(["llmops", "plan", *rest])


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "AWS_", "KUBECONFIG"))}
    env.update({"HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    return env


def _run_doc(doc: Path, tmp_path: Path) -> list[str]:
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = _env(home)
    report, background = [], []
    try:
        for line in doc_commands(doc):
            cmd, comment = split_comment(line)
            expect = int(m.group(1)) if (m := re.search(r"\bexit (\d+)", comment)) else 0
            how = "ran"
            if comment.startswith("needs"):
                if re.match(r"^llmops run\b", cmd):
                    cmd, how = as_plan(cmd), f"planned (not run here: {comment})"
                else:
                    report.append(f"not run here ({comment}): {line}")
                    continue
            if "cluster=kubeflow" in cmd and importlib.util.find_spec("kubeflow") is None:
                # the Kubeflow SDK is not in the test extra (it pins kubernetes<36); .ci/run installs it
                report.append(f"not run here (no Kubeflow SDK installed): {line}")
                continue
            if cmd.startswith(("pip ", "python ")):
                continue  # the set-up itself (CI runs it; tests/e2e/test_quickstart.py runs the main job)
            cmd = fill(cmd, cwd)
            if cmd.startswith("llmops serve "):
                p = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, env=env, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                background.append(p)
                marker = cwd / shlex.split(cmd)[2] / "serve.json"
                deadline = time.time() + 120
                while not marker.is_file():
                    assert p.poll() is None, f"{doc.name}: `{line}` ended: {p.stdout.read()[-2000:]}"
                    assert time.time() < deadline, f"{doc.name}: `{line}` did not start serving"
                    time.sleep(0.5)
                report.append(f"serving: {line}")
                continue
            r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=900)
            assert r.returncode == expect, (
                f"{doc.name}: `{line}` (ran `{cmd}` in {cwd}) exited {r.returncode}, the page says "
                f"{expect}:\n{(r.stdout + r.stderr)[-4000:]}")
            report.append(f"{how}: {line}")
    finally:
        for p in background:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:  # it ended already (the assertion above says why)
                pass
            p.wait(timeout=30)
    return report


def test_every_page_has_its_commands_found():
    found = {d.name: len(doc_commands(d)) for d in DOCS}
    assert found["README.md"] >= 8, found


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_doc_commands_run_as_written(doc, tmp_path):
    if not doc_commands(doc):
        pytest.skip(f"{doc.name} has no llmops command")
    report = _run_doc(doc, tmp_path)
    print("\n".join(report))
    assert any(r.startswith(("ran:", "planned")) for r in report)
