"""Shared by the cluster backend tests."""


def ctx_with_prepared_data(cfg, tmp_path):
    """A run context whose prepare_data stage is recorded as done (the backends read its outputs)."""
    from llmops.pipeline.engine import open_run

    ctx = open_run(cfg, tmp_path / "run")
    ctx.state.stage("prepare_data").update(
        {"status": "done", "outputs": {"data_dir": str(tmp_path / "data"), "tokenizer_dir": "t",
                                       "blocks": {"train": 4, "eval": 2}}})
    return ctx
