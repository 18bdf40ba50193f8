"""A minimal Hydra app for the resumable Optuna sweeper: minimise (x - 0.3)^2.

`interrupt_at=N` stops the sweep the way Ctrl-C does, inside job N.
"""

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="optuna_app")
def main(cfg) -> float:
    if HydraConfig.get().job.num == cfg.interrupt_at:
        raise KeyboardInterrupt
    return (float(cfg.x) - 0.3) ** 2


if __name__ == "__main__":
    main()
