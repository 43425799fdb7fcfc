"""What a recipe is: the points where one task's pipeline differs from another's.

The stages (train, decode, baseline, score) are generic: at each such point they ask the
config's recipe (``slam.recipes.recipe_of(cfg)``). A recipe module subclasses
:class:`Recipe` (usually through ``slam.recipes.asr.SpeechRecognition``) and registers an
instance under the name configs use (``recipe: asr``).

This module imports no stage, so the stages can import it; the recipe modules import the
stages they call and are loaded when a recipe is first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from slam.data.cache import cache_dim
from slam.score.metrics import error_rate

if TYPE_CHECKING:
    import torch
    from lhotse import CutSet

    from slam.config import SlamConfig
    from slam.data.cuts import AudioTextDataset
    from slam.model.speech_llm import SpeechLLM
    from slam.score.stage import Scoring

# decode: transcribe(cuts, num_beams) -> one answer per cut
Transcribe = Callable[["CutSet", int], list[str]]
# train: writes one extra asset (a CTC head, a contrastive model) into the model directory
AssetWriter = Callable[[Path], None]


@dataclass
class TrainingRows:
    """How the dataset makes a training row; ``None`` is plain ASR's choice (the fixed prompt,
    the transcript as answer, the cached encoder frames as input)."""

    instruction: Callable[..., str] | None = None  # (cut, epoch, step) -> prompt
    target: Callable[..., str] | None = None  # (cut, epoch, step) -> answer
    features: Callable[..., Any] | None = None  # (cut, epoch) -> the projector's input
    summary: dict[str, Any] = field(default_factory=dict)  # train.json entries of this step
    state: dict[str, Any] = field(default_factory=dict)  # kept for after_training


class Recipe:
    """Neutral defaults; the stage-calling parts (baseline, scoring) each recipe names."""

    description: ClassVar[str]  # for people: listings, the docs
    # The answer is the utterance's transcript: WER scoring, Whisper's decoder as the
    # baseline (and fine-tunable on the same data), the by-voice breakdown report.
    answers_are_transcripts: ClassVar[bool] = True
    # The answer is what was said, whatever the prompt (a fixed one or a row's keyword list):
    # joint CTC/LLM decoding (``decode.ctc_weight``) applies.
    joint_ctc_decoding: ClassVar[bool] = False
    whisper_task: ClassVar[str] = "transcribe"  # what the Whisper baseline is asked to do
    # the dev error rate that keeps the best checkpoint (slam.score.metrics.TRANSCRIPT_SCORERS;
    # logged as dev_wer whatever it is)
    error_rate: ClassVar[str] = "wer"

    def dev_error(self, cfg: SlamConfig, answers: dict[str, str], hyps: dict[str, str]) -> float:
        """What the kept checkpoint is best by: the error of free-running ``hyps`` against the
        dev ``answers`` (the training targets, by cut id); lower is better."""
        return error_rate(self.error_rate, answers, hyps, cfg.score.normalizer)

    def for_config(self, cfg: SlamConfig) -> Recipe:
        """The variant other keys select (e.g. ``aac`` with ``caption.zero_shot``)."""
        return self

    # -- train ---------------------------------------------------------------------------
    def run_key(self, cfg: SlamConfig) -> dict[str, Any]:
        """Config sections beyond the model's that shape training (a checkpoint's key)."""
        return {}

    def check_training(self, cfg: SlamConfig, use_cache: bool) -> None:
        """Raise ``ConfigError`` for a config this recipe cannot train."""

    def llm_input_dim(self, cfg: SlamConfig) -> int:
        """The projector's input width when it reads cached vectors."""
        return cache_dim(cfg)

    def default_instruction(self, cfg: SlamConfig) -> str:
        """The prompt of a row without one of its own."""
        return cfg.train.prompt

    def training_rows(self, cfg: SlamConfig, train_cuts: CutSet, dev_cuts: CutSet) -> TrainingRows:
        return TrainingRows()

    def after_training(
        self, cfg: SlamConfig, train_cuts: CutSet, rows: TrainingRows, model: SpeechLLM,
        dataset: AudioTextDataset, device: torch.device, summary: dict[str, Any],
    ) -> list[AssetWriter]:  # fmt: skip
        """Models fitted once the LLM is trained (rank 0), as writers into the model
        directory; their figures go into ``summary``."""
        return []

    # -- decode --------------------------------------------------------------------------
    def decode_key(self, cfg: SlamConfig) -> list[Any]:
        """Settings beyond the model's that shape this recipe's answers."""
        return []

    def prepare_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, assets: Path,
        device: torch.device, use_cache: bool,
    ) -> dict[str, CutSet]:  # fmt: skip
        """The sets to decode (a recipe may decode a set once per condition) and the
        dataset's rows for them."""
        return sets

    def after_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model: SpeechLLM,
        transcribe: Transcribe, assets: Path,
    ) -> None:  # fmt: skip
        """More systems from the trained model (rank 0), after the beams are written."""

    # -- baseline and score --------------------------------------------------------------
    def baseline(self, cfg: SlamConfig) -> dict[str, Any]:
        """The baseline stage's system (rank 0 returns its summary)."""
        raise NotImplementedError

    def scoring(self) -> Scoring:
        raise NotImplementedError
