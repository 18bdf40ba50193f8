"""Typed schemas for every config group.

One dataclass per group, registered in Hydra's ConfigStore as ``<group>/_schema``. Every option
file in ``conf/<group>/`` extends it explicitly (``defaults: [_schema, _self_]``), so Hydra runs
in struct mode: an unknown key is an error and every value is type-checked at compose time.
Range checks that a type cannot express (positive ints, probabilities, names) live in
``llmops.config.validate``, which reports all of them at once before any stage runs.

This module imports only the standard library, omegaconf and hydra: ``llmops plan`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class Stage(str, Enum):
    prepare_data = "prepare_data"
    train = "train"
    export = "export"
    deploy = "deploy"
    smoke_test = "smoke_test"


ALL_STAGES = [s.value for s in Stage]


# --------------------------------------------------------------------------------------- cluster
class ClusterKind(str, Enum):
    local = "local"  # embedded Ray in this process
    ray = "ray"  # an existing Ray cluster, through the Jobs API
    codeflare = "codeflare"  # KubeRay through the CodeFlare SDK
    kubeflow = "kubeflow"  # a Kubeflow Trainer v2 TrainJob through the Kubeflow SDK


class Trainer(str, Enum):
    auto = "auto"  # process for one CPU worker of cluster=local without restarts, else ray
    ray = "ray"  # Ray Train: a TorchTrainer's worker group of Ray actors (several workers, restarts)
    process = "process"  # cluster=local, one worker: the training function in the job's own process


class ClusterMode(str, Enum):
    raycluster = "raycluster"  # a long-lived RayCluster, jobs submitted to its dashboard
    rayjob = "rayjob"  # one RayJob CR with the cluster spec inline
    cluster = "cluster"  # kubeflow: a TrainJob on the cluster of the kube credentials
    local = "local"  # kubeflow: the SDK's local process backend on this machine (one node)


@dataclass
class ClusterConfig:
    kind: ClusterKind = ClusterKind.local
    num_workers: int = 1  # Ray Train workers (one process each); codeflare: one worker pod each
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    # local: keep a warm Ray head between runs, stopped after this many idle seconds; 0 = an
    # embedded Ray in the llmops process for this run only
    ray_idle_timeout_s: int = 0
    # local: `process` trains one worker in the job's own process, without Ray Train's start and
    # stop (seconds a short run saves; same loop, checkpoints and resume); `ray` = Ray Train;
    # `auto` = process for one CPU worker with training.max_failures=0, else ray
    trainer: Trainer = Trainer.auto
    # ray and codeflare: the job
    address: Optional[str] = None  # ray: dashboard URL, e.g. http://127.0.0.1:8265
    headers: Dict[str, str] = field(default_factory=dict)  # e.g. Authorization: Bearer ...
    pass_secrets: bool = False  # resolve masked secrets into the job's env_vars
    confirm_stop: bool = False  # ask before stopping a job on Ctrl-C
    follow_logs: bool = True  # print the job's log lines as they come
    job_timeout_s: int = 0  # 0 = no limit; the job is stopped when it runs longer
    poll_interval_s: float = 1.0  # status/log polling period
    python: Optional[str] = None  # interpreter on the cluster; None = this one (local head) or python
    pip: List[str] = field(default_factory=list)  # extra packages for the job's runtime env
    # codeflare: KubeRay
    mode: ClusterMode = ClusterMode.raycluster
    name: Optional[str] = None  # RayCluster name; derived from run id when unset; reused if it exists
    namespace: str = "default"
    image: Optional[str] = None  # required for codeflare: a Ray 2.58 image
    image_pull_secrets: List[str] = field(default_factory=list)
    head_cpus: int = 2
    head_memory_gb: int = 8
    head_gpus: int = 0
    worker_cpus: int = 2
    worker_memory_gb: int = 8
    gpu_resource: str = "nvidia.com/gpu"  # extended resource name for GPUs
    local_queue: Optional[str] = None  # Kueue LocalQueue
    envs: Dict[str, str] = field(default_factory=dict)  # secret values reach pods by secretKeyRef
    env_secret: Optional[str] = None  # existing Secret with the secret envs; None = llmops makes one
    labels: Dict[str, str] = field(default_factory=dict)
    tolerations: List[Dict[str, Any]] = field(default_factory=list)
    volumes: List[Dict[str, Any]] = field(default_factory=list)
    volume_mounts: List[Dict[str, Any]] = field(default_factory=list)
    dashboard_url: Optional[str] = None  # None = http://<name>-head-svc.<namespace>.svc:8265
    keep: bool = False  # leave the cluster up after the run
    apply_timeout_s: int = 300
    ready_timeout_s: int = 900
    ttl_seconds_after_finished: int = 300  # rayjob mode
    managed_by: Optional[str] = None  # rayjob mode: spec.managedBy (kueue.x-k8s.io/multikueue)
    # Kubernetes credentials of every llmops call (cluster backends and serving alike)
    auth: str = "auto"  # auto | kubeconfig | incluster | token
    bearer_env: str = "LLMOPS_K8S_TOKEN"  # auth=token: env var holding the bearer token
    server_env: str = "LLMOPS_K8S_SERVER"  # auth=token: env var holding the API server URL
    # kubeflow: Kubeflow Trainer v2 (also: mode cluster|local, name, namespace, image, envs,
    # labels, local_queue, keep, pip, job_timeout_s, ready_timeout_s, poll_interval_s, auth)
    runtime: str = "torch-distributed"  # TrainingRuntime (namespace) or ClusterTrainingRuntime
    nodes: int = 1  # training nodes (pods); torchrun runs one process per GPU (1 on CPU) in each
    node_cpus: int = 2  # CPU request = limit of each node
    node_memory_gb: int = 8  # memory request = limit of each node, in GiB
    node_gpus: int = 0  # GPUs of each node (nvidia.com/gpu)
    env_from: List[str] = field(default_factory=list)  # "ENV=secret-name/key": env from a Secret


# --------------------------------------------------------------------------------------- dataset
class DatasetSource(str, Enum):
    hub = "hub"  # datasets.load_dataset(name, config_name)
    text_files = "text_files"  # one row per line
    json_files = "json_files"  # JSON lines, one object per row, `text_field` holds the text
    wikitext_raw = "wikitext_raw"  # wiki.{split}.raw files in `dir`, parsed into the HF rows
    stdlib_docs = "stdlib_docs"  # docstrings of this Python's standard library (offline corpus)


class GroupBy(str, Enum):
    batch = "batch"  # run_clm: concatenate each map batch, drop each batch's remainder
    corpus = "corpus"  # pack the whole split, drop one remainder


@dataclass
class DatasetConfig:
    source: DatasetSource = MISSING
    name: Optional[str] = None  # hub id, e.g. wikitext
    config_name: Optional[str] = None  # hub config, e.g. wikitext-2-raw-v1
    revision: Optional[str] = None  # hub dataset revision (branch, tag or commit); null = main
    dir: Optional[str] = None  # folder for wikitext_raw
    train_files: List[str] = field(default_factory=list)
    eval_files: List[str] = field(default_factory=list)
    text_field: str = "text"
    encoding: str = "utf-8"  # text_files, json_files, wikitext_raw: the files' text encoding
    train_split: str = "train"
    eval_split: str = "validation"
    eval_fraction: float = 0.05  # stdlib_docs/text without eval files: share held out
    block_size: int = 1024
    group_by: GroupBy = GroupBy.batch
    map_batch_size: int = 1000
    num_proc: int = 1
    max_train_blocks: Optional[int] = None  # cap (after grouping), for quick runs
    max_eval_blocks: Optional[int] = None


# ----------------------------------------------------------------------------------------- model
class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class AttnImpl(str, Enum):
    sdpa = "sdpa"
    eager = "eager"


@dataclass
class ModelConfig:
    name_or_path: Optional[str] = None  # HF id or local dir; None = a fresh model (below)
    tokenizer: Optional[str] = None  # HF id or local dir; None = name_or_path
    train_tokenizer_vocab: int = 0  # >0 and no tokenizer: train a byte-level BPE on the corpus
    revision: Optional[str] = None
    trust_remote_code: bool = False
    dtype: Dtype = Dtype.float32  # weights as loaded; mixed precision is training.precision
    attn_implementation: AttnImpl = AttnImpl.sdpa
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile
    # fresh GPT-2 (name_or_path null): shape of the random-init model
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    n_positions: int = 1024


# -------------------------------------------------------------------------------------- training
class TrainMethod(str, Enum):
    full = "full"
    lora = "lora"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Scheduler(str, Enum):
    linear = "linear"
    cosine = "cosine"
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: List[str] = field(default_factory=lambda: ["c_attn"])  # GPT-2 (PEFT default)
    keep_adapter: bool = True  # also export the adapter beside the merged model


@dataclass
class TrainingConfig:
    method: TrainMethod = TrainMethod.full
    epochs: float = 3.0
    max_steps: int = -1  # >0 overrides epochs
    max_time_s: int = 0  # 0 = no time budget
    per_device_train_batch_size: int = 2
    per_device_eval_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    lr: float = 5e-5
    lr_scheduler: Scheduler = Scheduler.linear
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: Precision = Precision.fp32
    logging_steps: int = 10
    eval_steps: int = 500  # eval and checkpoint share this schedule
    save_total_limit: int = 2
    dataloader_num_workers: int = 0
    max_failures: int = 0  # Ray Train restarts of a dead worker group
    lora: LoraConfig = field(default_factory=LoraConfig)


# --------------------------------------------------------------------------------------- storage
class StorageKind(str, Enum):
    local = "local"
    s3 = "s3"
    pvc = "pvc"
    oci = "oci"


@dataclass
class StorageConfig:
    kind: StorageKind = StorageKind.local
    root: str = "outputs/models"  # local: folder that holds one prefix per run
    # s3 (credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, or `profile`)
    bucket: Optional[str] = None
    prefix: str = "models"  # models land in s3://<bucket>/<prefix>/<run_id>/{hf,caikit,adapter}/
    endpoint_url: Optional[str] = None  # MinIO / any S3-compatible store; None = AWS
    region: Optional[str] = None
    addressing_style: str = "auto"  # auto | path | virtual (MinIO: path)
    verify: bool = True  # TLS certificate verification
    ca_bundle: Optional[str] = None  # PEM file of the endpoint's CA
    profile: Optional[str] = None  # named profile in ~/.aws/{config,credentials}
    create_bucket: bool = False
    multipart_threshold_mb: int = 16  # files at least this big go in parts (resumable by part)
    multipart_chunk_mb: int = 16  # part size (S3 minimum: 5)
    max_concurrency: int = 8  # parallel requests (files and parts share them)
    max_attempts: int = 5  # per request, on transient errors (connection, 5xx, throttling)
    retry_base_s: float = 0.5  # backoff: base * 2^(attempt-1), jittered, at most 20 s
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    # pvc
    pvc_name: Optional[str] = None
    mount_path: Optional[str] = None  # where the PVC is mounted where the run writes
    # oci: a modelcar image per layout, REGISTRY/REPO:<run_id>, served as oci://REGISTRY/REPO@sha256:...
    # (credentials: LLMOPS_OCI_USERNAME/LLMOPS_OCI_PASSWORD or REGISTRY_AUTH_FILE in the environment;
    # verify, ca_bundle, max_attempts, retry_base_s and the timeouts above apply to the registry too)
    repository: Optional[str] = None  # REGISTRY/REPO, no tag: the run id is the tag
    plain_http: bool = False  # http:// instead of https:// (a registry on loopback)
    base_image: Optional[str] = None  # REGISTRY/REPO:TAG with sh, ln, sleep; None = busybox layer
    busybox: str = "/bin/busybox"  # a static busybox for the shell layer (Debian: busybox-static)


# --------------------------------------------------------------------------------------- serving
class ServingKind(str, Enum):
    none = "none"
    vllm = "vllm"
    caikit_tgis = "caikit_tgis"
    tgis = "tgis"
    hf = "hf"
    llmisvc = "llmisvc"  # LLMInferenceService (KServe v1alpha2, llm-d): vLLM without a ServingRuntime


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


class DeploymentMode(str, Enum):
    RawDeployment = "RawDeployment"
    Serverless = "Serverless"


class StorageBinding(str, Enum):
    service_account = "service_account"  # plain KServe: SA + storageUri
    data_connection = "data_connection"  # OpenShift AI: model.storage {key, path}


@dataclass
class ServingConfig:
    kind: ServingKind = ServingKind.none
    name: Optional[str] = None  # InferenceService name; derived from the run id when unset
    namespace: str = "llmops"
    create_namespace: bool = False  # apply a Namespace first (never deleted by undeploy)
    apply: bool = False  # false: render (and validate) only
    keep: bool = True  # false: delete what was applied at the end of the run (after smoke_test)
    runtime_name: Optional[str] = None  # ServingRuntime name; "<isvc name>-<kind>" when unset
    image: str = MISSING  # the serving container (kserve-container)
    transformer_image: Optional[str] = None  # caikit_tgis: the Caikit container
    model_format: str = MISSING  # ISVC modelFormat.name; must be one the runtime serves
    protocol: Protocol = Protocol.http  # caikit_tgis: http (8080) or grpc (8085 h2c)
    deployment_mode: DeploymentMode = DeploymentMode.RawDeployment
    expose_route: bool = False  # label networking.kserve.io/visibility=exposed
    token_auth: bool = False  # annotation security.opendatahub.io/enable-auth=true
    replicas: int = 1  # predictor min and max replicas
    gpus: int = 0  # nvidia.com/gpu requested and limited
    cpu_request: str = "1"
    cpu_limit: str = "4"
    memory_request: str = "4Gi"
    memory_limit: str = "8Gi"
    tolerations: List[Dict[str, Any]] = field(default_factory=list)  # predictor pod tolerations
    env: Dict[str, str] = field(default_factory=dict)  # extra env; secret values by secretKeyRef
    env_secret: Optional[str] = None  # existing Secret with the secret env; None = llmops makes one
    args: List[str] = field(default_factory=list)  # extra server arguments
    storage_binding: StorageBinding = StorageBinding.service_account
    secret_name: Optional[str] = None  # S3 credentials Secret; "<isvc name>-s3" when unset
    existing_secret: bool = False  # true: secret_name exists already, render none
    ready_timeout_s: int = 900  # wait for Ready at most this long
    poll_interval_s: float = 5.0  # between status reads while waiting
    labels: Dict[str, str] = field(default_factory=dict)  # extra labels on every object
    # --- serving=llmisvc only (an LLMInferenceService: image/args/env/replicas/gpus/resources
    # above are its `main` container's; it has no ServingRuntime, modelFormat or deployment mode)
    model_uri: Optional[str] = None  # spec.model.uri instead of the export's (oci://, hf://, s3://, pvc://)
    scheduler: bool = False  # router.scheduler {} (llm-d's endpoint picker + InferencePool)
    gateway: bool = False  # router.gateway {} (KServe's default Gateway)
    gateway_refs: List[Dict[str, str]] = field(default_factory=list)  # router.gateway.refs [{name, namespace}]
    base_refs: List[str] = field(default_factory=list)  # spec.baseRefs: LLMInferenceServiceConfig names


@dataclass
class SmokeTestConfig:
    prompt: str = "The history of"
    max_new_tokens: int = 20
    target: str = "local"  # local: load the export in-process | endpoint: call the deployed model
    retries: int = 5
    temperature: float = 0.0  # 0: greedy; > 0: sampled (OpenAI-style APIs)
    seed: Optional[int] = None  # with temperature > 0: the same reply every time


@dataclass
class PathsConfig:
    output_root: str = "outputs"  # run directories: <output_root>/<run_id>
    cache_dir: str = "~/.cache/llmops"  # tokenized data, trained tokenizers


@dataclass
class SweepConfig:
    """Multirun (`-m`) behaviour; read by the sweep summary and the launchers."""

    fail_fast: bool = False  # true: after a failed job, jobs not yet started are not run
    metric: str = "perplexity"  # train metric the summary ranks jobs by (state.json train.metrics)
    direction: str = "minimize"  # minimize | maximize
    prepare_once: bool = True  # ray launcher: prepare each distinct dataset once before the jobs
    plot: bool = True  # write sweep.png (metric against each swept parameter)


@dataclass
class LLMOpsConfig:
    recipe: str = "quickstart"  # set by the CLI from the recipe file name
    run_name: str = "${recipe}"
    run_id: str = "${run_name}-${now:%Y%m%d-%H%M%S}"
    seed: int = 42
    stages: List[Stage] = field(default_factory=lambda: [Stage(s) for s in ALL_STAGES])
    paths: PathsConfig = field(default_factory=PathsConfig)
    cluster: ClusterConfig = MISSING
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    training: TrainingConfig = MISSING
    storage: StorageConfig = MISSING
    serving: ServingConfig = MISSING
    smoke_test: SmokeTestConfig = field(default_factory=SmokeTestConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


GROUPS: Dict[str, type] = {
    "cluster": ClusterConfig,
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "storage": StorageConfig,
    "serving": ServingConfig,
}

SCHEMA_NAME = "_schema"
ROOT_SCHEMA_NAME = "_llmops_schema"

_registered = False


def register() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name=ROOT_SCHEMA_NAME, node=LLMOpsConfig)
    for group, node in GROUPS.items():
        cs.store(group=group, name=SCHEMA_NAME, node=node)
    _registered = True


def typed(plain: dict):
    """A typed, struct-mode config from a plain resolved dict (e.g. one shipped to a worker)."""
    from omegaconf import OmegaConf

    root = OmegaConf.structured(LLMOpsConfig)
    for g, cls in GROUPS.items():
        root[g] = OmegaConf.structured(cls)
    merged = OmegaConf.merge(root, {k: v for k, v in plain.items() if k != "hydra"})
    OmegaConf.set_struct(merged, True)
    return merged
