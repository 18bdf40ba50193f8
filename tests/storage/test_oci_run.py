"""storage=oci through the config and a whole run: `llmops run quickstart storage=oci ...` against a
real registry on 127.0.0.1 (Debian's docker-registry) pushes the exported model as a modelcar
image, and the rendered InferenceService's storageUri pins it by digest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmops import storage
from llmops.storage.oci import OCIStore
from llmops.storage.oci_settings import OCISettings
from tests.fixtures.oci_registry import REGISTRY_BIN, SKIP_REASON, oci_registry

__all__ = ["oci_registry"]
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["training.max_steps=4", "dataset.max_train_blocks=48", "dataset.max_eval_blocks=8"]


def test_oci_uris_tags_and_digests(compose):
    cfg = compose("quickstart", "storage=oci", "storage.repository=127.0.0.1:5000/models/quickstart",
                  "storage.plain_http=true")
    uris = storage.model_uris(cfg, "quickstart-1")
    assert uris == {"hf": "oci://127.0.0.1:5000/models/quickstart:quickstart-1",
                    "caikit": "oci://127.0.0.1:5000/models/quickstart:quickstart-1-caikit",
                    "adapter": "oci://127.0.0.1:5000/models/quickstart:quickstart-1-adapter"}
    pinned = "oci://127.0.0.1:5000/models/quickstart@sha256:" + "a" * 64
    assert storage.serving_uri(cfg, pinned) == pinned
    assert storage.same_place(cfg, pinned, uris["hf"])
    assert not storage.same_place(cfg, "oci://127.0.0.1:5000/other@sha256:" + "a" * 64, uris["hf"])
    # checkpoints stay in the run folder
    assert storage.ray_storage(cfg, "/tmp/run", "quickstart-1") == ("/tmp/run/checkpoints", None)


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:5000/models/q:v1", "no tag or digest"),
    ("127.0.0.1:5000", "REGISTRY/REPO"),
    ("alice:pa55-in-config@quay.io/team/models", "holds credentials"),
])
def test_bad_repository_is_a_config_error_naming_the_key(tmp_path, value, expected):
    p = subprocess.run([sys.executable, "-m", "llmops.cli", "validate", "quickstart", "storage=oci",
                        f"storage.repository={value}"], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "storage.repository" in out and expected in out, out
    assert "pa55-in-config" not in out


def tree_sha(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.skipif(REGISTRY_BIN is None, reason=SKIP_REASON)
def test_quickstart_with_storage_oci_serves_the_image_by_digest(oci_registry, tmp_path):
    repo = f"{oci_registry.host}/models/quickstart"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_OCI_")}
    p = subprocess.run(
        [sys.executable, "-m", "llmops.cli", "run", "quickstart", "storage=oci", f"storage.repository={repo}",
         "storage.plain_http=true", "stages=[prepare_data,train,export,deploy]", *SMALL,
         f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, env=dict(env, PYTHONPATH=str(ROOT)), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    st = json.loads((tmp_path / "run" / "state.json").read_text())
    ex = st["stages"]["export"]["outputs"]
    assert ex["model_uri"].startswith(f"oci://{repo}@sha256:") and ex["files"] > 0
    isvc = [d for f in sorted((tmp_path / "run" / "deploy").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d and d.get("kind") == "InferenceService"]
    assert len(isvc) == 1
    assert isvc[0]["spec"]["predictor"]["model"]["storageUri"] == ex["model_uri"]

    # pulled back by digest: the exported files, byte for byte (sha256 as the manifest lists them)
    store = OCIStore(OCISettings(repository=repo, plain_http=True))
    back = store.get_dir(ex["model_uri"], tmp_path / "pulled")
    manifest = store.verify(ex["model_uri"])
    assert manifest["uri"] == ex["model_uri"]
    assert tree_sha(back) == {rel: m["sha256"] for rel, m in manifest["files"].items()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= set(tree_sha(back))
    # the run id is the tag, and it names the same image
    assert store.serving_uri(f"oci://{repo}:{st['run_id']}") == ex["model_uri"]
