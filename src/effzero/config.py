"""Config schemas: one dataclass per Hydra group, registered so every YAML is type-checked.

A YAML file of a group starts from its schema (`defaults: [<group>_schema, _self_]`, or a
kind's schema such as `dmc_schema` in the env group), so a misspelt key or a wrong type fails
at composition, before anything starts. The code receives these dataclasses
(`OmegaConf.to_object`), never raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class EnvKind(str, Enum):
    gym = "gym"
    atari = "atari"
    dmc = "dmc"


class ModelKind(str, Enum):
    proprio = "proprio"
    image = "image"


class SearchKind(str, Enum):
    gumbel = "gumbel"
    puct = "puct"


class UnvisitedQ(str, Enum):
    parent_mean = "parent_mean"
    zero = "zero"


class ValueTarget(str, Enum):
    td = "td"
    sve = "sve"
    mixed = "mixed"


class ContinuousPolicyLoss(str, Enum):
    ezv2 = "ezv2"  # cross-entropy over the K candidates for 1-D actions, −log p(best candidate) otherwise
    candidates = "candidates"  # cross-entropy over the K candidates always (Sampled MuZero)


class WorkerPrecision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class OptimName(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


@dataclass
class EnvConfig:
    """The environment and its benchmark protocol (the fields every kind has)."""

    kind: EnvKind = EnvKind.gym  # gym: any gymnasium env with vector observations
    id: str = MISSING  # the env's name: a gymnasium id, an Atari game, domain-task for DMC
    discount: float = 0.997  # per agent step
    max_episode_steps: int | None = None  # None keeps the protocol's own limit
    num_envs: int = 4  # environments per self-play worker, searched as one batch
    # Decoded values are clipped to [low, high], in search, targets and priorities: what the
    # env's returns cannot leave (EZ-V2: [0, 1e5] on DMC, whose rewards lie in [0, 1]); None: no clip
    value_bounds: list[float] | None = None

    def __post_init__(self) -> None:
        bounds = self.value_bounds
        if bounds is not None and not (len(bounds) == 2 and bounds[0] < bounds[1]):
            raise ValueError(
                f"env.value_bounds={list(bounds)} must be [low, high] with low < high, "
                "e.g. env.value_bounds=[0,1e5]; or env.value_bounds=null for no clip"
            )


@dataclass
class AtariEnvConfig(EnvConfig):
    """Atari 100k: frame skip 4, max-pool, 30 no-ops, 96×96 RGB, 4 frames (the protocol in envs/atari.py)."""

    kind: EnvKind = EnvKind.atari
    game: str = MISSING  # lower-case: breakout, ms_pacman, ...


@dataclass
class DMCEnvConfig(EnvConfig):
    """The DeepMind Control Suite: 1000 simulator steps per episode."""

    kind: EnvKind = EnvKind.dmc
    domain: str = MISSING  # e.g. walker
    task: str = MISSING  # e.g. walk
    pixels: bool = False  # 96×96 RGB, 4 stacked frames; otherwise the flattened proprio state
    action_repeat: int = 2


@dataclass
class SupportConfig:
    """A categorical support: `bins` atoms spread evenly in h-space between h(low), h(high)."""

    low: float = -300.0
    high: float = 300.0
    bins: int = 51
    in_h_space: bool = False  # low and high are already transformed (Atari: -300..300, 601 bins)


@dataclass
class ModelConfig:
    """World-model sizes (EZ-V2's proprio family for vector observations)."""

    kind: ModelKind = ModelKind.proprio
    hidden: int = 128
    rep_hidden: int = 256
    dyn_hidden: int = 256
    action_embed: int = 64
    head_hidden: list[int] = field(default_factory=lambda: [256, 256])
    num_blocks: int = 2
    proj_hidden: int = 512
    proj_dim: int = 128
    pred_hidden: int = 512
    value_prefix: bool = False  # EZ-V1's LSTM reward head (EZ-V2's proprio model predicts per-step rewards)
    lstm_hidden: int = 128
    lstm_horizon: int = 5  # steps between LSTM resets
    value_support: SupportConfig = field(default_factory=SupportConfig)
    reward_support: SupportConfig = field(default_factory=lambda: SupportConfig(low=-2.0, high=2.0, bins=51))


@dataclass
class ImageModelConfig:
    """World-model sizes of EZ-V2's image family (Atari, DMC vision): a 64×6×6 latent."""

    kind: ModelKind = ModelKind.image
    channels: int = 64
    num_blocks: int = 1
    reduced_channels: int = 16  # the heads' 1×1 convolution
    head_hidden: list[int] = field(default_factory=lambda: [32])
    policy_hidden: list[int] = field(default_factory=lambda: [32])
    action_embed: int = 16
    value_prefix: bool = True  # an LSTM predicts Σ rewards since its last reset
    lstm_hidden: int = 512
    lstm_horizon: int = 5  # steps between LSTM resets
    proj_hidden: int = 1024
    proj_dim: int = 1024
    pred_hidden: int = 256
    zero_init_value: bool = True
    value_support: SupportConfig = field(
        default_factory=lambda: SupportConfig(-300.0, 300.0, 601, in_h_space=True)
    )
    reward_support: SupportConfig = field(
        default_factory=lambda: SupportConfig(-300.0, 300.0, 601, in_h_space=True)
    )


@dataclass
class SearchConfig:
    """Tree search used to act and to reanalyse."""

    kind: SearchKind = SearchKind.gumbel  # gumbel | puct (discrete actions)
    num_simulations: int = 16
    max_considered: int = 16  # Gumbel-top-m at the root
    c_visit: float = 50.0
    c_scale: float = 0.1
    min_spread: float = 0.01  # smallest max - min of the Q normalisation
    visit_offset: float = 1.0  # Gumbel: a node's N = ΣN(children) + this (EZ-V2's code: 1; the paper: 0)
    noise_in_reanalyse: bool = True  # Gumbel noise in reanalysis searches (EZ-V2: on)
    compile: bool = False  # torch.compile each worker's search (model calls included) into one graph
    # continuous actions: K = k_policy + k_wide root candidates (k_wide from σ × std_magnification)
    k_policy: int = 4
    k_wide: int = 12
    std_magnification: float = 3.0
    k_interior: int = 2  # children drawn from the policy at every other node
    continuous_noise: bool = False  # Gumbel noise over candidates (EZ-V2: none; exploration = widening)
    # pUCT (MuZero, EfficientZero V1)
    c1: float = 1.25
    c2: float = 19652.0
    unvisited_q: UnvisitedQ = UnvisitedQ.parent_mean  # an unvisited child's Q: parent_mean (EfficientZero's chained mean) | zero (MuZero's pseudocode: q̂ = 0)
    dirichlet_alpha: float = 0.3
    dirichlet_fraction: float = 0.25
    temperature: float = 1.0
    temperature_decay: bool = False  # pUCT self-play: the temperature ×0.5 past 50% and ×0.25 past 75% of the env-step budget (MuZero, EZ-V1)

    def __post_init__(self) -> None:
        if self.compile and self.kind != SearchKind.gumbel:
            raise ValueError(
                f"search.compile=true needs search.kind=gumbel, got {self.kind.value}: a pUCT "
                "search's depth grows with every simulation, so its graph would be huge; "
                "set search.compile=false"
            )


@dataclass
class AlgoConfig:
    """Targets and losses: what the ablations swap."""

    name: str = "ezv2"
    unroll_steps: int = 5
    td_steps: int = 5
    value_target: ValueTarget = ValueTarget.mixed
    mixed_t1: int = 40_000  # learner step before which the value target is TD only
    mixed_t2: int = 20_000  # the newest T2 transitions keep TD targets
    reward_coef: float = 1.0
    value_coef: float = 0.25
    policy_coef: float = 1.0
    consistency: bool = True  # SimSiam temporal consistency, weighted by consistency_coef
    consistency_coef: float = 2.0
    off_policy_correction: bool = False  # EZ-V1: horizon shrinks with data age
    correction_ratio: float = 0.3  # one step shorter per correction_ratio × correction_span env steps of age
    correction_span: int = 100_000  # the presets set the run's total env steps
    continuous_policy_loss: ContinuousPolicyLoss = ContinuousPolicyLoss.ezv2
    entropy_coef: float = 0.0  # continuous policies: bonus on the policy's entropy (EZ-V2 DMC: 5e-2 / 5e-3)
    # Monte-Carlo samples of that entropy per row (EZ-V2: 1024). Its gradient averages rows × samples
    # (DMC: 1,536 × 256), so more add little; on one CPU thread 1024 cost 1.04 s per update, 256 0.15 s.
    entropy_samples: int = 256
    augmentation: bool = True  # image observations: random shift (4 px) and intensity (0.05)
    latent_grad_scale: float = 0.5  # gradient into each unrolled latent
    # true: from all that reads the latent, its step's heads too (EfficientZero's hook);
    # false: from the later steps only (MuZero's pseudocode scales after the heads)
    latent_grad_scale_heads: bool = True


@dataclass
class OptimConfig:
    """Optimiser and the warm-up + step-decay learning-rate schedule."""

    name: OptimName = OptimName.adam
    lr: float = 3e-4
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    decay_every: int = 0  # multiply the lr by decay_rate every this many steps after warm-up; 0 = never
    decay_rate: float = 0.1


@dataclass
class DataConfig:
    """Collection, replay and the reanalysed stream."""

    total_env_steps: int = 100_000  # agent steps collected over the run (all ranks together)
    start_transitions: int = 2000  # env steps before the first update
    replay_ratio: float = 1.0  # learner updates per env step
    offline_updates: int = 0  # updates after collection ends
    batch_size: int = 256
    capacity: int | None = None  # replay slots; None = enough for the whole run
    priority_alpha: float = 1.0
    priority_beta: float = 1.0
    selfplay_workers: int = 1
    reanalyse_workers: int = 1
    queue_size: int = 4  # ready batches waiting for the learner
    selfplay_refresh: int = 100  # learner steps between weight refreshes of self-play
    target_refresh: int = 200  # learner steps between target swaps (lag 200-400)
    worker_threads: int = 1  # torch threads per worker process
    worker_device: str = "cpu"
    worker_precision: WorkerPrecision = WorkerPrecision.fp32  # of the workers' model calls
    batch_timeout_s: float = 600.0  # longest wait for a batch: stuck (a worker compiling stops the clock)
    max_worker_restarts: int = 3  # restarts after a crash or hang per run; one more failure stops it
    worker_timeout_s: float = 120.0  # no heartbeat this long: hung (a starting worker gets ≥ 60 s)
    # (a worker compiling its search, search.compile=true, beats from a thread meanwhile)
    synchronous: bool = False  # collect and reanalyse in the learner's process: reproducible, slower

    def __post_init__(self) -> None:
        for name in ("selfplay_workers", "reanalyse_workers", "selfplay_refresh", "target_refresh"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"data.{name}={getattr(self, name)} must be at least 1; set data.{name}=1 or more"
                )


@dataclass
class EvalConfig:
    """Evaluation with noise-free search, in the learner process."""

    every: int = 1000  # learner steps; 0 = only at the end
    episodes: int = 10
    max_episode_steps: int | None = None  # None = the env's own limit
    video: bool = False

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(
                f"eval.episodes={self.episodes} must be at least 1 (every run ends with an evaluation); "
                "eval.every=0 evaluates only at the end"
            )


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    log_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    """The root of `configs/train.yaml`."""

    env: Any = MISSING  # an EnvConfig of its kind
    model: Any = MISSING  # ModelConfig or ImageModelConfig
    search: SearchConfig = MISSING
    algo: AlgoConfig = MISSING
    optim: OptimConfig = MISSING
    data: DataConfig = MISSING
    eval: EvalConfig = MISSING
    paths: PathsConfig = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    task_name: str = "train"
    name: str = "default"  # the experiment: MLflow experiment name and the run's tag
    tags: list[str] = field(default_factory=list)
    seed: int = 0
    ckpt_path: str | None = None
    compile: bool = False  # torch.compile the learner's unroll and losses
    threads: int | None = None  # torch CPU threads of the learner; None = torch's default
    max_nonfinite_steps: int = 20  # updates in a row with a NaN/inf loss (each skipped) before the run stops
    tracking_wait_s: float = 60.0  # how long to wait for a locked MLflow database before giving up


SCHEMAS = {
    "env": EnvConfig,
    "model": ModelConfig,
    "env/atari": AtariEnvConfig,
    "env/dmc": DMCEnvConfig,
    "model/image": ImageModelConfig,
    "search": SearchConfig,
    "algo": AlgoConfig,
    "optim": OptimConfig,
    "data": DataConfig,
    "eval": EvalConfig,
    "paths": PathsConfig,
}


ENV_SCHEMAS = {EnvKind.gym: EnvConfig, EnvKind.atari: AtariEnvConfig, EnvKind.dmc: DMCEnvConfig}
MODEL_SCHEMAS = {ModelKind.proprio: ModelConfig, ModelKind.image: ImageModelConfig}


def as_config(schema: type, values: dict) -> Any:
    """A config dataclass (nested ones included) from a plain dict, type-checked."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def load(schemas: dict, values: dict) -> Any:
    """The config dataclass of kind `values["kind"]` from a plain dict (e.g. a checkpoint's)."""
    kind = type(next(iter(schemas)))(values["kind"])
    return as_config(schemas[kind], values)


def register_schemas() -> None:
    """Make `<group>_schema` available to the YAML defaults lists."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for key, schema in SCHEMAS.items():
        group, _, kind = key.partition("/")
        store.store(group=group, name=f"{kind or group}_schema", node=schema)
