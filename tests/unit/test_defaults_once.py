"""Each default value is stated once: the schemas hold the defaults, an option file states only
what its option changes, and a recipe only its deltas against the options it picks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from llmops.config.schema import GROUPS, LLMOpsConfig
from llmops.core import resources
from llmops.core.tree import flatten


def _plain(node) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(node), enum_to_str=True, resolve=False)


def _restated(data: dict, defaults: dict) -> list[str]:
    flat = dict(flatten(defaults))
    return [f"{k}: {v!r}" for k, v in flatten(data) if k in flat and flat[k] == v and v != {}]


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_option_files_state_only_what_differs_from_the_schema(group):
    defaults = _plain(GROUPS[group])
    found = {}
    for f in sorted((resources.conf_dir() / group).glob("*.yaml")):
        data = yaml.safe_load(f.read_text()) or {}
        data.pop("defaults", None)
        if data.get("kind") is not None:  # the option's own kind is what it selects
            data.pop("kind")
        restated = _restated(data, defaults)
        if restated:
            found[f.name] = restated
    assert found == {}, f"conf/{group}: values equal to the schema default (llmops/config/schema.py)"


def test_base_config_states_no_schema_default():
    data = yaml.safe_load((resources.conf_dir() / "config.yaml").read_text())
    data.pop("defaults")
    data.pop("hydra")
    root = {k: v for k, v in _plain(LLMOpsConfig).items() if k not in GROUPS}
    assert _restated(data, root) == []


def test_recipes_state_only_their_deltas(tmp_path):
    """A recipe key whose value is what the recipe's options already give is not a delta."""
    from llmops.pipeline.checks import compose

    found = {}
    for recipe in sorted(resources.recipes_dir().glob("*.yaml")):
        data = yaml.safe_load(recipe.read_text())
        bare = tmp_path / recipe.name  # the same options, without the recipe's own values
        bare.write_text(yaml.safe_dump({"defaults": data["defaults"]}))
        base, _ = compose(str(bare), [f"recipe={recipe.stem}"], check=False)
        given = {k: v for k, v in data.items() if k != "defaults"}
        composed = OmegaConf.to_container(base, resolve=False, enum_to_str=True)
        restated = _restated(given, composed)
        if restated:
            found[recipe.name] = restated
    assert found == {}
