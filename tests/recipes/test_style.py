"""Recipe style_caption (Table XII analogue): the style corpus, its captions and their reading
back, the classifier baseline and the recipe end to end."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from lhotse import CutSet, MonoCut, SupervisionSegment
from omegaconf import OmegaConf

from slam.compose import compose_params
from slam.config import ConfigError, to_config
from slam.data.corpora.styles import (
    ATTRIBUTES,
    STYLE,
    Style,
    compose_caption,
    draw_style,
    said_style,
    style_captions,
)
from slam.recipes import recipe_of
from slam.tasks import style as style_mod

ESPEAK = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_every_caption_states_its_style_and_only_it():
    rng = random.Random(0)
    for _ in range(500):
        style = draw_style(rng)
        captions = style_captions(style, rng)
        assert len(set(captions)) == 5
        for caption in captions:
            assert said_style(caption) == {name: getattr(style, name) for name in ATTRIBUTES}, caption
    template = compose_caption(Style("female", "fast", "high", "long"))
    assert template == "A woman speaks quickly in a high-pitched voice, pausing between words."
    with pytest.raises(ValueError, match="speed 'brisk'"):
        Style("male", "brisk", "low", "none")


def test_the_classifier_learns_separable_styles_and_fills_the_template(monkeypatch):
    # pooled features where each attribute moves its own coordinates: a linear head must read them
    gen = torch.Generator().manual_seed(0)
    cuts, styles, features = [], [], {}
    rng = random.Random(1)
    for i in range(120):
        style = draw_style(rng)
        vector = torch.randn(16, generator=gen) * 0.1
        for k, name in enumerate(ATTRIBUTES):
            vector[k] += ATTRIBUTES[name].index(getattr(style, name)) * 2.0
        sup = SupervisionSegment(f"c{i}", f"c{i}", 0, 1.0, text="x", custom={STYLE: vars(style)})
        cuts.append(MonoCut(f"c{i}", 0, 1.0, 0, supervisions=[sup]))
        styles.append(style)
        features[f"c{i}"] = vector
    monkeypatch.setattr(style_mod, "pooled_audio", lambda cut: features[cut.id])
    cutset = CutSet.from_cuts(cuts)
    model, train_acc = style_mod.fit_style_classifier(cutset)
    assert min(train_acc.values()) > 0.95
    predicted = model.predict(cutset)
    assert style_mod.attribute_accuracy(cutset, predicted)["speed"] > 0.95
    assert style_mod.template_captions(predicted[:1]) == [compose_caption(predicted[0])]


def test_profile_style_composes_and_the_recipe_wants_the_styles_source():
    cfg = to_config(OmegaConf.create(compose_params(["profile=style"])))
    assert (cfg.recipe, cfg.corpus.source, cfg.projector.name) == ("style_caption", "styles", "qformer")
    recipe = recipe_of(cfg)
    recipe.check_training(cfg, use_cache=True)
    cfg.corpus.source = "scenes"
    with pytest.raises(ConfigError, match="styles source"):
        recipe.check_training(cfg, use_cache=True)


@ESPEAK
def test_style_caption_recipe_end_to_end(tiny_cfg, tmp_path, pinned):
    from slam.data.cache import build_cache
    from slam.data.corpora import prepare_corpus
    from slam.decode.hyps import read_hyps
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import MODEL, train

    cfg = tiny_cfg
    cfg.recipe = "style_caption"
    cfg.corpus.dir = str(tmp_path / "styles")
    cfg.corpus.source, cfg.corpus.num_utterances, cfg.corpus.real_sets = "styles", 40, []
    cfg.corpus.dev_fraction = cfg.corpus.test_fraction = 0.2
    cfg.train.max_steps, cfg.train.max_duration, cfg.train.ctc_weight = 3, 12.0, 0.0
    cfg.decode.num_beams, cfg.caption.refine_beams, cfg.decode.max_new_tokens = [1, 2], [1, 2], 4
    cfg.caption.steps, cfg.caption.batch_size, cfg.caption.meteor = 60, 8, False
    cfg.score.reports = ["style"]
    sets = prepare_corpus(cfg)
    assert {name: len(cuts) for name, cuts in sets.items()} == {"train": 24, "dev": 8, "test": 8}
    durations = {}  # the same sentence length said slowly lasts longer than said fast
    for cut in sets["train"]:
        style = cut.supervisions[0].custom[STYLE]
        durations.setdefault(style["speed"], []).append(cut.duration / len(cut.supervisions[0].text.split()))
    assert sum(durations["slow"]) / len(durations["slow"]) > sum(durations["fast"]) / len(durations["fast"])
    build_cache(cfg)
    summary = train(cfg)
    assert (Path(cfg.train.dir) / MODEL / style_mod.CLASSIFIER_WEIGHTS).exists()
    assert 0 <= summary["style_classifier_train_acc_sex"] <= 1

    decode(cfg)
    decode_baseline(cfg)
    test_ids = {c.id for c in sets["test"]}
    classifier = read_hyps(Path(cfg.decode.dir) / "test.classifier.jsonl")
    assert {r["id"] for r in classifier} == test_ids
    assert all(said_style(r["hyp"])["sex"] in ATTRIBUTES["sex"] for r in classifier)  # template captions

    metrics = score(cfg)
    labels = {"beam1", "beam2", "refine", "retrieval", "classifier"}
    assert set(metrics["llm"]) == {f"test.{label}" for label in labels}
    results = (Path(cfg.score.dir) / "style_caption" / "results.md").read_text()
    assert "| test | style classifier -> template caption |" in results
    assert "## Style attributes stated right (%)" in results
    style = json.loads((Path(cfg.score.dir) / "style_caption" / "style.json").read_text())
    assert set(style["llm"]["test.classifier"]) == {*ATTRIBUTES, "all"}
    pinned("style_caption", {"train": summary, "score": metrics, "style": style})
