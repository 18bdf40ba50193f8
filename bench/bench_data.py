"""Data benchmark: tokenize + group WikiText-2 (test as train, valid as validation) with GPT-2.

llmops (`llmops.data.prepare`, cold cache) against the run_clm way (`datasets.map` batched with
the same fast tokenizer and the same num_proc, then the `group_texts` map), in the same process,
alternating, best of --repeats. Heavy imports happen before any timing, for both. Then a
warm-cache rerun of prepare.

    python bench/bench_data.py [--num-proc N] [--repeats R] [--data ../shared/data]

Prints `figure data_llmops_s=...`, `figure data_run_clm_s=...`,
`ratio data_time_vs_run_clm=...` (llmops / run_clm: below 1 means llmops is faster) and
`figure data_warm_cache_s=...`.

Then the cache key as one `llmops run` computes it: three times (the engine's prepare_data stage
fingerprint twice, prepare once), with the file-hash memo against hashing every time (the memo
cleared before each call, as before the memo existed): `figure data_fingerprint_files_read_per_run`
(memo) and `..._unmemoised`, `ratio data_fingerprint_calls_memo_vs_unmemoised=...` (time).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BLOCK = 1024


def run_clm_way(data_dir: Path, tokenizer_dir: Path, num_proc: int) -> dict:
    """What run_clm.py does after load_dataset: tokenize map, group_texts map (batch 1000)."""
    import datasets
    from transformers import AutoTokenizer

    from llmops.data import parse_wikitext_raw

    raw = datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"text": parse_wikitext_raw((data_dir / f"wiki.{name}.raw").read_text(encoding="utf-8"))})
        for split, name in (("train", "test"), ("validation", "valid"))})
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True)
    column_names = list(raw["train"].features)

    def tokenize_function(examples):
        return tokenizer(examples["text"])

    tokenized = raw.map(tokenize_function, batched=True, num_proc=num_proc if num_proc > 1 else None,
                        remove_columns=column_names, load_from_cache_file=False)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // BLOCK) * BLOCK
        result = {k: [t[i:i + BLOCK] for i in range(0, total_length, BLOCK)]
                  for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    lm = tokenized.map(group_texts, batched=True, num_proc=num_proc if num_proc > 1 else None,
                       load_from_cache_file=False)
    return {s: len(lm[s]) for s in ("train", "validation")}


def fingerprint_per_run(data, cfg, repeats: int) -> None:
    """The three cache-key computations of one run, with the file-hash memo and without."""
    calls = 3  # engine: stage fingerprint to reset the stage, again to run it; prepare: the key
    times: dict[bool, list[float]] = {True: [], False: []}
    reads: dict[bool, int] = {}
    for r in range(max(3, repeats)):
        for memo in ((True, False) if r % 2 == 0 else (False, True)):
            data.FILE_HASHES.clear()
            before = data.FILE_HASHES.stats()["files_read"]
            t0 = time.perf_counter()
            for _ in range(calls):
                if not memo:
                    data.FILE_HASHES.clear()
                data.fingerprint(cfg)
            times[memo].append(time.perf_counter() - t0)
            reads[memo] = data.FILE_HASHES.stats()["files_read"] - before
    print(f"figure data_fingerprint_files_read_per_run={reads[True]} files")
    print(f"figure data_fingerprint_files_read_per_run_unmemoised={reads[False]} files")
    print(f"figure data_fingerprint_calls_memo_s={min(times[True]):.4f} s")
    print(f"figure data_fingerprint_calls_unmemoised_s={min(times[False]):.4f} s")
    print(f"ratio data_fingerprint_calls_memo_vs_unmemoised={min(times[True]) / min(times[False]):.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                   help="folder with wikitext-2-raw/ and gpt2-tokenizer/ (default ../shared/data)")
    p.add_argument("--num-proc", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    shared = Path(args.data).resolve()
    wt, tokdir = shared / "wikitext-2-raw", shared / "gpt2-tokenizer"
    if not (wt / "wiki.valid.raw").is_file() or not (tokdir / "tokenizer.json").is_file():
        print(f"{shared}: needs wikitext-2-raw/wiki.{{valid,test}}.raw and gpt2-tokenizer/", file=sys.stderr)
        return 2

    import logging
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    # heavy imports before any timing, for both sides
    import datasets  # noqa: F401
    import numpy  # noqa: F401
    import transformers  # noqa: F401

    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tokdir))  # pulls in the rest of transformers (and torch)
    datasets.disable_progress_bars()
    from llmops import data
    from llmops.config.compose import strip_hydra
    from llmops.pipeline.checks import compose

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-data-"))
    try:
        cfg, _ = compose("gpt2-wikitext", [
            "dataset=wikitext2_files", f"dataset.dir={wt}", "dataset.train_split=test",
            "dataset.eval_split=valid", "model.name_or_path=null", f"model.tokenizer={tokdir}",
            f"dataset.num_proc={args.num_proc}", f"paths.cache_dir={tmp / 'cache-0'}"], check=True)
        cfg = strip_hydra(cfg)

        ours, theirs = [], []
        out = counts = None
        for r in range(args.repeats):
            c = copy.deepcopy(cfg)
            c.paths.cache_dir = str(tmp / f"cache-{r}")
            order = ("llmops", "run_clm") if r % 2 == 0 else ("run_clm", "llmops")
            for who in order:
                t0 = time.perf_counter()
                if who == "llmops":
                    out = data.prepare(c)
                    ours.append(time.perf_counter() - t0)
                    assert not out.cache_hit
                else:
                    counts = run_clm_way(wt, tokdir, args.num_proc)
                    theirs.append(time.perf_counter() - t0)
            print(f"# repeat {r}: llmops {ours[-1]:.2f} s, run_clm way {theirs[-1]:.2f} s", flush=True)

        warm = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = data.prepare(copy.deepcopy(c))
            warm.append(time.perf_counter() - t0)
            assert again.cache_hit

        print(f"# blocks: llmops {out.blocks}, run_clm way {counts} (num_proc={args.num_proc})")
        if args.num_proc == 1 and out.blocks != counts:
            print("# WARNING: block counts differ", file=sys.stderr)
        best_ours, best_theirs = min(ours), min(theirs)
        print(f"figure data_llmops_s={best_ours:.3f} s")
        print(f"figure data_run_clm_s={best_theirs:.3f} s")
        print(f"ratio data_time_vs_run_clm={best_ours / best_theirs:.3f}")
        print(f"figure data_warm_cache_s={min(warm):.4f} s")
        fingerprint_per_run(data, c, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
