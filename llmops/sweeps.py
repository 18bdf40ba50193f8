"""Sweeps (`llmops run RECIPE -m ...`): per-job status, the summary, `sweep report`, `promote`.

Each job of a sweep writes ``sweep_job.json`` into its job directory (``<sweep dir>/<num>/``):
its number, overrides, status (``completed`` | ``failed`` | ``not run``), error, wall seconds and
the value the job returned (eval perplexity). With ``state.json`` (train metrics) these are all
the summary needs, so ``llmops sweep report DIR`` rebuilds it from the directory at any time.

The summary: ``summary.csv`` (one row per job), a table on the console, ``sweep.png`` (the metric
against each swept parameter) and the best job marked (``best`` column, ``best.json``).

Written by a Hydra callback (``hydra.callbacks.llmops_sweep`` in conf/config.yaml), so it works
with any launcher and sweeper; `llmops run` also writes it when a sweep ends in an error.
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

from llmops.errors import LLMOpsError

log = logging.getLogger("llmops")

JOB_FILE = "sweep_job.json"
SUMMARY_CSV = "summary.csv"
BEST_FILE = "best.json"
PLOT_FILE = "sweep.png"
COLUMNS = ["job", "best", "status", "overrides", "metric", "perplexity", "eval_loss", "tokens_per_s",
           "seconds", "train_seconds", "run_dir", "error"]

# the sweep running in this process (set by the callback)
_current: dict[str, Any] = {}


# ------------------------------------------------------------------------------- hydra callback
try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object  # type: ignore[misc,assignment]


class SweepCallback(_Callback):
    """Records each multirun job's outcome and writes the summary at the end of the sweep."""

    def on_multirun_start(self, config, **kwargs) -> None:
        # the sweep directory exists before the sweeper starts (optuna's sqlite study lives there)
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        storage = OmegaConf_select(config, "hydra.sweeper.storage")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        _current.clear()
        _current.update({"dir": str(config.hydra.sweep.dir), "failed": [], "done": False,
                         "t0": time.time(), "sweep": _sweep_opts(config)})

    def on_job_start(self, config, **kwargs) -> None:
        if _is_multirun(config):
            _current.setdefault("job_t0", {})[int(config.hydra.job.num)] = time.time()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        num = int(config.hydra.job.num)
        t0 = _current.get("job_t0", {}).get(num, time.time())
        failed = job_return.status == JobStatus.FAILED
        err = job_return._return_value if failed else None
        rec = {
            "num": num,
            "overrides": list(config.hydra.overrides.task),
            "status": "failed" if failed else "completed",
            "error": _error_text(err) if failed else None,
            "seconds": round(time.time() - t0, 2),
            "result": None if failed else _jsonable(job_return._return_value),
            "started": t0, "ended": time.time(), "launcher": "in-process",
        }
        if failed and isinstance(err, NotRun):
            rec["status"] = "not run"
        if failed:
            _current.setdefault("failed", []).append(num)
        write_job_record(Path(str(config.hydra.runtime.output_dir)), rec)

    def on_multirun_end(self, config, **kwargs) -> None:
        finish()


def OmegaConf_select(config, key: str):
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(config, key)
    except Exception:
        return None


def _is_multirun(config) -> bool:
    from hydra.types import RunMode

    try:
        return config.hydra.mode == RunMode.MULTIRUN
    except Exception:
        return False


def _sweep_opts(config) -> dict:
    s = config.get("sweep") if hasattr(config, "get") else None
    out = {"fail_fast": False, "metric": "perplexity", "direction": "minimize", "plot": True}
    if s is not None:
        for k in out:
            if k in s:
                out[k] = s[k]
    return out


def _error_text(e: Any) -> str:
    from llmops.config import secrets

    if e is None:
        return ""
    msg = str(e) if isinstance(e, LLMOpsError) else f"{type(e).__name__}: {e}"
    lines = [l.strip() for l in msg.strip().splitlines() if l.strip()]
    return secrets.scrub(" ".join(lines) if lines else type(e).__name__)[:500]


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def write_job_record(job_dir: Path, rec: dict) -> None:
    from llmops.engine import atomic_write_json

    atomic_write_json(Path(job_dir) / JOB_FILE, rec)


class NotRun(LLMOpsError):
    """A job skipped because an earlier job failed and sweep.fail_fast is set."""


def check_fail_fast(cfg) -> None:
    """Called at the start of each multirun job: refuse to run after a failure with fail_fast."""
    if _current.get("failed") and bool(cfg.sweep.fail_fast):
        raise NotRun(f"not run: sweep.fail_fast=true and job {_current['failed'][0]} failed")


