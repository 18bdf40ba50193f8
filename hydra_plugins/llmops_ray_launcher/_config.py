"""`hydra/launcher=ray`: the launcher's config (ConfigStore), nothing heavy.

Hydra's plugin scanner skips modules whose names start with `_`; `ray_launcher` imports this one,
so the config is registered when Hydra scans the plugin.
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.llmops_ray_launcher.ray_launcher.RayLauncher"
    # Ray that schedules the jobs: null starts an embedded one here; "auto" or ray://HOST:10001
    # joins an existing cluster (its nodes need llmops installed and the outputs folder shared)
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # embedded Ray: CPUs it offers (null: this machine's)
    cpus_per_job: Optional[int] = None  # null: cluster.num_workers * cluster.cpus_per_worker
    max_parallel: Optional[int] = None  # at most this many jobs at once (null: as many as fit)
    job_timeout_s: int = 0  # 0: no limit; a job over it is stopped and marked failed


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf,
                             provider="llmops")
