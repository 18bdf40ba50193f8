"""The README's main job end to end: `llmops run quickstart` wall time (goal: under 90 s on 2 cores).

    python bench/bench_quickstart.py

Runs it twice in the same run directory: a cold run (empty data cache) and the rerun, which
skips every finished stage. The baseline for the ratio is `python -c "import torch, transformers,
ray"` measured in the same run: the import cost no run of a Ray + transformers job can avoid.
Also prints each stage's share of the cold run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import ROOT, figure, ratio, time_cmd

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "llmops.cli", "run", "quickstart", f"hydra.run.dir={tmp / 'run'}",
           f"paths.cache_dir={tmp / 'cache'}", f"storage.root={tmp / 'models'}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    cold = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    rerun = time.perf_counter() - t0
    st = json.loads((tmp / "run" / "state.json").read_text())["stages"]
    imports = time_cmd([sys.executable, "-c", "import torch, transformers, ray"], repeat=3, env=env)
figure("quickstart_cold_s", cold, "s")
figure("quickstart_rerun_all_skipped_s", rerun, "s")
for name, s in st.items():
    figure(f"quickstart_stage_{name}_s", s.get("seconds") or 0.0, "s")
figure("import_torch_transformers_ray_s", imports, "s")
ratio("quickstart_time_vs_heavy_imports", cold / imports)
