"""`llmops undeploy RUN_DIR`: delete the Kubernetes objects a run applied (and nothing else)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.run import RunDir


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops undeploy", description=(
        "Delete the Kubernetes objects a run applied (and nothing else)."))
    p.add_argument("run_dir", type=Path)
    return p


def undeploy(run_dir: Path) -> int:
    from llmops.serving import kube
    from llmops.serving.render import run_selector

    rd = RunDir(run_dir)
    state = rd.state()
    cfg = rd.config()  # its cluster.auth picks the credentials
    status = state.status("deploy")
    out = state.outputs("deploy") if status == "done" else None
    if out is not None and out.applied:
        namespace, selector = out.namespace, out.selector
    else:
        # a deploy that failed while applying or waiting may have left objects: find them by
        # the run's labels in the namespace its config names
        applying = cfg is not None and status == "failed" and bool(cfg.get("serving", {}).get("apply"))
        if not applying:
            print(f"llmops undeploy: {run_dir}: the run applied nothing; nothing to delete")
            return 0
        namespace = str(cfg.serving.namespace)
        selector = run_selector(state.run_id, str(state.recipe or cfg.get("recipe")))
    try:
        kinds = kube.delete_run(str(namespace), str(selector), cfg)
    except LLMOpsError as e:
        print(f"llmops undeploy: error: {e}", file=sys.stderr)
        return 1
    if out is not None and out.applied:
        rd.update_outputs("deploy", deleted=True)
    print(f"llmops undeploy: deleted {', '.join(kinds)} labelled {selector} in {namespace}")
    return 0


def main(argv: list[str]) -> int:
    return undeploy(parser().parse_args(argv).run_dir)
