"""A minimal Hydra app for the resumable Optuna sweeper: minimise (x - 0.3)^2.

Each job writes `job.json` (its number, pid, x) into its job directory. In job N:
`interrupt_at=N` stops the sweep the way Ctrl-C does; `kill_at=N` kills the sweep process
(SIGKILL: nothing is cleaned up); `fail_at=N` raises; `none_at=N` returns None; `nan_at=N`
returns nan.
"""

import json
import os
import signal
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="optuna_app")
def main(cfg):
    hc = HydraConfig.get()
    num = hc.job.num
    Path(hc.runtime.output_dir, "job.json").write_text(json.dumps(
        {"num": num, "pid": os.getpid(), "x": cfg.x, "n": cfg.n, "opt": cfg.opt}))
    if num == cfg.interrupt_at:
        raise KeyboardInterrupt
    if num == cfg.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if num == cfg.fail_at:
        raise RuntimeError(f"job {num} failed on purpose")
    if num == cfg.none_at:
        return None
    if num == cfg.nan_at:
        return float("nan")
    return (float(cfg.x) - 0.3) ** 2


if __name__ == "__main__":
    main()
