"""Bytes sent to S3 by one small quickstart with storage=s3 (issue 10 point 5): the current code
against the code before the house refactor (commit a5217f5), each against a fresh moto server.

The server is moto's WSGI app in this process behind a counting layer: for every request it adds
the body length (Content-Length) of PUT and POST requests, and the bytes of GET answers. Both runs
use the same command, the same data cache and a bucket created beforehand (the old code has no
preflight to create it). The old code runs from a temporary `git worktree` at a5217f5, removed
after.

Expected: the weights cross once now (rank 0 writes the HF and the Caikit layout straight to the
store); before, the HF folder was uploaded in train, downloaded by the export stage and uploaded
again as caikit/artifacts.

    PYTHONPATH=. python bench/bench_s3_bytes.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from _util import ROOT, figure, ratio

BEFORE = "a5217f5"
ACCESS, SECRET = "AKIABENCHBYTES000000", "bench-bytes-secret"
SMALL = ["training.max_steps=4", "dataset.max_train_blocks=48", "dataset.max_eval_blocks=8"]


class CountingMoto:
    """moto's S3 app on 127.0.0.1:<free port>, counting request and response bytes by method."""

    def __init__(self) -> None:
        from moto.moto_server.threaded_moto_server import (DomainDispatcherApplication, MotoRequestHandler,
                                                           create_backend_app, make_server)

        moto_app = DomainDispatcherApplication(create_backend_app)
        self.sent: Counter = Counter()  # method -> request body bytes
        self.received: Counter = Counter()  # method -> response body bytes
        self.requests: Counter = Counter()
        lock = threading.Lock()

        def app(environ, start_response):
            method = environ["REQUEST_METHOD"]
            n = int(environ.get("CONTENT_LENGTH") or 0)
            body = b"".join(moto_app(environ, start_response))
            with lock:
                self.sent[method] += n
                self.received[method] += len(body)
                self.requests[method] += 1
            return [body]

        self.server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_quickstart(code: Path, work: Path, cache: Path) -> dict:
    import boto3

    srv = CountingMoto()
    try:
        boto3.client("s3", endpoint_url=srv.url, region_name="us-east-1", aws_access_key_id=ACCESS,
                     aws_secret_access_key=SECRET).create_bucket(Bucket="models")
        srv.sent.clear(), srv.received.clear(), srv.requests.clear()
        env = dict(os.environ, PYTHONPATH=str(code), AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_DEFAULT_REGION="us-east-1", RAY_USAGE_STATS_ENABLED="0")
        p = subprocess.run([sys.executable, "-m", "llmops.cli", "run", "quickstart", "storage=s3",
                            "storage.bucket=models", f"storage.endpoint_url={srv.url}", *SMALL,
                            f"hydra.run.dir={work / 'run'}", f"paths.cache_dir={cache}"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        if p.returncode != 0:
            raise SystemExit(f"quickstart with {code} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        return {"sent": sum(srv.sent[m] for m in ("PUT", "POST")), "got": srv.received["GET"],
                "puts": srv.requests["PUT"] + srv.requests["POST"]}
    finally:
        srv.stop()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-s3bytes-"))
    before = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), BEFORE],
                   check=True, capture_output=True)
    try:
        cache = tmp / "cache"  # shared: the data is prepared once, by the first run
        (tmp / "warm").mkdir()
        run_quickstart(ROOT, tmp / "warm", cache)
        (tmp / "after").mkdir()
        (tmp / "old").mkdir()
        after = run_quickstart(ROOT, tmp / "after", cache)
        old = run_quickstart(before, tmp / "old", cache)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    figure("s3_bytes_sent_before", old["sent"], "bytes (PUT/POST bodies)")
    figure("s3_bytes_sent_after", after["sent"], "bytes (PUT/POST bodies)")
    figure("s3_bytes_downloaded_before", old["got"], "bytes (GET answers: export copy + smoke test)")
    figure("s3_bytes_downloaded_after", after["got"], "bytes (GET answers: smoke test)")
    figure("s3_put_requests_before", old["puts"])
    figure("s3_put_requests_after", after["puts"])
    ratio("s3_bytes_after_vs_before", after["sent"] / old["sent"])


if __name__ == "__main__":
    main()
