"""Sweeps (`llmops run RECIPE -m ...`): per-job status, the summary, `sweep report`, `promote`.

Each job of a sweep writes ``sweep_job.json`` into its job directory (``<sweep dir>/<num>/``):
its number, overrides, status (``completed`` | ``failed`` | ``not run``), error, wall seconds and
the value the job returned (eval perplexity). With ``state.json`` (train metrics) these are all
the summary needs, so ``llmops sweep report DIR`` rebuilds it from the directory at any time.

The summary: ``summary.csv`` (one row per job), a table on the console, ``sweep.png`` (the metric
against each swept parameter) and the best job marked (``best`` column, ``best.json``).

Written by a Hydra callback (``hydra.callbacks.llmops_sweep`` in conf/config.yaml, llmops.hydra_app),
so it works with any launcher and sweeper; `llmops run` also writes it when a sweep ends in an error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from llmops.core.errors import LLMOpsError
from llmops.run.rundir import SWEEP_JOB_FILE, RunDir

log = logging.getLogger("llmops")

JOB_FILE = SWEEP_JOB_FILE
SUMMARY_CSV = "summary.csv"
BEST_FILE = "best.json"
PLOT_FILE = "sweep.png"
COLUMNS = ["job", "best", "status", "overrides", "metric", "perplexity", "eval_loss", "tokens_per_s",
           "seconds", "train_seconds", "run_dir", "error"]



def error_text(e: Any) -> str:
    from llmops.core import secrets

    if e is None:
        return ""
    msg = str(e) if isinstance(e, LLMOpsError) else f"{type(e).__name__}: {e}"
    lines = [l.strip() for l in msg.strip().splitlines() if l.strip()]
    return secrets.scrub(" ".join(lines) if lines else type(e).__name__)[:500]


def jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def write_job_record(job_dir: Path, rec: dict) -> None:
    from llmops.core.io import atomic_write_json

    atomic_write_json(Path(job_dir) / JOB_FILE, rec)



# ------------------------------------------------------------------------------------ collecting
def _parse_override(o: str) -> tuple[str, str]:
    k, _, v = o.partition("=")
    return k.lstrip("+~"), v


def collect(sweep_dir: Path, metric: str = "perplexity") -> list[dict]:
    """One row per job directory of a sweep (a folder holding sweep_job.json or state.json)."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for jd in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
                     key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        rd = RunDir(jd)
        jf = jd / JOB_FILE
        if not jf.is_file() and not rd.is_run_dir():
            continue
        rec = read_json(jf) or {}
        try:
            state = rd.maybe_state()
        except LLMOpsError:  # a broken state.json: the job record alone
            state = None
        stages = state.data["stages"] if state is not None else {}
        train = stages.get("train", {})
        m = state.outputs("train").metrics if state is not None and state.status("train") == "done" else {}
        overrides = rec.get("overrides")
        if overrides is None:
            overrides = rd.overrides()
        status = rec.get("status")
        if status is None:
            failed = [n for n, s in stages.items() if s.get("status") == "failed"]
            status = "failed" if failed else ("completed" if stages else "unknown")
        error = rec.get("error")
        if status == "failed" and not error:
            error = next((f"stage {n}: {s.get('error')}" for n, s in stages.items()
                          if s.get("status") == "failed"), "")
        seconds = rec.get("seconds")
        if seconds is None:
            seconds = round(sum(float(s.get("seconds") or 0) for s in stages.values()), 2) or None
        value = m.get(metric)
        if value is None and metric == "perplexity":
            value = rec.get("result")
        rows.append({
            "job": int(rec["num"]) if "num" in rec else (int(jd.name) if jd.name.isdigit() else jd.name),
            "best": "",
            "status": status,
            "overrides": [o for o in overrides if not o.startswith(("hydra.", "recipe=", "run_id="))],
            "metric": _num(value),
            "perplexity": _num(m.get("perplexity", rec.get("result"))),
            "eval_loss": _num(m.get("eval_loss")),
            "tokens_per_s": _num(m.get("tokens_per_s")),
            "seconds": _num(seconds),
            "train_seconds": _num(train.get("seconds")),
            "run_dir": str(jd),
            "error": error or "",
        })
    return rows


