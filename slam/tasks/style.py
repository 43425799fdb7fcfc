"""Speaking-style captioning's classifier baseline (recipe ``style_caption``, Table XII).

The paper's emotion captioning is measured against systems that only classify; here the
counterpart is a classifier per style attribute (slam.data.corpora.styles.ATTRIBUTES: sex,
speed, pitch, pauses), each a softmax regression over a clip's pooled cached encoder frames
(their mean and standard deviation, as the contrastive model reads them), whose predictions
fill the template caption. If the LLM's captions are not closer to the references than that,
it has learned nothing a classifier could not say.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from lhotse import CutSet
from safetensors.torch import load_file, save_file
from torch import nn

from slam.data.corpora.styles import ATTRIBUTES, Style, compose_caption, style_of
from slam.tasks.captioning import pooled_audio

log = logging.getLogger(__name__)

CLASSIFIER = "classifier"  # the hypothesis label of the classifier baseline (<set>.classifier.jsonl)
CLASSIFIER_WEIGHTS = "style_classifier.safetensors"
CLASSIFIER_CONFIG = "style_classifier.json"
STEPS, LR, WEIGHT_DECAY = 500, 1e-2, 1e-3  # full-batch AdamW: seconds for thousands of clips


class StyleClassifier(nn.Module):
    """One linear head per attribute over standardised pooled frames."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.heads = nn.ModuleDict({name: nn.Linear(dim, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (pooled - self.mean) / self.scale
        return {name: head(x) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, cuts: CutSet) -> list[Style]:
        logits = self(torch.stack([pooled_audio(c) for c in cuts]))
        picks = {name: out.argmax(-1).tolist() for name, out in logits.items()}
        return [Style(**{name: ATTRIBUTES[name][picks[name][i]] for name in ATTRIBUTES})
                for i in range(len(cuts))]  # fmt: skip


def fit_style_classifier(cuts: CutSet, seed: int = 0) -> tuple[StyleClassifier, dict[str, float]]:
    """Fit on cached training cuts; returns the model and its training accuracy per attribute."""
    cut_list = list(cuts)
    pooled = torch.stack([pooled_audio(c) for c in cut_list])
    labels = {name: torch.tensor([values.index(getattr(style_of(c), name)) for c in cut_list])
              for name, values in ATTRIBUTES.items()}  # fmt: skip
    torch.manual_seed(seed)
    model = StyleClassifier(pooled.shape[1])
    model.mean.copy_(pooled.mean(0))
    model.scale.copy_(pooled.std(0).clamp_min(1e-6))
    optimizer = torch.optim.AdamW(model.heads.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    for _ in range(STEPS):
        logits = model(pooled)
        loss = sum(nn.functional.cross_entropy(logits[name], labels[name]) for name in ATTRIBUTES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(pooled)
        accuracy = {name: (logits[name].argmax(-1) == labels[name]).float().mean().item()
                    for name in ATTRIBUTES}  # fmt: skip
    log.info("style classifier: training accuracy %s", {k: round(v, 3) for k, v in accuracy.items()})
    return model.eval(), accuracy


def save_style_classifier(model: StyleClassifier, directory: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / CLASSIFIER_WEIGHTS))
    (directory / CLASSIFIER_CONFIG).write_text(json.dumps({"dim": model.mean.numel()}) + "\n")


def load_style_classifier(directory: Path) -> StyleClassifier:
    config = directory / CLASSIFIER_CONFIG
    if not config.exists():
        raise FileNotFoundError(f"{config} missing: train with recipe=style_caption for the style classifier")
    model = StyleClassifier(json.loads(config.read_text())["dim"])
    model.load_state_dict(load_file(str(directory / CLASSIFIER_WEIGHTS)))
    return model.eval()


def template_captions(styles: list[Style]) -> list[str]:
    """The template caption of each predicted style."""
    return [compose_caption(style) for style in styles]


def attribute_accuracy(cuts: CutSet, styles: list[Style]) -> dict[str, float]:
    """Share of ``cuts`` whose attribute the prediction gets right, per attribute."""
    truth = [style_of(c) for c in cuts]
    hits = {name: sum(getattr(t, name) == getattr(p, name) for t, p in zip(truth, styles))
            for name in ATTRIBUTES}  # fmt: skip
    return {name: count / max(len(truth), 1) for name, count in hits.items()}
