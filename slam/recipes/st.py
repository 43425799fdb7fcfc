"""Recipe ``st``: speech translation with the paper's chain of thought (Tables X-XI,
slam.tasks.translation).

A curriculum trains ASR, then MMT, then SRT (transcript, target-language tag, translation);
after the SRT beams the decode stage adds the cascade (the model's ASR, then its MMT) and MMT
on the reference transcript. The baseline is Whisper's own translation into English.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from lhotse import CutSet
from tqdm import tqdm

from slam.config import SlamConfig
from slam.data.cuts import AudioTextDataset, batches_of, cut_text
from slam.decode.hyps import write_hyps
from slam.model.speech_llm import SpeechLLM
from slam.recipes import RECIPES
from slam.recipes.asr import whisper_baseline
from slam.recipes.base import Recipe, TrainingRows, Transcribe
from slam.score.metrics import score_translation
from slam.score.stage import TRANSLATION_SCORING, Scoring
from slam.tasks.translation import (
    CASCADE,
    MMT_GOLD,
    Curriculum,
    split_output,
    srt_instruction,
    tag,
    task_instruction,
)

log = logging.getLogger(__name__)


@RECIPES.register("st")
class SpeechTranslation(Recipe):
    description = "speech translation"
    answers_are_transcripts = False
    whisper_task = "translate"  # Whisper's own speech translation (into English only)

    def run_key(self, cfg: SlamConfig) -> dict[str, Any]:
        return {"st": dataclasses.asdict(cfg.st)}

    def dev_error(self, cfg: SlamConfig, answers: dict[str, str], hyps: dict[str, str]) -> float:
        """1 - BLEU / 100 of the translations (the part after the target tag), so that the kept
        checkpoint is the one with the best dev BLEU. The dev rows are SRT at every stage of the
        curriculum; answers without a translation (none to score) count as 1."""
        target = cfg.corpus.translation_language
        parts = {i: split_output(a, target) for i, a in answers.items()}
        refs = {i: translation for i, (transcript, translation) in parts.items() if transcript is not None}
        if not refs:
            return 1.0
        translations = {i: split_output(hyps[i], target)[1] for i in refs}
        return 1.0 - score_translation(refs, translations)["summary"]["bleu"] / 100

    def default_instruction(self, cfg: SlamConfig) -> str:
        return srt_instruction(cfg)  # the chain of thought: transcript, then translation

    def training_rows(self, cfg: SlamConfig, train_cuts: CutSet, dev_cuts: CutSet) -> TrainingRows:
        # the curriculum's task decides prompt and answer; dev rows are SRT throughout
        curriculum = Curriculum(cfg, srt_cuts={c.id for c in dev_cuts})
        return TrainingRows(instruction=curriculum.instruction, target=curriculum.answer)

    def decode_key(self, cfg: SlamConfig) -> list[Any]:
        return [cfg.recipe, cfg.corpus.language, cfg.corpus.translation_language]

    def after_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model: SpeechLLM,
        transcribe: Transcribe, assets: Path,
    ) -> None:  # fmt: skip
        """Greedy: ``<set>.cascade.jsonl`` (ASR, then MMT on the model's own transcript;
        written as ``transcript <|xx|>translation`` like SRT) and ``<set>.mmt_gold.jsonl`` (MMT
        on the reference transcript: the translation step alone)."""
        out, target = Path(cfg.decode.dir), cfg.corpus.translation_language

        def run(cuts: CutSet, task: str, transcripts: dict[str, str] | None = None) -> dict[str, str]:
            dataset.instruction = task_instruction(task, cfg, transcripts)
            hyps = {}
            for batch in tqdm(list(batches_of(cuts, cfg.decode.batch_size)), desc=f"{task}"):
                hyps.update(zip([c.id for c in batch], transcribe(batch, 1)))
            return hyps

        for name, cuts in sets.items():
            transcripts = run(cuts, "asr")
            cascade = run(cuts, "mmt", transcripts)
            gold = run(cuts, "mmt")
            write_hyps(out / f"{name}.{CASCADE}.jsonl",
                       [{"id": c.id, "ref": cut_text(c),
                         "hyp": f"{transcripts[c.id]} {tag(target)}{split_output(cascade[c.id], target)[1]}"}
                        for c in cuts])  # fmt: skip
            write_hyps(out / f"{name}.{MMT_GOLD}.jsonl",
                       [{"id": c.id, "ref": cut_text(c), "hyp": split_output(gold[c.id], target)[1]}
                        for c in cuts])  # fmt: skip
            log.info("%s: cascade (ASR then MMT) and MMT on the reference transcript written", name)
        dataset.instruction = None

    def baseline(self, cfg: SlamConfig) -> dict[str, Any]:
        return whisper_baseline(cfg)

    def scoring(self) -> Scoring:
        return TRANSLATION_SCORING