def note_failure(num: int) -> None:
    _current.setdefault("failed", []).append(num)


def finish() -> Optional[Path]:
    """Write and print the summary of the sweep running in this process (once)."""
    if not _current or _current.get("done"):
        return None
    _current["done"] = True
    d = Path(_current["dir"])
    if not d.is_dir():
        return None
    opts = _current.get("sweep", {})
    try:
        rows = write_summary(d, metric=str(opts.get("metric", "perplexity")),
                             direction=str(opts.get("direction", "minimize")),
                             plot=bool(opts.get("plot", True)))
    except Exception as e:  # the summary must not hide the sweep's own outcome
        log.warning("could not write the sweep summary in %s: %s", d, e)
        return None
    print(format_table(rows, d))
    return d


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
        jf, sf = jd / JOB_FILE, jd / "state.json"
        if not jf.is_file() and not sf.is_file():
            continue
        rec = _read_json(jf) or {}
        state = _read_json(sf) or {}
        stages = state.get("stages", {})
        train = stages.get("train", {})
        m = (train.get("outputs") or {}).get("metrics") or {}
        overrides = rec.get("overrides")
        if overrides is None:
            overrides = _read_overrides(jd)
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


def _read_json(p: Path) -> Optional[dict]:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_overrides(jd: Path) -> list[str]:
    import yaml

    p = jd / "overrides.yaml"
    try:
        return list(yaml.safe_load(p.read_text()) or [])
    except (OSError, Exception):
        return []


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
    from llmops.engine import atomic_write_json, atomic_write_text

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

    from llmops.engine import atomic_write_text  # noqa: F401  (same atomic rule for binary below)

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
                      _fmt(r["perplexity"]), _fmt(r["tokens_per_s"]), _fmt(r["seconds"]),
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


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _sweep_rows(sweep_dir: Path) -> tuple[list[dict], dict]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise LLMOpsError(f"{sweep_dir}: no such sweep directory")
    best = _read_json(sweep_dir / BEST_FILE) or {}
    metric = best.get("metric", "perplexity")
    direction = best.get("direction", "minimize")
    rows = write_summary(sweep_dir, metric=metric, direction=direction,
                         plot=(sweep_dir / PLOT_FILE).exists() or not best)
    if not rows:
        raise LLMOpsError(f"{sweep_dir}: no job directories (with {JOB_FILE} or state.json); "
                          f"is this the directory of an `llmops run -m` sweep?")
    return rows, {"metric": metric, "direction": direction}


def report_command(sweep_dir: Path) -> int:
    rows, _ = _sweep_rows(sweep_dir)
    print(format_table(rows, Path(sweep_dir)))
    return 0


def promote_command(sweep_dir: Path, overrides: list[str]) -> int:
    """Deploy the best job's model: rerun deploy and smoke_test in its run directory."""
    rows, opts = _sweep_rows(sweep_dir)
    best = next((r for r in rows if r["best"]), None)
    if best is None:
        raise LLMOpsError(f"{sweep_dir}: no completed job with a {opts['metric']}; nothing to promote")
    run_dir = Path(best["run_dir"])
    state = _read_json(run_dir / "state.json") or {}
    if (state.get("stages", {}).get("export", {}) or {}).get("status") != "done":
        raise LLMOpsError(f"{run_dir}: the best job (job {best['job']}) has no finished export stage; "
                          f"run the sweep with export in stages to promote it")
    print(f"promoting job {best['job']} ({' '.join(best['overrides'])}, {opts['metric']} "
          f"{_fmt(best['metric'])}) from {run_dir}")
    from llmops.cli import cmd_run
    from llmops.plan import resume_args

    args = resume_args(run_dir, [*overrides, "stages=[deploy,smoke_test]"])
    # the job's own stage list (often without deploy in a sweep) gives way to the promote stages
    first_stage = next(i for i, a in enumerate(args) if a == "stages=[deploy,smoke_test]")
    args = [a for i, a in enumerate(args) if not (a.startswith("stages=") and i != first_stage)]
    rc = cmd_run(args)
    if rc == 0:
        from llmops.engine import atomic_write_json

        atomic_write_json(Path(sweep_dir) / "promoted.json", {
            "job": best["job"], "run_dir": str(run_dir), "overrides": best["overrides"],
            "metric": opts["metric"], "value": best["metric"],
            "deploy": (_read_json(run_dir / "state.json") or {}).get("stages", {}).get("deploy", {}),
        })
    return rc


def main_report(argv: list[str]) -> int:  # pragma: no cover - convenience
    return report_command(Path(argv[0]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_report(sys.argv[1:]))
