"""Fixtures for the data pipeline tests: one prepared GPT-2/WikiText cache shared by a module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA


def wikitext_overrides(cache_dir: Path, *extra: str) -> list[str]:
    """gpt2-wikitext pointed at ../shared/data: test split trains, valid split evaluates."""
    return ["dataset=wikitext2_files", f"dataset.dir={SHARED_DATA / 'wikitext-2-raw'}",
            "dataset.train_split=test", "dataset.eval_split=valid", "model.name_or_path=null",
            f"model.tokenizer={SHARED_DATA / 'gpt2-tokenizer'}", f"paths.cache_dir={cache_dir}",
            *extra]


@pytest.fixture(scope="session")
def wikitext_cache(tmp_path_factory):
    """A cache dir in which the GPT-2 / WikiText blocks (block 1024, group_by batch) are prepared."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the offline WikiText-2 / GPT-2 tokenizer data is needed")
    from llmops import data
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose

    cache = tmp_path_factory.mktemp("wikitext-cache")
    cfg, _ = compose("gpt2-wikitext", wikitext_overrides(cache), check=True)
    out = data.prepare(strip_hydra(cfg))
    return cache, out


@pytest.fixture(scope="session")
def _base_cfgs():
    """Composed once per session (composing takes seconds): quickstart and gpt2-wikitext on files."""
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose

    out = {}
    cfg, _ = compose("quickstart", [], check=False)
    out["quickstart"] = strip_hydra(cfg)
    cfg, _ = compose("gpt2-wikitext", wikitext_overrides(Path("/unused")), check=False)
    out["wikitext"] = strip_hydra(cfg)
    return out


@pytest.fixture
def cfg_of(_base_cfgs, tmp_path):
    """cfg_of("quickstart"|"wikitext", **{"dataset.block_size": 128, ...}): a fresh copy with its
    cache under tmp_path, like `compose(recipe, key=value...)` without composing again."""
    import copy

    from omegaconf import OmegaConf

    def make(name: str, **dotted):
        c = copy.deepcopy(_base_cfgs[name])
        c.paths.cache_dir = str(tmp_path / "cache")
        for k, v in dotted.items():
            OmegaConf.update(c, k, v, merge=False)
        return c

    return make
