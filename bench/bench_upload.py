"""Upload throughput to a loopback S3 endpoint: llmops S3Store.put_dir vs a boto3 upload_file loop.

    PYTHONPATH=. python bench/bench_upload.py [--mb 128] [--reps 2]

Starts moto's S3 server (``moto_server``) in a subprocess on 127.0.0.1, writes a model-like folder
(two safetensors shards, tokenizer and config files) and uploads it, in the same run:

* baseline: one thread looping over the files with ``client.upload_file`` (boto3's managed
  transfer with its default TransferConfig: multipart above 8 MB, up to 10 threads per file) -
  what ``aws s3 cp --recursive`` does file by file;
* llmops: ``S3Store.put_dir`` with the storage=s3 defaults (hashing included: the sha256 of every
  file is computed for the manifest).

Then an interrupted upload: a child process runs put_dir through a TCP proxy; once half the bytes
have passed it, the proxy cuts every connection and the child is killed (SIGKILL), as when a pod
dies with its network. The rerun's bytes sent are compared with the full size and with what was
missing on the server.
Each phase gets a fresh server state (moto keeps objects in memory).
Prints ``figure NAME=VALUE UNIT`` and ``ratio NAME=VALUE`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACCESS, SECRET = "AKIABENCHUPLOAD00001", "bench-secret-not-real"
MiB = 1024 * 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", data=b"", method="POST"), timeout=30)


def make_model(root: Path, total_mb: int) -> int:
    """Two safetensors shards (about 55% / 40%) plus tokenizer/config files."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = os.urandom
    big = total_mb * MiB
    (root / "model-00001-of-00002.safetensors").write_bytes(rnd(int(big * 0.55)))
    (root / "model-00002-of-00002.safetensors").write_bytes(rnd(int(big * 0.40)))
    (root / "tokenizer.json").write_bytes(rnd(int(big * 0.03)))
    (root / "vocab.json").write_bytes(rnd(int(big * 0.015)))
    (root / "merges.txt").write_bytes(rnd(int(big * 0.005)))
    for name in ("config.json", "generation_config.json", "special_tokens_map.json",
                 "tokenizer_config.json", "model.safetensors.index.json"):
        (root / name).write_text(json.dumps({"name": name, "pad": "x" * 500}))
    return sum(p.stat().st_size for p in root.iterdir())


def client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET)


def store(url: str, bucket: str):
    from llmops.storage.s3 import S3Settings, S3Store

    return S3Store(S3Settings(bucket=bucket, endpoint_url=url, region="us-east-1", addressing_style="path",
                              create_bucket=True))  # every other knob: the conf/storage/s3.yaml defaults


def run_baseline(url: str, src: Path, bucket: str, prefix: str, server_pid: int) -> tuple[float, float]:
    """(wall seconds, client + server CPU seconds)"""
    c = client(url)
    c.create_bucket(Bucket=bucket)  # client made and connected before the clock starts
    cpu0, t0 = time.process_time() + cpu_seconds(server_pid), time.perf_counter()
    for p in sorted(src.rglob("*")):
        if p.is_file():
            c.upload_file(str(p), bucket, prefix + p.relative_to(src).as_posix())
    return time.perf_counter() - t0, time.process_time() + cpu_seconds(server_pid) - cpu0


def run_llmops(url: str, src: Path, bucket: str, prefix: str, server_pid: int) -> tuple[float, float]:
    st = store(url, bucket)
    st.client.list_buckets()  # client made and connected before the clock starts, as for the baseline
    cpu0, t0 = time.process_time() + cpu_seconds(server_pid), time.perf_counter()
    st.put_dir(src, f"s3://{bucket}/{prefix}")
    dt, cpu = time.perf_counter() - t0, time.process_time() + cpu_seconds(server_pid) - cpu0
    assert st.last_stats.bytes_sent == st.last_stats.bytes_total
    return dt, cpu


