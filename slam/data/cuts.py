"""Batches for training and decoding: Lhotse cuts in, padded tensors and token ids out."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet
from transformers import PreTrainedTokenizerBase

from slam.data.corpora.validate import BadInputError, audio_path
from slam.model.encoders import AudioEncoder
from slam.model.encoders.base import pad_features

log = logging.getLogger(__name__)
ENCODER_OUT = "encoder_out"  # name of the cached array on each cut
# A cut may pass its encoder's window by less than one 10 ms feature frame: nothing is lost.
LENGTH_SLACK = 0.01


def cut_text(cut: Any) -> str:
    return " ".join(s.text.strip() for s in cut.supervisions if s.text)


class AudioTextDataset(torch.utils.data.Dataset):
    """Maps a CutSet (one batch from a Lhotse sampler) to model inputs.

    With ``encoder`` unset the cuts carry cached encoder outputs; otherwise the encoder's
    input features are extracted from the audio here and the encoder runs in the step.
    ``instruction(cut, epoch, step)``, when given, makes each row's own instruction (a prompt
    with the cut's biasing list, a speech-translation task's prompt); batches then carry
    ``instructions``. ``target(cut, epoch, step)``, when given, makes each row's answer (one of
    a clip's reference captions, transcript and translation) instead of its text.
    ``features(cut, epoch)``, when given, makes each row's input frames instead of the cache
    (zero-shot captioning: a caption's or a clip's vector in a joint audio-text space).
    ``answer_text(text)``, when given, rewrites a transcript answer (not a ``target``'s) as the
    model is to write it (``train.answer_normalizer``). ``keywords(cut)``, when given, is each
    row's keyword list for decoding (``decode.keyword_bonus``); batches then carry ``keywords``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder: AudioEncoder | None = None,
        instruction: Callable[[Any, int, int], str] | None = None,
        target: Callable[[Any, int, int], str] | None = None,
        features: Callable[[Any, int], torch.Tensor] | None = None,
        answer_text: Callable[[str], str] | None = None,
        keywords: Callable[[Any], list[str]] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.instruction = instruction
        self.target = target
        self.features = features
        self.answer_text = answer_text
        self.keywords = keywords
        self.epoch = 0  # set by the training loop: random training lists change every epoch
        self.step = 0  # set by the training loop: the speech-translation curriculum's stages

    def tokenize(self, text: str) -> list[int]:
        """The answer tokens a transcript becomes."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def transcript(self, cut: Any) -> str:
        """The cut's transcript as the model is to write it."""
        text = cut_text(cut)
        return self.answer_text(text) if self.answer_text else text

    def token_counts(self, cuts: CutSet) -> Counter[int]:
        """How often each answer token occurs in ``cuts``' transcripts (a training set's CTC classes)."""
        return Counter(t for cut in cuts for t in self.tokenize(self.transcript(cut)))

    def __getitem__(self, cuts: CutSet) -> dict[str, Any]:
        cuts = cuts.sort_by_duration(ascending=False)
        if self.features is not None:
            feats = [self.features(c, self.epoch).float() for c in cuts]
        elif self.encoder is None:
            feats = [torch.from_numpy(c.load_custom(ENCODER_OUT)).float() for c in cuts]
        else:
            # a cut past the encoder's window is cut there by it (callers decide first: fit_window)
            feats = [self.encoder.load_input(c) for c in cuts]
        inputs, lengths = pad_features(feats)
        texts = [self.target(c, self.epoch, self.step) if self.target else self.transcript(c) for c in cuts]
        targets = [self.tokenize(t) for t in texts]
        # The CTC head reads the audio, so its target is what is said, also when the answer is
        # more than that (speech translation's transcript + translation)
        ctc_targets = targets if self.target is None else [self.tokenize(self.transcript(c)) for c in cuts]
        batch = {
            "ids": [c.id for c in cuts],
            "inputs": inputs,
            "lengths": lengths,
            "texts": texts,
            "targets": targets,
            "ctc_targets": ctc_targets,
            "duration": sum(c.duration for c in cuts),
            "encoded": self.encoder is None,  # inputs are cached encoder outputs, not features
        }
        if self.instruction is not None:
            batch["instructions"] = [self.instruction(c, self.epoch, self.step) for c in cuts]
        if self.keywords is not None:
            batch["keywords"] = [self.keywords(c) for c in cuts]
        return batch


def batch_rows(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The rows ``rows`` of a batch (of :class:`AudioTextDataset`, or its projected audio: padded
    ``inputs [batch, time, ...]`` and their ``lengths``), in that order: per-row lists and tensors
    indexed, the inputs cut to the longest kept row, the rest (a batch's total ``duration`` too)
    as they are."""
    n = len(batch["lengths"])
    index = torch.tensor(rows, dtype=torch.long)
    lengths = batch["lengths"][index]
    part = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == n:
            part[key] = value[index]
        elif isinstance(value, list) and len(value) == n:
            part[key] = [value[i] for i in rows]
        else:
            part[key] = value
    part["inputs"] = part["inputs"][:, : int(lengths.max())]
    return part


def too_long(cut: Any, window: float | None) -> str | None:
    """What is wrong with ``cut`` if it is longer than ``window`` seconds, else ``None``."""
    if window is None or cut.duration <= window + LENGTH_SLACK:
        return None
    return (f"{audio_path(cut)}: cut {cut.id} is {cut.duration:.1f} s long, past the encoder's "
            f"{window:g} s window (it would be cut short)")


def fit_window(cuts: CutSet, window: float | None, what: str, on_long: str) -> tuple[CutSet, int]:
    """The cuts for an encoder that hears at most ``window`` seconds, and how many were longer.

    ``on_long`` says what happens to a longer cut: ``"truncate"`` keeps it, logged (the encoder
    hears its first ``window`` seconds: what the cache stage stores, so a stage treats such a
    cut alike with and without the cache); ``"skip"`` leaves it out, logged; ``"error"`` raises
    :class:`BadInputError` naming its file and length (``what``: where it is)."""
    if on_long not in ("truncate", "skip", "error"):
        raise ValueError(f"on_long must be truncate, skip or error, got {on_long!r}")
    if window is None:
        return cuts, 0
    kept, longer = [], 0
    for cut in cuts:
        problem = too_long(cut, window)
        if problem is None:
            kept.append(cut)
            continue
        if on_long == "error":
            raise BadInputError(f"{problem}, in {what}; split it into shorter pieces")
        longer += 1
        if on_long == "truncate":
            log.warning("keeping it cut at the window: %s (%s)", problem, what)
            kept.append(cut)
        else:
            log.warning("skipping: %s (%s)", problem, what)
    if longer:
        log.warning("%s: %d cuts longer than the encoder's %g s window %s", what, longer, window,
                    "kept, cut at the window" if on_long == "truncate" else "skipped")
    return CutSet.from_cuts(kept), longer


def batches_of(cuts: CutSet, size: int) -> Iterable[CutSet]:
    """Fixed-size batches of cuts sorted by duration (little padding, deterministic order)."""
    ordered = list(cuts.sort_by_duration(ascending=False))
    for start in range(0, len(ordered), size):
        yield CutSet.from_cuts(ordered[start : start + size])


def manifest_path(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{name}.jsonl.gz"


def load_cuts(directory: str | Path, name: str) -> CutSet:
    path = manifest_path(directory, name)
    if not path.exists():
        raise FileNotFoundError(f"no manifest for set {name!r}: {path} does not exist")
    return CutSet.from_file(path)
