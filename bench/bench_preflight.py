"""The storage preflight (issue 14 point 1): seconds from `llmops run` to the error against an
unreachable S3 endpoint and against an endpoint that rejects the credentials, and what the
preflight adds to a small quickstart with storage=s3 (its own time against the whole run's,
measured in the same run: the baseline).

    PYTHONPATH=. python bench/bench_preflight.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import ROOT, figure, ratio

SMALL = ["training.max_steps=4", "dataset.max_train_blocks=48", "dataset.max_eval_blocks=8"]
ACCESS, SECRET = "AKIABENCHPREFLIGHT00", "bench-preflight-secret"


def llmops(work: Path, *args: str, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "llmops.cli", "run", "quickstart", *args,
                        f"hydra.run.dir={work / 'run'}", f"paths.cache_dir={work.parent / 'cache'}"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    return time.perf_counter() - t0, p


def main() -> None:
    from tests.fixtures.s3 import MotoIAM, MotoS3, free_port

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-preflight-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="us-east-1", RAY_USAGE_STATS_ENABLED="0",
               AWS_CONFIG_FILE=str(tmp / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"))
    moto, iam = MotoS3().start(), MotoIAM(tmp / "iam.log").start()
    try:
        def work(name: str) -> Path:
            (tmp / name).mkdir()
            return tmp / name

        # the whole quickstart first: it also fills the data cache the error runs read
        run_s, p = llmops(work("ok"), "storage=s3", "storage.bucket=models", f"storage.endpoint_url={moto.endpoint}",
                          "storage.create_bucket=true", *SMALL, env=env)
        if p.returncode != 0:
            raise SystemExit(p.stdout[-2000:] + p.stderr[-3000:])
        m = re.search(r"storage preflight: .* \(([0-9.]+) s\)", p.stdout + p.stderr)
        pre_s = float(m.group(1)) if m else float("nan")

        unreachable = f"http://127.0.0.1:{free_port()}"
        down_s, p = llmops(work("down"), "storage=s3", "storage.bucket=models", f"storage.endpoint_url={unreachable}",
                           *SMALL, env=env)
        assert p.returncode != 0 and "storage.endpoint_url" in p.stderr, p.stderr[-2000:]
        creds_s, p = llmops(work("creds"), "storage=s3", f"storage.bucket={iam.BUCKET}",
                            f"storage.endpoint_url={iam.endpoint}", *SMALL, env=env)
        assert p.returncode != 0 and "rejected the credentials" in p.stderr, p.stderr[-2000:]
    finally:
        moto.stop()
        iam.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    figure("run_to_error_unreachable_endpoint_s", down_s, "s (llmops run -> exit, data cached)")
    figure("run_to_error_wrong_credentials_s", creds_s, "s (llmops run -> exit, data cached)")
    figure("quickstart_s3_run_s", run_s, "s")
    figure("preflight_s", pre_s, "s")
    ratio("preflight_share_of_quickstart", pre_s / run_s)


if __name__ == "__main__":
    main()
