"""Sweeps (`llmops run RECIPE -m ...`): per-job records, the ranking, the summary files and table.

Each job of a sweep writes ``sweep_job.json`` into its job directory (``<sweep dir>/<num>/``):
its number, overrides, status (``completed`` | ``failed`` | ``not run``), error, wall seconds and
the value the job returned (the train metric ``sweep.metric`` names). With ``state.json`` (train
metrics) these are all the summary needs, so ``llmops sweep report DIR`` rebuilds it from the
directory at any time.

The steps, each a public function:

- `collect` reads one row per job directory (`COLUMNS`), with ``metric`` the ranked metric;
- `ranking` says what is ranked: ``best.json``'s metric and direction, else the jobs' own
  ``sweep`` section (their saved config), else perplexity, minimised;
- `mark_best` stars the best completed job; `swept_keys` are the overrides that vary;
- `summary_csv`, `best_record`, `plot_sweep` and `format_table` render the rows;
- `write_summary` writes ``summary.csv``, ``best.json`` and ``sweep.png``; `rebuild` does it
  again from the job directories with the sweep's own ranking (`sweep report`, `promote`).

Written by a Hydra callback (``hydra.callbacks.llmops_sweep`` in conf/config.yaml, llmops.hydra_app),
so it works with any launcher and sweeper; `llmops run` also writes it when a sweep ends in an error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
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
DEFAULT_METRIC = "perplexity"
DEFAULT_DIRECTION = "minimize"


# ----------------------------------------------------------------------------------- job records
def error_text(e: Any) -> str:
    """A job's error as one line for the summary (secrets scrubbed, at most 500 characters)."""
    from llmops.core import secrets

    if e is None:
        return ""
    msg = str(e) if isinstance(e, LLMOpsError) else f"{type(e).__name__}: {e}"
    lines = [line.strip() for line in msg.strip().splitlines() if line.strip()]
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


def read_json(p: Path) -> Optional[dict]:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class Ranking:
    """What a sweep ranks its jobs by: a train metric and a direction."""

    metric: str = DEFAULT_METRIC
    direction: str = DEFAULT_DIRECTION


def ranking(sweep_dir: Path) -> Ranking:
    """The sweep's ranking: best.json's, else the `sweep` section of the first job's saved config
    (an interrupted sweep has no best.json yet), else perplexity, minimised."""
    best = read_json(Path(sweep_dir) / BEST_FILE)
    if best and best.get("metric"):
        return Ranking(str(best["metric"]), str(best.get("direction") or DEFAULT_DIRECTION))
    for jd in job_dirs(sweep_dir):
        s = (RunDir(jd).config_dict() or {}).get("sweep") or {}
        if s.get("metric"):
            return Ranking(str(s["metric"]), str(s.get("direction") or DEFAULT_DIRECTION))
    return Ranking()


def mark_best(rows: list[dict], direction: str = DEFAULT_DIRECTION) -> Optional[dict]:
    """Star (`best` = `*`) the completed job with the lowest metric (the highest: `maximize`)."""
    ok = [r for r in rows if r["status"] == "completed" and r["metric"] is not None
          and not math.isnan(r["metric"])]
    if not ok:
        return None
    best = (min if direction != "maximize" else max)(ok, key=lambda r: r["metric"])
    best["best"] = "*"
    return best


def best_row(rows: list[dict]) -> Optional[dict]:
    """The starred row (after `mark_best`), or None."""
    return next((r for r in rows if r["best"]), None)


# ------------------------------------------------------------------------------------ collecting
def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep in job order (folders holding sweep_job.json or state.json)."""
    found = []
    for jd in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
                     key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        if (jd / JOB_FILE).is_file() or RunDir(jd).is_run_dir():
            found.append(jd)
    return found


def collect(sweep_dir: Path, metric: str = DEFAULT_METRIC) -> list[dict]:
    """One row per job directory of a sweep; `metric` is the value of the train metric named."""
    return [job_row(jd, metric) for jd in job_dirs(sweep_dir)]


def job_row(jd: Path, metric: str = DEFAULT_METRIC) -> dict:
    """A job directory's row: its record, its train metrics, the ranked metric's value."""
    rd = RunDir(jd)
    rec = read_json(jd / JOB_FILE) or {}
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
    # the job's return value is its own sweep.metric: it stands in for a metric state.json lacks
    returned = returned_metric(rd)
    result = rec.get("result")
    value = m.get(metric)
    if value is None and returned == metric:
        value = result
    perplexity = m.get("perplexity")
    if perplexity is None and returned == "perplexity":
        perplexity = result
    return {
        "job": int(rec["num"]) if "num" in rec else (int(jd.name) if jd.name.isdigit() else jd.name),
        "best": "",
        "status": status,
        "overrides": [o for o in overrides if not o.startswith(("hydra.", "recipe=", "run_id="))],
        "metric": number(value),
        "perplexity": number(perplexity),
        "eval_loss": number(m.get("eval_loss")),
        "tokens_per_s": number(m.get("tokens_per_s")),
        "seconds": number(seconds),
        "train_seconds": number(train.get("seconds")),
        "run_dir": str(jd),
        "error": error or "",
    }


def returned_metric(rd: RunDir) -> str:
    """The metric a job returned: its saved config's `sweep.metric` (perplexity without one)."""
    return str(((rd.config_dict() or {}).get("sweep") or {}).get("metric") or DEFAULT_METRIC)


def number(v: Any) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def parse_override(o: str) -> tuple[str, str]:
    """`key=value` (also `+key=...`, `~key`) -> (key, value)."""
    k, _, v = o.partition("=")
    return k.lstrip("+~"), v


def params(row: dict) -> dict[str, str]:
    """A row's overrides as key -> value."""
    return dict(parse_override(o) for o in row["overrides"])