def read_json(p: Path) -> Optional[dict]:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _num(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def swept_keys(rows: list[dict]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    values: dict[str, set] = {}
    order: list[str] = []
    for r in rows:
        for o in r["overrides"]:
            k, v = _parse_override(o)
            if k not in values:
                values[k] = set()
                order.append(k)
            values[k].add(v)
    present = [k for k in order if all(any(_parse_override(o)[0] == k for o in r["overrides"]) for r in rows)]
    return [k for k in order if len(values[k]) > 1 or (k not in present)]


def mark_best(rows: list[dict], direction: str = "minimize") -> Optional[dict]:
    ok = [r for r in rows if r["status"] == "completed" and r["metric"] is not None
          and not math.isnan(r["metric"])]
    if not ok:
        return None
    best = (min if direction != "maximize" else max)(ok, key=lambda r: r["metric"])
    best["best"] = "*"
    return best


def write_summary(sweep_dir: Path, *, metric: str = "perplexity", direction: str = "minimize",
                  plot: bool = True) -> list[dict]:
    """summary.csv, best.json and sweep.png in `sweep_dir`; returns the rows."""
    from llmops.core.io import atomic_write_json, atomic_write_text

    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir, metric)
    best = mark_best(rows, direction)
    keys = swept_keys(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS[:3] + keys + COLUMNS[3:])
    for r in rows:
        params = dict(_parse_override(o) for o in r["overrides"])
        w.writerow([_cell(r[c]) for c in COLUMNS[:3]] + [params.get(k, "") for k in keys]
                   + [_cell(r[c]) for c in COLUMNS[3:]])
    atomic_write_text(sweep_dir / SUMMARY_CSV, buf.getvalue())
    atomic_write_json(sweep_dir / BEST_FILE, {
        "metric": metric, "direction": direction,
        "best": {k: best[k] for k in ("job", "overrides", "metric", "run_dir")} if best else None,
        "jobs": len(rows), "failed": sum(r["status"] == "failed" for r in rows),
        "not_run": sum(r["status"] == "not run" for r in rows),
    })
    if plot and rows:
        try:
            plot_sweep(rows, keys, sweep_dir / PLOT_FILE, metric)
        except Exception as e:  # a plot problem must not lose the csv
            log.warning("could not draw %s: %s", sweep_dir / PLOT_FILE, e)
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return " ".join(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def plot_sweep(rows: list[dict], keys: list[str], out: Path, metric: str) -> None:
    """The metric against each swept parameter; the best job is a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmops.core.io import atomic_write_text  # noqa: F401  (same atomic rule for binary below)

    keys = keys or ["job"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        xs, ys, best = [], [], None
        for r in rows:
            if r["metric"] is None:
                continue
            params = dict(_parse_override(o) for o in r["overrides"])
            x = r["job"] if k == "job" else params.get(k)
            xs.append(x)
            ys.append(r["metric"])
            if r["best"]:
                best = (x, r["metric"])
        numeric = all(_num(x) is not None for x in xs)
        if numeric and xs:
            xv = [float(x) for x in xs]
            ax.scatter(xv, ys, color="tab:blue")
            if min(xv) > 0 and max(xv) / min(xv) > 20:
                ax.set_xscale("log")
            if best:
                ax.scatter([float(best[0])], [best[1]], marker="*", s=250, color="tab:red", label="best")
        else:
            cats = sorted({str(x) for x in xs})
            ax.scatter([cats.index(str(x)) for x in xs], ys, color="tab:blue")
            ax.set_xticks(range(len(cats)), cats)
            if best:
                ax.scatter([cats.index(str(best[0]))], [best[1]], marker="*", s=250, color="tab:red",
                           label="best")
        ax.set_xlabel(k)
        ax.set_ylabel(metric)
        if best:
            ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out)


def format_table(rows: list[dict], sweep_dir: Path) -> str:
    keys = swept_keys(rows)
    head = ["job", "", *keys, "perplexity", "tokens/s", "seconds", "status", "error"]
    lines = []
    for r in rows:
        params = dict(_parse_override(o) for o in r["overrides"])
        lines.append([str(r["job"]), r["best"], *[params.get(k, "") for k in keys],
                      fmt(r["perplexity"]), fmt(r["tokens_per_s"]), fmt(r["seconds"]),
                      r["status"], (r["error"] or "")[:60]])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = [f"sweep {sweep_dir}: {len(rows)} job(s), "
           f"{sum(r['status'] == 'completed' for r in rows)} completed, "
           f"{sum(r['status'] == 'failed' for r in rows)} failed, "
           f"{sum(r['status'] == 'not run' for r in rows)} not run"]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for l in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(l, widths)).rstrip())
    for r in rows:
        if r["status"] == "failed" and r["error"]:
            out.append(f"job {r['job']} failed: {r['error']}")
    best = next((r for r in rows if r["best"]), None)
    if best:
        shown = [o for o in best["overrides"] if _parse_override(o)[0] in keys] or best["overrides"]
        out.append(f"best (*): job {best['job']} {' '.join(shown)} -> {best['run_dir']}")
    out.append(f"summary: {sweep_dir / SUMMARY_CSV}" + (f", plot: {sweep_dir / PLOT_FILE}"
                                                          if (sweep_dir / PLOT_FILE).exists() else ""))
    return "\n".join(out)


def fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def sweep_rows(sweep_dir: Path) -> tuple[list[dict], dict]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise LLMOpsError(f"{sweep_dir}: no such sweep directory")
    best = read_json(sweep_dir / BEST_FILE) or {}
    metric = best.get("metric", "perplexity")
    direction = best.get("direction", "minimize")
    rows = write_summary(sweep_dir, metric=metric, direction=direction,
                         plot=(sweep_dir / PLOT_FILE).exists() or not best)
    if not rows:
        raise LLMOpsError(f"{sweep_dir}: no job directories (with {JOB_FILE} or state.json); "
                          f"is this the directory of an `llmops run -m` sweep?")
    return rows, {"metric": metric, "direction": direction}
