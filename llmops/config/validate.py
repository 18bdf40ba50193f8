"""Checks a type cannot express, run on the composed config before any stage. All at once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from llmops.errors import ConfigError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def dns1123_problem(value: str, max_len: int = 63) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return "expected a non-empty DNS-1123 name"
    if len(value) > max_len:
        return f"'{value}' is {len(value)} characters; at most {max_len} allowed"
    if not DNS1123_LABEL.match(value):
        return (
            f"'{value}' is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns1035_problem(value: str, max_len: int = 63) -> Optional[str]:
    p = dns1123_problem(value, max_len)
    if p:
        return p.replace("DNS-1123", "DNS-1035")
    if not DNS1035_LABEL.match(value):
        return f"'{value}' is not a DNS-1035 label: it must start with a lower-case letter"
    return None


def looks_local(ref: str) -> bool:
    """A model/tokenizer reference that names a folder rather than a hub id."""
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


class _Checker:
    def __init__(self, cfg: DictConfig, source: Any):
        self.cfg = cfg
        self.source = source
        self.problems: list[str] = []

    def get(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key, throw_on_resolution_failure=False)

    def add(self, key: str, message: str) -> None:
        origin = self.source.origin(key) if self.source is not None else "config"
        value = self.get(key)
        shown = value if not isinstance(value, str) else repr(value)
        self.problems.append(f"{key} = {shown} (from {origin}): {message}")

    def check(self, key: str, ok: Callable[[Any], bool], expected: str) -> None:
        v = self.get(key)
        if v is None:
            return
        try:
            good = ok(v)
        except Exception:
            good = False
        if not good:
            self.add(key, f"expected {expected}")


def _resolution_problems(cfg: DictConfig, source: Any) -> list[str]:
    """Every interpolation that fails to resolve, by key."""
    from llmops.config.compose import _flatten

    problems = []
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    for key, _ in _flatten(raw):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception as e:
            origin = source.origin(key) if source is not None else "config"
            msg = str(e).split("\n")[0]
            problems.append(f"{key} (from {origin}): interpolation failed: {msg}")
    return problems


def validate(cfg: DictConfig, source: Any = None) -> None:
    """Raise ConfigError listing every problem in the composed config."""
    problems = _resolution_problems(cfg, source)
    if problems:
        raise ConfigError(problems)
    c = _Checker(cfg, source)
    pos_int = (lambda v: isinstance(v, int) and v > 0, "a positive integer")
    nonneg_int = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    for key in [
        "cluster.num_workers", "cluster.cpus_per_worker", "dataset.block_size",
        "dataset.map_batch_size", "dataset.num_proc", "training.per_device_train_batch_size",
        "training.per_device_eval_batch_size", "training.gradient_accumulation_steps",
        "training.logging_steps", "training.eval_steps", "training.save_total_limit",
        "training.lora.r", "training.lora.alpha", "model.n_layer", "model.n_head", "model.n_embd",
        "model.n_positions", "serving.replicas", "smoke_test.max_new_tokens",
        "dataset.max_train_blocks", "dataset.max_eval_blocks",
    ]:
        c.check(key, *pos_int)
    for key in [
        "cluster.gpus_per_worker", "training.max_time_s", "training.dataloader_num_workers",
        "training.max_failures", "serving.gpus", "model.train_tokenizer_vocab",
        "smoke_test.retries", "serving.ready_timeout_s", "cluster.job_timeout_s",
    ]:
        c.check(key, *nonneg_int)
    c.check("training.lr", lambda v: v > 0, "a learning rate > 0")
    c.check("training.epochs", lambda v: v > 0 or c.get("training.max_steps") > 0,
            "epochs > 0 (or training.max_steps > 0)")
    c.check("training.max_steps", lambda v: v == -1 or v > 0, "-1 (use epochs) or a positive step count")
    c.check("training.warmup_ratio", lambda v: 0.0 <= v < 1.0, "a ratio in [0, 1)")
    c.check("training.weight_decay", lambda v: v >= 0, "a value >= 0")
    c.check("training.max_grad_norm", lambda v: v >= 0, "a value >= 0")
    c.check("training.lora.dropout", lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")
    c.check("training.lora.target_modules", lambda v: len(v) > 0, "at least one module name")
    c.check("dataset.eval_fraction", lambda v: 0.0 < v < 1.0, "a fraction in (0, 1)")
    c.check("model.train_tokenizer_vocab", lambda v: v == 0 or 260 <= v <= 1_000_000,
            "0 (no training) or a vocabulary size of at least 260 (256 bytes + specials)")

    stages = [str(s.value if hasattr(s, "value") else s) for s in c.get("stages")]
    if len(set(stages)) != len(stages):
        c.add("stages", "each stage at most once")
    if not stages:
        c.add("stages", "at least one stage")

    # model shape
    if c.get("model.name_or_path") is None:
        n_embd, n_head = c.get("model.n_embd"), c.get("model.n_head")
        if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0 and n_embd % n_head:
            c.add("model.n_embd", f"a multiple of model.n_head ({n_head})")
        n_pos, block = c.get("model.n_positions"), c.get("dataset.block_size")
        if isinstance(block, int) and isinstance(n_pos, int) and block > n_pos:
            c.add("dataset.block_size", f"at most model.n_positions ({n_pos}), the model's context")
        if c.get("model.tokenizer") is None and not c.get("model.train_tokenizer_vocab"):
            c.add("model.tokenizer", "a tokenizer (HF id or folder) or model.train_tokenizer_vocab > 0 "
                  "for a fresh model")
    for key in ("model.name_or_path", "model.tokenizer"):
        ref = c.get(key)
        if isinstance(ref, str) and ref.startswith(("/", "./", "../", "~")):
            if not Path(ref).expanduser().is_dir():
                c.add(key, "an existing local folder (or an HF hub id)")

    # ---- dataset (llmops.data) ----
    src = str(c.get("dataset.source").value if hasattr(c.get("dataset.source"), "value") else c.get("dataset.source"))
    if src == "hub" and not c.get("dataset.name"):
        c.add("dataset.name", "a hub dataset id for dataset.source=hub")
    if src == "wikitext_raw":
        d = c.get("dataset.dir")
        if not d or not Path(str(d)).expanduser().is_dir():
            c.add("dataset.dir", "an existing folder holding wiki.<split>.raw files")
        else:
            for split_key in ("dataset.train_split", "dataset.eval_split"):
                f = Path(str(d)).expanduser() / f"wiki.{c.get(split_key)}.raw"
                if not f.is_file():
                    c.add(split_key, f"a split whose file exists; {f} does not")
    if src in ("text_files", "json_files"):
        files = c.get("dataset.train_files") or []
        if not files:
            c.add("dataset.train_files", "at least one file")
        for key in ("dataset.train_files", "dataset.eval_files"):
            for f in c.get(key) or []:
                if not Path(str(f)).expanduser().is_file():
                    c.add(key, f"existing files; '{f}' does not exist")
    if src in ("hub", "json_files") and not str(c.get("dataset.text_field") or "").strip():
        c.add("dataset.text_field", "the name of the field that holds the text, e.g. text")
    # ---- end dataset ----

    # ---- serving (llmops/serving): names, runtime facts, storage binding ----------------------
    serving_kind = str(getattr(c.get("serving.kind"), "value", c.get("serving.kind")))
    if serving_kind != "none":
        from llmops.serving import ISVC_NAME_MAX, MODEL_FORMATS, PROTOCOLS

        for key in ("serving.namespace", "serving.runtime_name", "serving.secret_name"):
            v = c.get(key)
            if v is not None:
                p = dns1123_problem(v)
                if p:
                    c.add(key, p)
        if c.get("serving.name") is not None:
            # KServe derives "<name>-predictor" (and more) from it: DNS-1035, room for suffixes
            p = dns1035_problem(c.get("serving.name"), 53)
            if p:
                c.add("serving.name", p)
        else:
            from llmops.names import k8s_name

            try:
                k8s_name(str(c.get("run_id")), ISVC_NAME_MAX)
            except ValueError as e:
                c.add("run_id", str(e))
        storage_kind = str(getattr(c.get("storage.kind"), "value", c.get("storage.kind")))
        if c.get("serving.apply") and storage_kind == "local":
            c.add("serving.apply", "storage=s3 or storage=pvc: KServe cannot read a model on local disk")
        fmt = c.get("serving.model_format")
        if serving_kind in MODEL_FORMATS and fmt not in MODEL_FORMATS[serving_kind]:
            c.add("serving.model_format",
                  f"a model format the {serving_kind} runtime serves: {list(MODEL_FORMATS[serving_kind])}")
        proto = str(getattr(c.get("serving.protocol"), "value", c.get("serving.protocol")))
        if serving_kind in PROTOCOLS and proto not in PROTOCOLS[serving_kind]:
            c.add("serving.protocol", f"a protocol the {serving_kind} runtime speaks: "
                  f"{list(PROTOCOLS[serving_kind])}")
        if serving_kind == "caikit_tgis" and not c.get("serving.transformer_image"):
            c.add("serving.transformer_image", "the Caikit image (caikit_tgis has two containers)")
        binding = str(getattr(c.get("serving.storage_binding"), "value", c.get("serving.storage_binding")))
        if binding == "data_connection" and storage_kind != "s3":
            c.add("serving.storage_binding", "'service_account' unless storage=s3 (a data connection "
                  "is an S3 Secret)")
        if c.get("serving.existing_secret") and not c.get("serving.secret_name"):
            c.add("serving.existing_secret", "serving.secret_name set to the existing Secret's name")
        c.check("serving.poll_interval_s", lambda v: v > 0, "a number of seconds > 0")
    # ---- end serving -------------------------------------------------------------------------
    # ---- cluster (llmops/clusters) ---------------------------------------------------------
    _validate_cluster(c)
    # ---- end cluster ---------------------------------------------------------------------------
    if c.get("smoke_test.target") not in ("local", "endpoint"):
        c.add("smoke_test.target", "'local' or 'endpoint'")
    if c.get("smoke_test.target") == "endpoint" and not c.get("serving.apply"):
        c.add("smoke_test.target", "'local' unless serving.apply=true (there is no endpoint to call)")
    _check_storage(c)
    if c.problems:
        raise ConfigError(c.problems)


# ------------------------------------------------------------------------------- storage (begin)
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# environment variable names whose value is an S3 credential: allowed only as ${oc.env:...}
CREDENTIAL_ENV_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_SECURITY_TOKEN"}


def _raw_items(node: Any, prefix: str = ""):
    """(dotted key, raw unresolved value) for every leaf of `node`."""
    if isinstance(node, DictConfig):
        for k in node.keys():
            if prefix == "" and k == "hydra":
                continue
            yield from _raw_items(node._get_node(k), f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
    elif OmegaConf.is_list(node):
        for i in range(len(node)):
            yield from _raw_items(node._get_node(i), f"{prefix}[{i}]")
    elif node is not None:
        yield prefix, node._value()


def _check_storage(c: _Checker) -> None:
    """storage.* checks, and no literal S3 credential anywhere in the config."""
    from llmops.config.secrets import is_secret_key, remember, scrub

    for key, raw in _raw_items(c.cfg):
        last = key.split(".")[-1]
        if not isinstance(raw, str) or not raw or "${" in raw:
            continue
        if last.upper() in CREDENTIAL_ENV_NAMES or (key.startswith("storage.") and is_secret_key(last)):
            remember(raw)  # never echo it, not even in the override that set it
            origin = scrub(c.source.origin(key)) if c.source is not None else "config"
            c.problems.append(
                f"{key} (from {origin}): holds a "
                f"literal credential; credentials come from the environment: use "
                f"'${{oc.env:{last.upper()}}}' or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "(or set storage.profile)")
    kind = str(getattr(c.get("storage.kind"), "value", c.get("storage.kind")))
    if kind == "local":
        c.check("storage.root", lambda v: bool(str(v).strip()), "a folder for the models")
    if kind == "s3":
        bucket = c.get("storage.bucket")
        if not bucket:
            c.add("storage.bucket", "a bucket name for storage=s3")
        elif not S3_BUCKET.match(str(bucket)) or ".." in str(bucket):
            c.add("storage.bucket", "an S3 bucket name: 3-63 characters, lower-case letters, digits, "
                  "'.' and '-', starting and ending with a letter or digit")
        prefix = str(c.get("storage.prefix") or "")
        if "//" in prefix or any(part in (".", "..") for part in prefix.strip("/").split("/") if prefix):
            c.add("storage.prefix", "a key prefix like 'models' or 'team/models' (no '//', '.' or '..')")
        ep = c.get("storage.endpoint_url")
        if ep is not None:
            from urllib.parse import urlparse

            u = urlparse(str(ep))
            if u.scheme not in ("http", "https") or not u.hostname:
                c.add("storage.endpoint_url", "an http:// or https:// URL of the S3 endpoint, e.g. "
                      "http://minio.minio.svc:9000")
            elif u.username or u.password:
                c.add("storage.endpoint_url", "a URL without user:password (credentials come from the "
                      "environment)")
        c.check("storage.addressing_style", lambda v: v in ("auto", "path", "virtual"),
                "'auto', 'path' (MinIO) or 'virtual'")
        c.check("storage.multipart_chunk_mb", lambda v: isinstance(v, int) and 5 <= v <= 5120,
                "a part size in MB between 5 (the S3 minimum) and 5120")
        c.check("storage.multipart_threshold_mb", lambda v: isinstance(v, int) and v >= 5,
                "a size in MB >= 5")
        c.check("storage.max_concurrency", lambda v: isinstance(v, int) and 1 <= v <= 256,
                "a number of parallel requests between 1 and 256")
        c.check("storage.max_attempts", lambda v: isinstance(v, int) and 1 <= v <= 100,
                "a number of tries between 1 and 100")
        c.check("storage.retry_base_s", lambda v: v >= 0, "a delay in seconds >= 0")
        c.check("storage.connect_timeout_s", lambda v: v > 0, "a timeout in seconds > 0")
        c.check("storage.read_timeout_s", lambda v: v > 0, "a timeout in seconds > 0")
        ca = c.get("storage.ca_bundle")
        if ca is not None:
            if not Path(str(ca)).expanduser().is_file():
                c.add("storage.ca_bundle", "an existing PEM file with the endpoint's CA certificate")
            if c.get("storage.verify") is False:
                c.add("storage.ca_bundle", "unset when storage.verify=false (nothing is verified)")
    if kind == "pvc":
        name = c.get("storage.pvc_name")
        p = dns1123_problem(name, 253) if name else "the PersistentVolumeClaim's name for storage=pvc"
        if p:
            c.add("storage.pvc_name", p)
        mp = c.get("storage.mount_path")
        if not mp or not str(mp).startswith("/"):
            c.add("storage.mount_path", "the absolute path where the claim is mounted, e.g. /mnt/models")
# --------------------------------------------------------------------------------- storage (end)


def _validate_cluster(c: "_Checker") -> None:
    """cluster=ray needs a dashboard URL; cluster=codeflare a Ray 2.58 image and valid names."""
    kind = str(getattr(c.get("cluster.kind"), "value", c.get("cluster.kind")))
    mode = str(getattr(c.get("cluster.mode"), "value", c.get("cluster.mode")))
    c.check("cluster.poll_interval_s", lambda v: v > 0, "a period in seconds > 0")
    c.check("cluster.auth", lambda v: v in ("auto", "kubeconfig", "incluster", "token"),
            "one of auto, kubeconfig, incluster, token")
    url = re.compile(r"^https?://[^/\s:]+(:\d+)?(/.*)?$")
    if kind == "ray":
        addr = c.get("cluster.address")
        if not addr:
            c.add("cluster.address", "the Ray dashboard URL for cluster=ray, e.g. http://127.0.0.1:8265")
        elif not url.match(str(addr)):
            c.add("cluster.address", "an http(s)://host:port URL of the Ray dashboard (Jobs API)")
    if kind != "codeflare":
        return
    from llmops.clusters.kuberay import RAYCLUSTER_MAX, RAYJOB_MAX, image_problem
    from llmops.names import k8s_name

    p = image_problem(c.get("cluster.image"))
    if p:
        c.add("cluster.image", f"expected {p}")
    p = dns1123_problem(str(c.get("cluster.namespace")))
    if p:
        c.add("cluster.namespace", p)
    limit, what = (RAYJOB_MAX, "RayJob") if mode == "rayjob" else (RAYCLUSTER_MAX, "RayCluster")
    name = c.get("cluster.name")
    if name is not None:
        p = dns1035_problem(str(name), limit)
        if p:
            c.add("cluster.name", f"{p} (a {what} name: DNS-1035, at most {limit} characters)")
    else:
        try:
            k8s_name(str(c.get("run_id")), limit, dns1035=True)
        except ValueError as e:
            c.add("run_id", f"{e} (set cluster.name)")
    q = c.get("cluster.local_queue")
    if q is not None:
        p = dns1123_problem(str(q))
        if p:
            c.add("cluster.local_queue", p)
    for key in ("cluster.head_cpus", "cluster.head_memory_gb", "cluster.worker_cpus",
                "cluster.worker_memory_gb", "cluster.apply_timeout_s", "cluster.ready_timeout_s"):
        c.check(key, lambda v: isinstance(v, int) and v > 0, "a positive integer")
    for key in ("cluster.head_gpus", "cluster.ttl_seconds_after_finished"):
        c.check(key, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    cpus, wcpus = c.get("cluster.cpus_per_worker"), c.get("cluster.worker_cpus")
    if isinstance(cpus, int) and isinstance(wcpus, int) and cpus > wcpus:
        c.add("cluster.cpus_per_worker", f"at most cluster.worker_cpus ({wcpus}): a Ray Train worker "
              "cannot ask for more CPUs than its pod has")
    if mode == "rayjob" and c.get("cluster.pass_secrets"):
        c.add("cluster.pass_secrets", "false with cluster.mode=rayjob: the RayJob object would store "
              "the secret values; give the pods a Secret-backed environment instead")
    for key in ("cluster.volumes", "cluster.volume_mounts", "cluster.tolerations"):
        for i, item in enumerate(c.get(key) or []):
            if not hasattr(item, "keys"):
                c.add(key, f"a list of mappings (item {i} is not one)")
            elif key != "cluster.tolerations" and "name" not in item:
                c.add(key, f"every item with a name (item {i} has none)")
