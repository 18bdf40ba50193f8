"""`llmops sweep report SWEEP_DIR`: print a sweep's summary again (rebuilt from its job folders)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmops.run import sweep


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops sweep", description="Sweep summaries.")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("report", help="print a sweep's summary again")
    s.add_argument("sweep_dir", type=Path)
    return p


def report(sweep_dir: Path) -> int:
    rows, rank = sweep.rebuild(sweep_dir)
    print(sweep.format_table(rows, Path(sweep_dir), rank.metric))
    return 0


def main(argv: list[str]) -> int:
    return report(parser().parse_args(argv).sweep_dir)
