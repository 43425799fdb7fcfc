"""Speech translation with a multimodal chain of thought (paper IV-D, Table X; recipe ``st``).

The three tasks share the model and differ only in the prompt, as Table X designs them, with
``<|xx|>`` language tags (source ``fr``, target ``en`` here):

=====  ===========================  ====================================
task   instruction                  answer
=====  ===========================  ====================================
ASR    ``<|fr|>``                   ``transcript``
MMT    ``transcript<|en|>``         ``transcript <|en|>translation``
SRT    ``<|en|>``                   ``transcript <|en|>translation``
=====  ===========================  ====================================

SRT is the chain of thought: the model writes what it heard, then translates it. Training
follows a curriculum (``st.curriculum``): stages over shares of ``train.max_steps``, each with
its tasks (``asr+mmt``: every row draws one, seeded by cut and epoch). Decoding runs SRT and a
cascade (ASR, then MMT on the model's own transcript), plus MMT on the reference transcript
as the upper bound of the second step.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection
from typing import Any

from slam.config import ConfigError, SlamConfig
from slam.data.corpora.parallel import TRANSLATION
from slam.data.cuts import cut_text

log = logging.getLogger(__name__)

TASKS = ("asr", "mmt", "srt")
# hypothesis files the decode stage writes beside the SRT beams: label -> system
CASCADE, MMT_GOLD = "cascade", "mmt_gold"


def tag(language: str) -> str:
    return f"<|{language}|>"


def translation_of(cut: Any) -> str:
    custom = cut.supervisions[0].custom or {} if cut.supervisions else {}
    if TRANSLATION not in custom:
        raise KeyError(f"cut {cut.id} has no translation (supervision custom[{TRANSLATION!r}])")
    return custom[TRANSLATION]


def instruction(task: str, source: str, target: str, transcript: str = "") -> str:
    """Table X's instruction of ``task``; MMT's holds the transcript to translate."""
    return {"asr": tag(source), "mmt": f"{transcript}{tag(target)}", "srt": tag(target)}[task]


def answer(task: str, target: str, transcript: str, translation: str) -> str:
    return transcript if task == "asr" else f"{transcript} {tag(target)}{translation}"


def split_output(text: str, target: str) -> tuple[str | None, str]:
    """``(transcript, translation)`` of an SRT or MMT output; without the target tag there is
    no transcript part and the whole output counts as the translation."""
    transcript, found, translation = text.rpartition(tag(target))
    return (transcript.strip(), translation.strip()) if found else (None, text.strip())


class Curriculum:
    """Which task each training row learns, by training step (``st.curriculum``)."""

    def __init__(self, cfg: SlamConfig, srt_cuts: Collection[str] = ()) -> None:
        # cuts always asked SRT whatever the stage: the dev cuts, so that the dev BLEU which keeps
        # a checkpoint is that of the task decoded (an MMT row reads the reference transcript)
        self.srt_cuts = frozenset(srt_cuts)
        stages, fractions = list(cfg.st.curriculum), list(cfg.st.stage_fractions)
        if not stages or len(stages) != len(fractions):
            raise ConfigError(f"st.curriculum {stages} and st.stage_fractions {fractions} "
                              "must be non-empty and of the same length")  # fmt: skip
        if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(f"st.stage_fractions {fractions} must be positive and sum to 1")
        self.stages = [stage.split("+") for stage in stages]
        unknown = {t for tasks in self.stages for t in tasks} - set(TASKS)
        if unknown:
            raise ConfigError(f"st.curriculum: unknown task(s) {sorted(unknown)}; known: {list(TASKS)}")
        if not cfg.corpus.translation_language:
            raise ConfigError("recipe st needs corpus.translation_language")
        self.source, self.target = cfg.corpus.language, cfg.corpus.translation_language
        # the first step of each stage after the first
        self.starts, total = [], 0.0
        for f in fractions[:-1]:
            total += f
            self.starts.append(round(total * cfg.train.max_steps))

    def tasks_at(self, step: int) -> list[str]:
        return self.stages[sum(step >= s for s in self.starts)]

    def task(self, cut: Any, epoch: int, step: int) -> str:
        if cut.id in self.srt_cuts:
            return "srt"
        tasks = self.tasks_at(step)
        draw = int.from_bytes(hashlib.sha256(f"{cut.id}:{epoch}".encode()).digest()[:4], "big")
        return tasks[draw % len(tasks)]

    def instruction(self, cut: Any, epoch: int, step: int) -> str:
        return instruction(self.task(cut, epoch, step), self.source, self.target, cut_text(cut))

    def answer(self, cut: Any, epoch: int, step: int) -> str:
        return answer(self.task(cut, epoch, step), self.target, cut_text(cut), translation_of(cut))


def srt_instruction(cfg: SlamConfig) -> str:
    """The fixed prompt of recipe st: SRT, the chain of thought."""
    return instruction("srt", cfg.corpus.language, cfg.corpus.translation_language)


def task_instruction(task: str, cfg: SlamConfig, transcripts: dict[str, str] | None = None
                       ) -> Callable[[Any, int, int], str]:  # fmt: skip
    """A decode row's instruction for ``task``; MMT reads the row's transcript from
    ``transcripts`` (cut id -> text) or, without them, the reference."""
    source, target = cfg.corpus.language, cfg.corpus.translation_language

    def make(cut: Any, epoch: int = 0, step: int = 0) -> str:
        transcript = transcripts[cut.id] if transcripts is not None else cut_text(cut)
        return instruction(task, source, target, transcript)

    return make
