"""Audio captioning (paper V-A, recipe ``aac``): caption targets, the contrastive audio-text
model, CLAP-Refine, and the two baselines.

* Targets: a clip has several reference captions (``supervision.custom["captions"]``); each
  epoch trains on a different one (:func:`caption_target`).
* Contrastive model: no CLAP weights exist offline, so the recipe fits its own after the LLM,
  on the same cached encoder outputs: an MLP over the clip's mean and standard deviation of
  encoder frames, and a linear map of the frozen sentence encoder's caption embeddings, into
  one space, trained with the symmetric InfoNCE loss CLAP uses. Seconds of CPU, as both
  branches start from fixed features.
* CLAP-Refine: among the hypotheses of several beam widths, the one nearest to the clip's
  audio embedding wins.
* Baselines: the most frequent training caption, and the training caption nearest to the
  clip's audio embedding (retrieval with the same contrastive model).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from slam.config import CaptionConfig
from slam.data.cuts import ENCODER_OUT, cut_text
from slam.tasks.sentence import SentenceEncoder

log = logging.getLogger(__name__)

CONTRAST_WEIGHTS = "contrastive.safetensors"  # in the trained assets dir, beside the projector
CONTRAST_CONFIG = "contrastive.json"
REFINE, RETRIEVAL, MOST_FREQUENT = "refine", "retrieval", "most_frequent"  # hypothesis labels


def captions_of(cut: Any) -> list[str]:
    """A clip's reference captions: ``custom["captions"]``, else its supervision text."""
    sup = cut.supervisions[0] if cut.supervisions else None
    captions = [c for c in ((sup.custom or {}).get("captions") or []) if c.strip()] if sup else []
    return captions or [cut_text(cut)]


def caption_target(cut: Any, epoch: int, step: int = 0) -> str:
    """The caption a clip is trained on in ``epoch``: each epoch the next one, from a start
    that depends on the clip only (stable across processes and resumes)."""
    captions = captions_of(cut)
    return captions[(zlib.crc32(cut.id.encode()) + epoch) % len(captions)]


def pooled_audio(cut: Any) -> torch.Tensor:
    """Mean and standard deviation over time of a cut's cached encoder frames: ``[2 * dim]``."""
    frames = torch.from_numpy(np.asarray(cut.load_custom(ENCODER_OUT), dtype=np.float32))
    return torch.cat([frames.mean(0), frames.std(0, unbiased=False)])


