"""`llmops plan quickstart` wall time against `python -c "import hydra"` (the floor of any Hydra CLI).

    python bench/bench_plan.py

Goal: plan under 1.5 s on 2 cores. Both are measured here, in the same run, as the median of 5.
"""

from __future__ import annotations

import os
import sys
import tempfile

from _util import ROOT, figure, ratio, time_cmd

env = dict(os.environ, PYTHONPATH=str(ROOT), LLMOPS_RECIPE_PATH="")
with tempfile.TemporaryDirectory() as tmp:
    plan = time_cmd([sys.executable, "-m", "llmops.cli", "plan", "quickstart",
                     f"paths.output_root={tmp}"], env=env)
    base = time_cmd([sys.executable, "-c", "import hydra"], env=env)
    val = time_cmd([sys.executable, "-m", "llmops.cli", "validate", "quickstart"], env=env)
figure("plan_quickstart_s", plan, "s")
figure("validate_quickstart_s", val, "s")
figure("import_hydra_s", base, "s")
ratio("plan_time_vs_import_hydra", plan / base)
