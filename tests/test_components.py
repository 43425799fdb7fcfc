"""Registry, config schema, projector and encoder behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperModel

from slam.compose import compose_params
from slam.config import ConfigError, EncoderConfig, ProjectorConfig, load_config, to_config
from slam.encoders import ENCODERS, build_encoder
from slam.projectors import build_projector, load_projector, save_projector
from slam.registry import UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_component_lists_known_ones():
    with pytest.raises(UnknownComponentError, match="known encoders: .*whisper"):
        ENCODERS.get("wav2vec9")


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


def test_whisper_lower_layer_runs_fewer_layers(tiny_models):
    encoder = build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), layer=1))
    assert len(encoder.encoder.layers) == 1
    with pytest.raises(ValueError, match="layer=5"):
        build_encoder(EncoderConfig(path=str(tiny_models["whisper"]), layer=5))
