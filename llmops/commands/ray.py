"""`llmops ray status | stop`: the warm local Ray head that `cluster=local` keeps between runs.

Only the head llmops started (its record in `$LLMOPS_RAY_HOME/head.json`, default
`~/.cache/llmops/ray`) is reported or stopped; no other Ray on the machine is touched.
"""

from __future__ import annotations

import argparse
import json
import time


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops ray", description=(
        "The warm local Ray head of cluster=local: status, or stop it (only the head llmops "
        "started; other Ray instances on this machine are left alone)."))
    p.add_argument("action", choices=["status", "stop"])
    p.add_argument("--json", action="store_true", help="status as JSON")
    return p


def _ago(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status(as_json: bool) -> int:
    from llmops.clusters import warm_ray

    st = warm_ray.status()
    if as_json:
        print(json.dumps(st, indent=2))
        return 0
    if not st["running"]:
        extra = f" (stale record: {st['problem']})" if st.get("problem") else ""
        print(f"llmops ray: no warm Ray head running{extra}; the next `cluster=local` run starts one")
        return 0
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["started_at"]))
    idle = (f"in use by {len(st['drivers'])} llmops driver(s) (pids {', '.join(map(str, st['drivers']))})"
            if st["drivers"] else f"idle for {_ago(st['idle_s'])}")
    stop_after = (f"stops after {st['idle_timeout_s']} s idle" if st["idle_timeout_s"] > 0
                  else "no idle timeout")
    print(f"llmops ray: warm Ray head at {st['address']}, {st['num_cpus']} CPU(s)\n"
          f"  since {since} (up {_ago(st['up_s'])}), {idle}; {stop_after}\n"
          f"  pid {st['pid']}, temp dir {st['temp_dir']}, session {st['session']}\n"
          f"  record {st['record']}")
    return 0


def stop() -> int:
    from llmops.clusters import warm_ray

    head, pids = warm_ray.stop()
    if head is None:
        print("llmops ray: no warm Ray head started by llmops; nothing stopped")
        return 0
    print(f"llmops ray: stopped the warm Ray head at {head.gcs_address} "
          f"({len(pids)} process(es) of {head.temp_dir})")
    return 0


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    return status(a.json) if a.action == "status" else stop()
