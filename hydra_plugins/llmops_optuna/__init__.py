"""llmops's Optuna sweeper (`hydra/sweeper=optuna_resumable`): config.py, resumable_optuna.py, search.py."""
