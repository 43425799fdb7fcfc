"""Registry, config schema, projector and encoder behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperModel

from slam.compose import compose_params
from slam.config import ConfigError, EncoderConfig, ProjectorConfig, load_config, to_config
from slam.model.encoders import ENCODERS, build_encoder
from slam.model.projectors import build_projector, load_projector, save_projector
from slam.registry import UnknownComponentError

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_component_lists_known_ones():
    with pytest.raises(UnknownComponentError, match="known encoders: .*whisper"):
        ENCODERS.get("wav2vec9")


def test_only_the_recipe_modules_ask_which_recipe_runs():
    """What a recipe does differently lives in its module of slam/recipes/: no other module
    compares ``cfg.recipe`` with a name (the config check looks it up in the registry)."""
    import ast

    root = Path(__file__).resolve().parents[2] / "slam"
    found = []
    for path in sorted(root.rglob("*.py")):
        if "recipes" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            if any(isinstance(side, ast.Attribute) and side.attr == "recipe" for side in sides):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == ["config.py:" + str(_recipe_check_line(root / "config.py"))]


def _recipe_check_line(config: Path) -> int:
    return next(i for i, line in enumerate(config.read_text().splitlines(), 1) if "cfg.recipe not in" in line)


def test_committed_params_match_hydra_composition():
    assert (ROOT / "params.yaml").read_text() == compose_params(config_dir=ROOT / "params")


def test_override_changes_params():
    import yaml

    composed = yaml.safe_load(compose_params(["encoder=whisper_base", "peft.r=32"], ROOT / "params"))
    assert composed["encoder"]["path"] == "models/whisper-base"
    assert composed["peft"]["r"] == 32


def test_bad_config_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="max_steps"):
        to_config({"train": {"max_steps": "many"}})
    with pytest.raises(ConfigError, match="no_such_key"):
        to_config({"train": {"no_such_key": 1}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("frames,k", [(1, 5), (4, 5), (5, 5), (23, 5), (50, 1), (7, 3)])
def test_linear_projector_length_follows_k(frames, k):
    projector = build_projector(ProjectorConfig(name="linear", k=k, hidden=16), in_dim=8, out_dim=12)
    x = torch.randn(2, frames, 8)
    lengths = torch.tensor([frames, max(1, frames - 2)])
    y, out_lengths = projector(x, lengths)
    assert y.shape == (2, -(-frames // k), 12)
    assert out_lengths.tolist() == [-(-n // k) for n in lengths.tolist()]
    assert projector.output_rate(50.0) == 50.0 / k


def test_projector_save_load_roundtrip(tmp_path):
    projector = build_projector(ProjectorConfig(k=2, hidden=16), in_dim=8, out_dim=4)
    save_projector(projector, tmp_path)
    loaded = load_projector(tmp_path)
    x = torch.randn(1, 6, 8)
    assert torch.equal(projector(x, torch.tensor([6]))[0], loaded(x, torch.tensor([6]))[0])


def test_whisper_encoder_true_length(tiny_models):
    encoder = build_encoder(EncoderConfig(path=str(tiny_models["whisper"])))
    assert encoder.frame_rate == 50.0 and encoder.dim == 32
    feats = encoder.extract(np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32))
    assert feats.shape == (200, 80)  # 100 mel frames per second, no padding to 30 s
    hidden, lengths = encoder(feats[None], torch.tensor([200]))
    assert hidden.shape == (1, 100, 32) and lengths.tolist() == [100]


def test_whisper_encoder_matches_transformers_on_full_window(tiny_models):
    """On a full 30 s window our forward must equal transformers' own encoder."""
    encoder = build_encoder(EncoderConfig(path=str(tiny_models["whisper"])))
    reference = WhisperModel.from_pretrained(tiny_models["whisper"]).get_encoder().eval()
    feats = torch.randn(1, 80, 3000)
    with torch.no_grad():
        ours, _ = encoder(feats.transpose(1, 2), torch.tensor([3000]))
        theirs = reference(feats).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_whisper_context_padding_equals_the_30s_window_on_the_true_length(tiny_models):
    """With 30 s of context a 2 s clip's outputs are transformers' own on Whisper's padded
    window, cut to the clip; with none they differ (attention sees no silence)."""
    wave = np.random.default_rng(1).standard_normal(16000 * 2).astype(np.float32)
    reference = WhisperModel.from_pretrained(tiny_models["whisper"]).get_encoder().eval()
    padded = build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), context_seconds=30))
    window = padded.feature_extractor(wave, sampling_rate=16000, return_tensors="pt").input_features
    assert window.shape[-1] == 3000
    feats = padded.extract(wave)
    with torch.no_grad():
        theirs = reference(window).last_hidden_state[:, :100]
        ours, lengths = padded(feats[None], torch.tensor([200]))
        true_length = build_encoder(EncoderConfig(path=str(tiny_models["whisper"])))
        bare, _ = true_length(feats[None], torch.tensor([200]))
    assert ours.shape == (1, 100, 32) and lengths.tolist() == [100]
    # The last frame's convolutions read one mel frame past the clip: audio there, silence here.
    torch.testing.assert_close(ours[:, :99], theirs[:, :99], atol=1e-4, rtol=1e-4)
    assert (bare - theirs).abs().max() > 1e-2


def test_whisper_context_padding_is_per_clip_in_a_batch(tiny_models):
    encoder = build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), context_seconds=4))
    rng = np.random.default_rng(2)
    short, long = (encoder.extract(rng.standard_normal(16000 * s).astype(np.float32)) for s in (1, 5))
    batch = torch.zeros(2, long.shape[0], 80)
    batch[0, : short.shape[0]], batch[1] = short, long
    with torch.no_grad():
        together, lengths = encoder(batch, torch.tensor([short.shape[0], long.shape[0]]))
        alone = [encoder(f[None], torch.tensor([f.shape[0]]))[0][0] for f in (short, long)]
    assert lengths.tolist() == [50, 250]
    torch.testing.assert_close(together[0, :50], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(together[1], alone[1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="context_seconds=31"):
        build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), context_seconds=31))


def test_whisper_lower_layer_runs_fewer_layers(tiny_models):
    encoder = build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), layer=1))
    assert len(encoder.encoder.layers) == 1
    with pytest.raises(ValueError, match="layer=5"):
        build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), layer=5))
