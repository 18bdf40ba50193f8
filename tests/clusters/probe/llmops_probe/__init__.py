"""A small training stand-in shipped to the Ray job in tests: real Ray tasks, real files.

Behaviour is picked by cfg.training.max_steps: -1 trains; 999 dies mid-run; 777 runs for a minute.
"""

import os
import time


def fit(cfg, task):
    """Returns the train stage's outputs as JSON, with what the tests check under metrics.probe."""
    import ray
    from omegaconf import OmegaConf

    @ray.remote(num_cpus=1)
    def step(i):
        return 1.0 / (i + 1)

    print("probe: training step 1", flush=True)
    if cfg.training.max_steps == 999:
        print("probe: loss is nan at step 3", flush=True)
        raise RuntimeError("probe: training diverged at step 3")
    if cfg.training.max_steps == 777:
        for i in range(600):
            print(f"probe: long step {i}", flush=True)
            time.sleep(0.1)
    losses = ray.get([step.remote(i) for i in range(int(cfg.cluster.num_workers) + 1)])
    model_dir = os.path.join(task["run_dir"], "train", "model")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "weights.txt"), "w") as f:
        f.write(f"lr={cfg.training.lr}\n")
    try:
        token = OmegaConf.select(cfg, "cluster.envs.HF_TOKEN", throw_on_resolution_failure=True)
    except Exception:
        token = None
    probe = {
        "method": cfg.training.method.value,  # an enum again: the config is typed in the job
        "data_dir": task["data"]["data_dir"],
        "token_len": len(token) if token else None,
        "pid": os.getpid(),
    }
    return {
        "metrics": {"train_loss": losses[-1], "eval_loss": losses[-1], "perplexity": 1.5,
                    "tokens_per_s": 10.0, "global_step": len(losses), "probe": probe},
        "checkpoint_uri": os.path.join(task["run_dir"], "train", "ckpt"),
        "model_uri": model_dir,
    }
