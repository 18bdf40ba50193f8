"""Export details that serving images depend on."""

import json
import shutil

from llmops.training.export import caikit_config, fix_tokenizer_config


def test_bpe_files_rebuilt_from_tokenizer_json_match_the_real_gpt2_files(shared_data, tmp_path):
    src = shared_data / "gpt2-tokenizer"
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, tmp_path / f)
    fix_tokenizer_config(tmp_path, "gpt2")  # as transformers 5 leaves it: tokenizer.json only
    assert json.loads((tmp_path / "vocab.json").read_text()) == json.loads((src / "vocab.json").read_text())
    ours = (tmp_path / "merges.txt").read_text().splitlines()[1:]
    theirs = [ln for ln in (src / "merges.txt").read_text().splitlines()[1:] if ln]
    assert ours == theirs and len(ours) == 50000
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"


def test_caikit_config_has_the_text_generation_module_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "dtype": "float32"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    import yaml

    c = yaml.safe_load(caikit_config(tmp_path))
    assert c["module_id"] == "f9181353-4ccf-4572-bd1e-f12bcda26792"
    assert c["module_class"] == "caikit_nlp.modules.text_generation.text_generation_local.TextGeneration"
    assert (c["artifact_path"], c["eos_token"], c["torch_dtype"]) == ("artifacts", "<|endoftext|>", "float32")
    assert {"name", "version", "created", "saved", "tracking_id"} <= set(c)
