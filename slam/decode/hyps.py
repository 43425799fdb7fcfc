"""Hypothesis files, what the decode and baseline stages write and the score stage reads.

``<dir>/<set>.<label>.jsonl``: one ``{"id", "ref", "hyp"}`` row per cut. The label says which
decoding made it: ``beam<N>`` for the systems' beams, or a reading of its own (the CTC head's
best path, the fine-tuned Whisper decoder, CLAP-Refine, ...). ``<dir>/run.json`` holds the
MLflow run that decoded them. What the results tables call each label is here too, so the
stages and reports name systems alike.
"""

from __future__ import annotations

import json
from pathlib import Path

from slam.utils import atomic_write_text

RUN_FILE = "run.json"
CTC_READING = "ctc"  # the CTC head's own reading (best path), beside the LLM's beams
FINETUNED = "finetuned"  # Whisper's decoder fine-tuned on the training set (slam.train.whisper_finetune)

# system name -> how the results table labels it
SYSTEMS = {"llm": "LLM-based (encoder + projector + LLM)", "whisper": "Whisper (own decoder)"}
# hypothesis labels other than beams -> (system, decoding), in the table's order after the beams
READINGS = {CTC_READING: ("CTC head of the projector, alone (no LLM)", "best path"),
            FINETUNED: ("Whisper (own decoder), fine-tuned on the training set", "greedy")}  # fmt: skip


def write_hyps(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_hyps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def decoding_name(beam: str) -> str:
    return "greedy" if beam == "1" else f"beam {beam}"


def beam_width(label: str) -> int | None:
    """N of a label ``beam<N>``, else None."""
    width = label.removeprefix("beam")
    return int(width) if label.startswith("beam") and width.isdigit() else None


def label_order(label: str) -> tuple[int, int, str]:
    """A system's beams by width, then the other readings in READINGS' order, then any other
    label by name."""
    width = beam_width(label)
    if width is not None:
        return 0, width, ""
    known = list(READINGS)
    return (1, known.index(label), "") if label in known else (2, 0, label)


def wer_system(system: str, label: str) -> tuple[str, str]:
    """The results table's system name and decoding of a hypothesis label."""
    if label in READINGS:
        return READINGS[label]
    width = beam_width(label)
    return SYSTEMS.get(system, system), label if width is None else decoding_name(str(width))