def swept_keys(rows: list[dict]) -> list[str]:
    """Override keys whose value differs between jobs (or that only some jobs have), in
    first-seen order."""
    values: dict[str, set] = {}
    for r in rows:
        for k, v in params(r).items():
            values.setdefault(k, set()).add(v)
    present = [k for k in values if all(k in params(r) for r in rows)]
    return [k for k in values if len(values[k]) > 1 or k not in present]


# ------------------------------------------------------------------------------------- rendering
def summary_csv(rows: list[dict], keys: list[str]) -> str:
    """summary.csv: `COLUMNS` with one column per swept key after `status`."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS[:3] + keys + COLUMNS[3:])
    for r in rows:
        p = params(r)
        w.writerow([cell(r[c]) for c in COLUMNS[:3]] + [p.get(k, "") for k in keys]
                   + [cell(r[c]) for c in COLUMNS[3:]])
    return buf.getvalue()


def best_record(rows: list[dict], rank: Ranking) -> dict:
    """best.json: the ranking, the best job and the counts."""
    best = best_row(rows)
    return {
        "metric": rank.metric, "direction": rank.direction,
        "best": {k: best[k] for k in ("job", "overrides", "metric", "run_dir")} if best else None,
        "jobs": len(rows), "failed": sum(r["status"] == "failed" for r in rows),
        "not_run": sum(r["status"] == "not run" for r in rows),
    }


def cell(v: Any) -> str:
    if isinstance(v, list):
        return " ".join(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def plot_sweep(rows: list[dict], keys: list[str], out: Path, metric: str) -> None:
    """The metric against each swept parameter (log axis over more than 20x); the best job is a
    red star. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmops.core.io import atomic_write_bytes

    keys = keys or ["job"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        xs, ys, best = [], [], None
        for r in rows:
            if r["metric"] is None:
                continue
            x = r["job"] if k == "job" else params(r).get(k)
            xs.append(x)
            ys.append(r["metric"])
            if r["best"]:
                best = (x, r["metric"])
        if xs and all(number(x) is not None for x in xs):
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def format_table(rows: list[dict], sweep_dir: Path, metric: Optional[str] = None) -> str:
    """The console table: counts, a line per job, each failed job's error, the best job.
    `metric` (default: the sweep's ranking) gets its own column unless it is one shown anyway."""
    metric = metric or ranking(sweep_dir).metric
    keys = swept_keys(rows)
    extra = [] if metric in ("perplexity", "tokens_per_s") else [metric]
    head = ["job", "", *keys, *extra, "perplexity", "tokens/s", "seconds", "status", "error"]
    lines = []
    for r in rows:
        p = params(r)
        lines.append([str(r["job"]), r["best"], *[p.get(k, "") for k in keys],
                      *[fmt(r["metric"]) for _ in extra], fmt(r["perplexity"]),
                      fmt(r["tokens_per_s"]), fmt(r["seconds"]), r["status"], (r["error"] or "")[:60]])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = [f"sweep {sweep_dir}: {len(rows)} job(s), "
           f"{sum(r['status'] == 'completed' for r in rows)} completed, "
           f"{sum(r['status'] == 'failed' for r in rows)} failed, "
           f"{sum(r['status'] == 'not run' for r in rows)} not run"]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    for r in rows:
        if r["status"] == "failed" and r["error"]:
            out.append(f"job {r['job']} failed: {r['error']}")
    best = best_row(rows)
    if best:
        shown = [o for o in best["overrides"] if parse_override(o)[0] in keys] or best["overrides"]
        out.append(f"best (*): job {best['job']} {' '.join(shown)} ({metric} {fmt(best['metric'])}) "
                   f"-> {best['run_dir']}")
    out.append(f"summary: {sweep_dir / SUMMARY_CSV}" + (f", plot: {sweep_dir / PLOT_FILE}"
                                                          if (sweep_dir / PLOT_FILE).exists() else ""))
    return "\n".join(out)


def fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


# -------------------------------------------------------------------------------------- writing
def write_summary(sweep_dir: Path, *, metric: str = DEFAULT_METRIC, direction: str = DEFAULT_DIRECTION,
                  plot: bool = True) -> list[dict]:
    """summary.csv, best.json and sweep.png in `sweep_dir`; returns the rows (best starred)."""
    from llmops.core.io import atomic_write_json, atomic_write_text

    sweep_dir = Path(sweep_dir)
    rank = Ranking(metric, direction)
    rows = collect(sweep_dir, metric)
    mark_best(rows, direction)
    keys = swept_keys(rows)
    atomic_write_text(sweep_dir / SUMMARY_CSV, summary_csv(rows, keys))
    atomic_write_json(sweep_dir / BEST_FILE, best_record(rows, rank))
    if plot and rows:
        try:
            plot_sweep(rows, keys, sweep_dir / PLOT_FILE, metric)
        except Exception as e:  # a plot problem must not lose the csv
            log.warning("could not draw %s: %s", sweep_dir / PLOT_FILE, e)
    return rows


def rebuild(sweep_dir: Path) -> tuple[list[dict], Ranking]:
    """The summary again from the job directories, ranked as the sweep ranks (`ranking`)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise LLMOpsError(f"{sweep_dir}: no such sweep directory")
    had_summary = (sweep_dir / BEST_FILE).is_file()
    rank = ranking(sweep_dir)
    rows = write_summary(sweep_dir, metric=rank.metric, direction=rank.direction,
                         plot=(sweep_dir / PLOT_FILE).exists() or not had_summary)
    if not rows:
        raise LLMOpsError(f"{sweep_dir}: no job directories (with {JOB_FILE} or state.json); "
                          f"is this the directory of an `llmops run -m` sweep?")
    return rows, rank
