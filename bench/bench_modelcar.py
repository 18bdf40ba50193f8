"""Modelcar build + push (storage=oci) against `skopeo copy` of the same OCI layout, one run.

    PYTHONPATH=. python bench/bench_modelcar.py [--repeat N] [--n-layer L --n-embd E]

The model: a random GPT-2 (seeded; default 2 layers, 384 wide, GPT-2 vocabulary: about 90 MB of
safetensors weights) with the real GPT-2 tokenizer, saved by llmops' export code. Each
repetition starts two fresh Debian `docker-registry` processes on 127.0.0.1 (the helper of
tests/fixtures/oci_registry.py), one per side, so neither can mount or skip a blob the other
sent (skopeo's blob-info cache remembers where it pushed blobs before), and then:

  build       llmops' `build_image`: the deterministic busybox + model layers (tar + gzip),
              config and manifest, written as an OCI image layout folder;
  push        llmops' `push_image` of that image to registry A (every blob sent, manifest last);
  re-push     the same push again: every blob is already there (HEADs and the manifest only);
  skopeo      baseline: `skopeo copy --dest-tls-verify=false oci:LAYOUT docker://B/bench/skopeo:TAG`,
              the same layout to registry B; the manifest digest B stores is checked to be the
              one llmops built (same bytes sent);
  put_dir     storage=oci's entry point end to end (`OCIStore.put_dir`: build in a temporary
              layout, push) to a new repository of registry A.

MB/s (10^6 bytes): build over the model folder's bytes, push / skopeo / put_dir over the image's
bytes (its layers and config). Medians over the repetitions. Prints
`ratio modelcar_push_mb_s_llmops_vs_skopeo` (above 1: llmops pushes faster).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import figure, folder_bytes, random_gpt2, ratio

TAG = "v1"
MB = 1e6


def one_round(folder: Path, tmp: Path) -> dict:
    from llmops.storage.oci import OCIStore, push_image
    from llmops.storage.oci_image import build_image
    from llmops.storage.oci_registry import RegistryClient
    from llmops.storage.oci_settings import OCISettings
    from tests.fixtures.oci_registry import start_registry

    out: dict = {}
    a = start_registry(tmp / "registry-a")
    b = start_registry(tmp / "registry-b")
    try:
        t = time.perf_counter()
        image = build_image(folder, tmp / "layout", tag=TAG)
        out["build_s"] = time.perf_counter() - t
        out["image_bytes"] = sum(x.size for x in image.layers + [image.config])

        settings = OCISettings(repository=f"{a.host}/bench/llmops", plain_http=True)
        t = time.perf_counter()
        res = push_image(image, settings, TAG)
        out["push_s"] = time.perf_counter() - t
        assert res.blobs_skipped == 0 and res.bytes_uploaded == out["image_bytes"], res
        t = time.perf_counter()
        again = push_image(image, settings, TAG)
        out["repush_s"] = time.perf_counter() - t
        assert again.blobs_uploaded == 0, again

        dest = f"docker://{b.host}/bench/skopeo:{TAG}"
        t = time.perf_counter()
        p = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{tmp / 'layout'}:{TAG}", dest],
                           capture_output=True, text=True)
        out["skopeo_s"] = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"skopeo copy failed ({p.returncode}):\n{p.stderr[-2000:]}")
        if "skipped" in p.stdout + p.stderr:
            raise SystemExit(f"skopeo skipped blobs; the comparison needs every blob sent:\n{p.stderr}")
        got = RegistryClient(b.host, OCISettings(repository=f"{b.host}/bench/skopeo", plain_http=True)
                             ).manifest_digest("bench/skopeo", TAG)
        if got != image.digest:
            raise SystemExit(f"skopeo stored manifest {got}, llmops built {image.digest}: not the same image")
        out["skopeo_registry_bytes"] = sum(f.stat().st_size for f in b.blob_files())

        store = OCIStore(OCISettings(repository=f"{a.host}/bench/put-dir", plain_http=True))
        t = time.perf_counter()
        store.put_dir(folder, f"oci://{a.host}/bench/put-dir:{TAG}")
        out["put_dir_s"] = time.perf_counter() - t
        assert store.last_push is not None and store.last_push.digest == image.digest
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=384)
    a = p.parse_args()
    for tool in ("docker-registry", "skopeo"):
        if not shutil.which(tool):
            print(f"# {tool} is not installed (Debian: apt-get install -y docker-registry skopeo "
                  "busybox-static): nothing measured")
            return 0
    with tempfile.TemporaryDirectory(prefix="bench-modelcar-") as td:
        td = Path(td)
        folder = random_gpt2(td / "model", n_layer=a.n_layer, n_embd=a.n_embd, n_head=max(1, a.n_embd // 64))
        model_bytes = folder_bytes(folder)
        rounds = [one_round(folder, td / f"round-{i}") for i in range(a.repeat)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    img = med["image_bytes"]
    print(f"# model folder {model_bytes / MB:.1f} MB, image {img / MB:.1f} MB (layers + config), "
          f"median of {a.repeat}; skopeo's registry holds {med['skopeo_registry_bytes'] / MB:.1f} MB of blobs")
    figure("modelcar_build_s", med["build_s"], "s")
    figure("modelcar_push_s", med["push_s"], "s")
    figure("modelcar_repush_nothing_to_send_s", med["repush_s"], "s")
    figure("modelcar_skopeo_copy_s", med["skopeo_s"], "s")
    figure("modelcar_put_dir_s", med["put_dir_s"], "s")
    figure("modelcar_build_mb_s", model_bytes / MB / med["build_s"], "MB/s")
    figure("modelcar_push_mb_s_llmops", img / MB / med["push_s"], "MB/s")
    figure("modelcar_build_push_mb_s_llmops", img / MB / (med["build_s"] + med["push_s"]), "MB/s")
    figure("modelcar_put_dir_mb_s_llmops", img / MB / med["put_dir_s"], "MB/s")
    figure("modelcar_push_mb_s_skopeo", img / MB / med["skopeo_s"], "MB/s")
    ratio("modelcar_push_mb_s_llmops_vs_skopeo", med["skopeo_s"] / med["push_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