def stored_bytes(url: str, bucket: str, prefix: str) -> int:
    c = client(url)
    try:
        n = sum(o["Size"] for o in c.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))
        for u in c.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
            n += sum(p["Size"] for p in c.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
                     .get("Parts", []))
        return n
    except Exception:
        return 0


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 that counts bytes sent to the server and can cut every connection
    at once, as a network failure or a killed pod would: requests in flight never arrive whole."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target_port = target_port
        self.sent = 0
        self.lock = threading.Lock()
        self.socks: list = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.cut_done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.cut_done:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.socks += [c, s]
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _pump(self, a, b, upstream: bool) -> None:
        try:
            while not self.cut_done:
                data = a.recv(1 << 20)
                if not data:
                    break
                if upstream:
                    with self.lock:
                        self.sent += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        self.cut_done = True
        self.listener.close()
        with self.lock:
            for x in self.socks:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


CHILD = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from bench.bench_upload import store
store({url!r}, {bucket!r}).put_dir(Path({src!r}), "s3://{bucket}/{prefix}")
"""


def run_resume(url: str, src: Path, total: int) -> tuple[int, int, float]:
    """Upload through a proxy, cut the network and kill the uploader at half, then rerun."""
    from urllib.parse import urlparse

    bucket, prefix = "bench-resume", "models/run/hf/"
    proxy = CuttableProxy(urlparse(url).port)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(
        root=str(ROOT), url=f"http://127.0.0.1:{proxy.port}", bucket=bucket, src=str(src), prefix=prefix)],
        env=env, stderr=subprocess.DEVNULL)  # its retry warnings after the cut are expected
    while child.poll() is None and proxy.sent < total // 2:
        time.sleep(0.005)
    proxy.cut()
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.5)
    at_kill = stored_bytes(url, bucket, prefix)
    st = store(url, bucket)
    assert not st.exists(f"s3://{bucket}/{prefix}"), "the cut upload must not look complete"
    st.put_dir(src, f"s3://{bucket}/{prefix}")
    assert st.exists(f"s3://{bucket}/{prefix}")
    return st.last_stats.bytes_sent, at_kill, st.last_stats.seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=128, help="size of the model folder in MB")
    ap.add_argument("--reps", type=int, default=3, help="timed uploads per method (best is kept)")
    a = ap.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
            src = Path(tmp) / "model"
            total = make_model(src, a.mb)
            print(f"# {total / 1e6:.1f} MB in {len(list(src.iterdir()))} files; moto server at {url}")
            base, mine, base_cpu, mine_cpu = [], [], [], []
            for i in range(a.reps):  # alternate, so that both see the same machine state
                reset(url)
                w, c = run_baseline(url, src, f"bench-base-{i}", "models/run/hf/", proc.pid)
                base.append(w)
                base_cpu.append(c)
                reset(url)
                w, c = run_llmops(url, src, f"bench-llmops-{i}", "models/run/hf/", proc.pid)
                mine.append(w)
                mine_cpu.append(c)
                print(f"# rep {i}: baseline {base[-1]:.2f} s ({base_cpu[-1]:.2f} CPU s), "
                      f"llmops {mine[-1]:.2f} s ({mine_cpu[-1]:.2f} CPU s); load average "
                      f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            reset(url)
            resent, at_kill, resume_s = run_resume(url, src, total)
            reset(url)
    finally:
        proc.terminate()
        proc.wait(10)
    mb = total / 1e6
    b_mbps, l_mbps = mb / min(base), mb / min(mine)
    print(f"figure upload_baseline_MBps={b_mbps:.1f} MB/s")
    print(f"figure upload_llmops_MBps={l_mbps:.1f} MB/s")
    print(f"ratio upload_speed_vs_boto3_single_thread={l_mbps / b_mbps:.2f}")
    # client + server CPU per upload: steadier than wall time on a shared machine
    print(f"figure upload_cpu_baseline_s={min(base_cpu):.2f} s")
    print(f"figure upload_cpu_llmops_s={min(mine_cpu):.2f} s")
    print(f"# upload cut after half the bytes: {at_kill / 1e6:.1f} MB of {mb:.1f} MB stored; "
          f"rerun took {resume_s:.2f} s")
    print(f"figure resume_bytes_sent={resent} bytes")
    print(f"figure resume_full_bytes={total} bytes")
    print(f"ratio resume_bytes_vs_full={resent / total:.3f}")
    print(f"ratio resume_bytes_vs_missing={resent / max(1, total - at_kill):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
