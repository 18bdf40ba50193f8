"""Fixtures for the data pipeline tests: made data (WikiText-like rows and a byte-level BPE trained
here, for every test that is not about WikiText-2/GPT-2 parity) and one prepared GPT-2/WikiText
cache (../shared/data) shared by the parity tests."""

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


# words of the made rows (the numbers spell out test rows: each is one token of the made tokenizer)
WORDS = ("the of and a to in is was for on as with by he at from his an were are which this also be "
         "has or had first one two three four five six seven eight nine ten their its new after but "
         "who not they have her she been other when there all during into school time may years more "
         "most only over city some world would where later up such used many can state about "
         "national out known university united then made river song album game season").split()


def made_rows(n: int, seed: int = 0) -> list[str]:
    """n rows shaped like the Hugging Face wikitext rows: headings, blank rows, paragraphs."""
    import random

    rng = random.Random(seed)
    rows: list[str] = []
    while len(rows) < n:
        k = len(rows)
        if k % 12 == 1:
            rows.append(f" = {rng.choice(WORDS).title()} {rng.choice(WORDS)} = \n")
        elif k % 2 == 0:
            rows.append("")
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(12, 60))]
            rows.append(" " + " ".join(words) + " . \n")
    return rows


@pytest.fixture(scope="session")
def made_data(tmp_path_factory) -> dict:
    """{"dir": a folder with wiki.test.raw (train) and wiki.valid.raw, "tokenizer": a 600-token
    byte-level BPE trained on them with llmops' own trainer (model_max_length 1024), "rows"}."""
    from llmops import data

    root = tmp_path_factory.mktemp("made-data")
    rows = {"test": made_rows(3000, seed=1), "valid": made_rows(1500, seed=2)}
    folder = root / "wikitext"
    folder.mkdir()
    for split, r in rows.items():
        (folder / f"wiki.{split}.raw").write_text("\n".join(r), encoding="utf-8")
    data.train_tokenizer(rows["test"], 600, root / "tokenizer", 1024)
    return {"dir": folder, "tokenizer": root / "tokenizer", "rows": rows}


def made_overrides(made_data: dict, cache_dir: Path, *extra: str) -> list[str]:
    """gpt2-wikitext on the made files: wiki.test.raw trains, wiki.valid.raw evaluates, the made
    tokenizer."""
    return ["dataset=wikitext2_files", f"dataset.dir={made_data['dir']}", "dataset.train_split=test",
            "dataset.eval_split=valid", "model.name_or_path=null",
            f"model.tokenizer={made_data['tokenizer']}", f"paths.cache_dir={cache_dir}", *extra]


def made_token_count(made_data: dict, rows: list[str]) -> int:
    """How many tokens the made tokenizer gives `rows` (no special tokens)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(made_data["tokenizer"] / "tokenizer.json"))
    return sum(len(e.ids) for e in tok.encode_batch(rows, add_special_tokens=False))


@pytest.fixture(scope="session")
def _base_cfgs(made_data):
    """Composed once per session (composing takes seconds): quickstart, gpt2-wikitext on the
    ../shared/data files ("wikitext") and gpt2-wikitext on the made files and tokenizer ("made")."""
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose

    out = {}
    cfg, _ = compose("quickstart", [], check=False)
    out["quickstart"] = strip_hydra(cfg)
    cfg, _ = compose("gpt2-wikitext", wikitext_overrides(Path("/unused")), check=False)
    out["wikitext"] = strip_hydra(cfg)
    cfg, _ = compose("gpt2-wikitext", made_overrides(made_data, Path("/unused")), check=False)
    out["made"] = strip_hydra(cfg)
    return out


@pytest.fixture
def cfg_of(_base_cfgs, tmp_path):
    """cfg_of("quickstart"|"wikitext"|"made", **{"dataset.block_size": 128, ...}): a fresh copy with its
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
