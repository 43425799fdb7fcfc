"""The CTC-assisted hotword filter (paper IV-B3, after Yang et al., "CTC-Assisted LLM-Based
Contextual ASR"): a small CTC head reads the frozen encoder's outputs, and the biasing-list
entries that fuzzily match its greedy transcript are the ones put in the prompt.

A list of thousands of words does not fit a small LLM's prompt, and most of it is
distractors; a rough character-level transcript is enough to tell which entries could have
been spoken. The head is a per-frame MLP over characters (the encoder already carries the
context), trained with CTC after the LLM on the same cached encoder outputs: a minute of CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from rapidfuzz import fuzz, process
from safetensors.torch import load_file, save_file
from torch import nn

from slam.config import BiasConfig
from slam.data.cuts import AudioTextDataset, batches_of, cut_text
from slam.model.ctc import fit_ctc
from slam.model.encoders import AudioEncoder

log = logging.getLogger(__name__)

HEAD_WEIGHTS = "ctc_head.safetensors"
HEAD_CONFIG = "ctc_head.json"
BLANK = 0


def ctc_text(text: str) -> str:
    """What the head learns to spell: lower case, single spaces."""
    return " ".join(text.lower().split())


class CtcHead(nn.Module):
    """Encoder frames -> log-probabilities over [blank] + the training texts' characters."""

    def __init__(self, dim: int, hidden: int, vocab: list[str]) -> None:
        super().__init__()
        self.dim, self.hidden, self.vocab = dim, hidden, list(vocab)
        self.index = {ch: i + 1 for i, ch in enumerate(self.vocab)}  # 0 is the blank
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, len(self.vocab) + 1)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float()).log_softmax(-1)

    def encode(self, text: str) -> list[int]:
        return [self.index[ch] for ch in ctc_text(text) if ch in self.index]

    def greedy(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Best path per row: collapse repeats, drop blanks."""
        texts = []
        for row, n in zip(log_probs.argmax(-1).tolist(), lengths.tolist()):
            chars, previous = [], BLANK
            for symbol in row[:n]:
                if symbol != previous and symbol != BLANK:
                    chars.append(self.vocab[symbol - 1])
                previous = symbol
            texts.append(" ".join("".join(chars).split()))
        return texts


def character_vocab(texts: list[str]) -> list[str]:
    return sorted({ch for text in texts for ch in ctc_text(text)})


def encoder_states(
    batch: dict[str, Any], encoder: AudioEncoder | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs of a batch: the cached arrays, or the frozen encoder run on the features."""
    inputs, lengths = batch["inputs"].to(device), batch["lengths"].to(device)
    if encoder is not None:
        with torch.no_grad():
            inputs, lengths = encoder(inputs, lengths)
    return inputs.float(), lengths


def train_ctc_head(
    cuts: CutSet,
    dataset: AudioTextDataset,
    dim: int,
    cfg: BiasConfig,
    device: torch.device,
    seed: int = 0,
) -> tuple[CtcHead, float]:
    """Train a fresh head for ``cfg.ctc_steps`` steps; returns it and its last mean loss."""
    torch.manual_seed(seed)
    head = CtcHead(dim, cfg.ctc_hidden, character_vocab([cut_text(c) for c in cuts])).to(device)

    def loss_of(batch: dict[str, Any]) -> torch.Tensor:
        frames, lengths = encoder_states(batch, dataset.encoder, device)
        targets = [head.encode(t) for t in batch["texts"]]
        flat = torch.tensor([t for target in targets for t in target], dtype=torch.long)
        return nn.functional.ctc_loss(
            head(frames).transpose(0, 1), flat, lengths.cpu(), torch.tensor([len(t) for t in targets]),
            blank=BLANK, zero_infinity=True,
        )

    head.train()
    loss = fit_ctc(list(head.parameters()), loss_of, cuts, dataset, cfg.ctc_steps, cfg.ctc_lr,
                   cfg.ctc_max_duration, seed=seed, name="ctc head")
    return head.eval(), loss


@torch.no_grad()
def ctc_transcripts(
    head: CtcHead,
    cuts: CutSet,
    dataset: AudioTextDataset,
    device: torch.device,
    batch_size: int = 16,
) -> dict[str, str]:
    """The head's greedy transcript of every cut, by cut id."""
    out = {}
    for batch_cuts in batches_of(cuts, batch_size):
        batch = dataset[batch_cuts]
        frames, lengths = encoder_states(batch, dataset.encoder, device)
        out.update(zip(batch["ids"], head.greedy(head(frames), lengths)))
    return out


def save_ctc_head(head: CtcHead, directory: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(directory / HEAD_WEIGHTS))
    config = {"dim": head.dim, "hidden": head.hidden, "vocab": head.vocab}
    (directory / HEAD_CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2))


def load_ctc_head(directory: Path) -> CtcHead:
    config_file = directory / HEAD_CONFIG
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} missing: train with recipe=asr_bias to get a CTC head")
    config = json.loads(config_file.read_text())
    head = CtcHead(config["dim"], config["hidden"], config["vocab"])
    head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS)))
    return head.eval()


def fuzzy_scores(entries: list[str], transcript: str, min_chars_partial: int = 5) -> np.ndarray:
    """Each entry's best similarity (rapidfuzz, 0-100) to some stretch of the transcript.

    Two views, the better one wins: the ratio against the transcript's runs of k-1 to k+1
    words (an entry of k words; so a word the head split in two still matches), and, for
    entries of ``min_chars_partial`` characters or more, the best partial ratio against the
    transcript with its spaces removed: a rough CTC transcript often runs words together.
    Shorter entries skip the second view, where they would match a chance substring.
    """
    words = ctc_text(transcript).split()
    if not entries or not words:
        return np.zeros(len(entries))
    cleaned = [ctc_text(e) for e in entries]
    sizes = [len(e.split()) or 1 for e in cleaned]
    grams, gram_sizes = [], []
    for n in range(1, min(max(sizes) + 1, len(words)) + 1):
        for i in range(len(words) - n + 1):
            grams.append(" ".join(words[i : i + n]))
            gram_sizes.append(n)
    scores = process.cdist(cleaned, grams, scorer=fuzz.ratio, workers=1)
    fits = np.abs(np.asarray(sizes)[:, None] - np.asarray(gram_sizes)[None, :]) <= 1
    by_words = np.where(fits, scores, 0.0).max(axis=1)
    joined = [e.replace(" ", "") for e in cleaned]
    partial = process.cdist(joined, ["".join(words)], scorer=fuzz.partial_ratio, workers=1)[:, 0]
    long_enough = np.asarray([len(e) >= min_chars_partial for e in joined])
    return np.maximum(by_words, np.where(long_enough, partial, 0.0))


def ctc_filter(entries: list[str], transcript: str, threshold: float, limit: int) -> list[str]:
    """The entries whose best match in the CTC transcript scores ``threshold`` or more, best
    first (ties in list order), at most ``limit`` of them."""
    scores = fuzzy_scores(entries, transcript)
    kept = sorted((i for i, s in enumerate(scores) if s >= threshold), key=lambda i: (-scores[i], i))
    return [entries[i] for i in kept[:limit]]