class AudioTextContrast(nn.Module):
    """Pooled encoder frames and sentence embeddings into one space of unit vectors."""

    def __init__(self, audio_dim: int, text_dim: int, dim: int, hidden: int, temperature: float) -> None:
        super().__init__()
        self.sizes = {"audio_dim": audio_dim, "text_dim": text_dim, "dim": dim, "hidden": hidden}
        self.audio = nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, hidden), nn.GELU(),
                                   nn.Linear(hidden, dim))  # fmt: skip
        self.text = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def embed_audio(self, pooled: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.audio(pooled), dim=-1)

    def embed_text(self, sentences: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text(sentences), dim=-1)

    def loss(self, pooled: torch.Tensor, sentences: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE: row i's audio and text are the positive pair."""
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * self.embed_audio(pooled) @ self.embed_text(sentences).T
        labels = torch.arange(len(logits))
        ce = nn.functional.cross_entropy
        return (ce(logits, labels) + ce(logits.T, labels)) / 2


class CaptionSpace:
    """A trained :class:`AudioTextContrast` with its sentence encoder: embeds clips and texts."""

    def __init__(self, model: AudioTextContrast, sentences: SentenceEncoder) -> None:
        self.model, self.sentences = model.eval(), sentences

    @torch.no_grad()
    def audio(self, cuts: CutSet) -> torch.Tensor:
        return self.model.embed_audio(torch.stack([pooled_audio(c) for c in cuts]))

    @torch.no_grad()
    def text(self, texts: list[str]) -> torch.Tensor:
        return self.model.embed_text(self.sentences.encode(texts))

    def nearest(self, cuts: CutSet, texts: list[str], vectors: torch.Tensor | None = None) -> list[str]:
        """For each cut, the text of ``texts`` closest to its audio (``vectors``: their
        :meth:`text` embeddings, when already computed)."""
        if not texts:
            raise ValueError("no texts to choose from")
        scores = self.audio(cuts) @ (self.text(texts) if vectors is None else vectors).T
        return [texts[i] for i in scores.argmax(1).tolist()]

    def refine(self, cuts: CutSet, candidates: list[list[str]]) -> list[str]:
        """CLAP-Refine: per cut, the candidate closest to its audio (the first of equals)."""
        audio = self.audio(cuts)
        texts = sorted({t for row in candidates for t in row})
        index = {t: i for i, t in enumerate(texts)}
        vectors = self.text(texts)
        chosen = []
        for a, row in zip(audio, candidates):
            scores = vectors[[index[t] for t in row]] @ a
            chosen.append(row[int(scores.argmax())])
        return chosen


def fit_contrastive(
    cuts: CutSet, sentences: SentenceEncoder, cc: CaptionConfig
) -> tuple[AudioTextContrast, float]:
    """Fit the contrastive model on cached cuts; returns it and the mean loss of the last 50 steps.

    Every step takes ``batch_size`` random clips, each with one of its captions at random.
    """
    cut_list = list(cuts)
    if len(cut_list) < 2:
        raise ValueError("the contrastive model needs at least 2 training clips")
    audio = torch.stack([pooled_audio(c) for c in tqdm(cut_list, desc="pooling clips", mininterval=10)])
    captions = [captions_of(c) for c in cut_list]
    texts = sorted({t for row in captions for t in row})
    index = {t: i for i, t in enumerate(texts)}
    text_vectors = sentences.encode(texts)
    caption_ids = [[index[t] for t in row] for row in captions]
    rng = np.random.default_rng(cc.seed)
    torch.manual_seed(cc.seed)
    model = AudioTextContrast(audio.shape[1], text_vectors.shape[1], cc.dim, cc.hidden, cc.temperature)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cc.lr, weight_decay=0.01)
    batch_size = min(cc.batch_size, len(cut_list))
    recent: list[float] = []
    for _ in tqdm(range(cc.steps), desc="contrastive model", mininterval=10):
        rows = rng.permutation(len(cut_list))[:batch_size].tolist()
        picks = [int(rng.choice(caption_ids[r])) for r in rows]
        loss = model.loss(audio[rows], text_vectors[picks])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = [*recent[-49:], loss.item()]
    mean_loss = sum(recent) / max(len(recent), 1)
    chance = math.log(batch_size)
    log.info("contrastive model: %d steps, loss %.3f (chance %.3f)", cc.steps, mean_loss, chance)
    return model.eval(), mean_loss


def save_contrastive(model: AudioTextContrast, directory: Path, text_model: str) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / CONTRAST_WEIGHTS))
    sizes = {**model.sizes, "text_model": text_model}
    (directory / CONTRAST_CONFIG).write_text(json.dumps(sizes, indent=2) + "\n")


def load_caption_space(directory: Path, cc: CaptionConfig) -> CaptionSpace:
    """The contrastive model saved with the trained assets, and ``caption.text_model``."""
    config_file = directory / CONTRAST_CONFIG
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} missing: train with recipe=aac to get the contrastive model")
    sizes = {k: v for k, v in json.loads(config_file.read_text()).items() if k != "text_model"}
    model = AudioTextContrast(**sizes, temperature=cc.temperature)
    model.load_state_dict(load_file(str(directory / CONTRAST_WEIGHTS)))
    return CaptionSpace(model, SentenceEncoder(cc.text_model))


def most_frequent_caption(cuts: CutSet) -> str:
    """The caption written most often over the training clips (ties: the first in sort order)."""
    counts = Counter(t for c in cuts for t in captions_of(c))
    if not counts:
        raise ValueError("no training captions")
    return min(counts, key=lambda t: (-counts[t], t))


def training_captions(cuts: CutSet) -> list[str]:
    """Every distinct training caption: what the retrieval baseline may answer."""
    return sorted({t for c in cuts for t in captions_of(c)})
