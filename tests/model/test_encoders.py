"""Every encoder family on tiny random checkpoints: lengths, padding, layers, pooling, inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, Recording
from transformers import ASTFeatureExtractor, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from slam.compose import compose_params
from slam.config import EncoderConfig, to_config
from slam.model.encoders import ENCODERS, build_encoder
from slam.model.encoders.base import pad_features
from slam.testing_encoders import TINY_ENCODERS, encode, noise

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = [*TINY_ENCODERS, "whisper"]
LAYERED = ["hubert", "wavlm", "wav2vec2", "data2vec", "mert", "ast", "whisper"]
# |frames - seconds * frame_rate| allowed by each family's edge rounding (convolution or
# window edges, AST's 16-frame patches)
SLACK = {"ast": 2.0}

pytestmark = pytest.mark.filterwarnings(
    "ignore:Support for mismatched key_padding_mask:UserWarning"  # inside transformers' WavLM
)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_models) -> dict[str, Path]:
    hf_logging.set_verbosity_error()  # load reports of the classifier head AST leaves out
    root = tmp_path_factory.mktemp("encoders")
    built: dict = {}
    out = {"whisper": tiny_models["whisper"]}
    for name, builder in TINY_ENCODERS.items():
        if builder not in built:  # clap and clap_frames share a checkpoint
            built[builder] = builder(root / name)
        out[name] = built[builder]
    return out


def load(paths: dict[str, Path], name: str, **kwargs):
    return build_encoder(EncoderConfig(name=name, path=str(paths[name]), **kwargs))


@pytest.mark.parametrize("name", FAMILIES)
def test_lengths_follow_frame_rate_and_padding_does_not_leak(paths, name):
    encoder = load(paths, name)
    seconds = [1.3, 0.7]
    waves = [noise(s, encoder.sample_rate, seed=i) for i, s in enumerate(seconds)]
    hidden, lengths = encode(encoder, waves)
    assert hidden.shape[0] == 2 and hidden.shape[2] == encoder.dim
    if encoder.sequence_wise:
        assert encoder.frame_rate == 0.0
        assert hidden.shape[1] == 1 and lengths.tolist() == [1, 1]
    else:
        for n, s in zip(lengths.tolist(), seconds, strict=True):
            assert abs(n - s * encoder.frame_rate) <= SLACK.get(name, 1.0), (n, s, encoder.frame_rate)
        assert lengths[0] > lengths[1]
        assert hidden[1, lengths[1]:].abs().sum() == 0  # padded frames are zeroed
    for i, wave in enumerate(waves):  # each item alone, unpadded: the same valid outputs
        alone, alone_len = encode(encoder, [wave])
        assert alone_len.item() == lengths[i].item()
        torch.testing.assert_close(hidden[i, : lengths[i]], alone[0, : lengths[i]], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "name,samples,expected",
    [
        ("hubert", 20800, 64),  # conv stack: floor((n - k) / s) + 1 per layer
        ("mert", 31200, 97),  # the same stack at 24 kHz
        ("encodec", 31200, 98),  # ceil(n / 320)
        ("ast", 20800, 12),  # 128 fbank frames -> (128 - 16) // 10 + 1 patch columns
        ("clap_frames", 62400, 21),  # ceil(32 frames * 62400 / 96000 samples of the window)
        ("whisper", 20800, 65),  # 130 mel frames, stride 2
    ],
)
def test_exact_output_lengths(paths, name, samples, expected):
    encoder = load(paths, name)
    _, lengths = encode(encoder, [noise(samples / encoder.sample_rate, encoder.sample_rate)])
    assert lengths.item() == expected


@pytest.mark.parametrize("name", LAYERED)
def test_layer_choice_drops_upper_layers_and_changes_output(paths, name):
    full, lower = load(paths, name), load(paths, name, layer=1)
    assert len(lower.finetune_layers()) == 1 < len(full.finetune_layers())
    assert sum(p.numel() for p in lower.parameters()) < sum(p.numel() for p in full.parameters())
    wave = [noise(1.0, full.sample_rate)]
    assert not torch.allclose(encode(full, wave)[0], encode(lower, wave)[0])
    with pytest.raises(ValueError, match="layer=9"):
        load(paths, name, layer=9)


def test_ssl_layer_is_transformers_hidden_state(paths):
    """``layer=2`` returns what the full model reports as hidden_states[2] (post-norm HuBERT)."""
    encoder = load(paths, "hubert", layer=2)
    reference = AutoModel.from_pretrained(paths["hubert"]).eval()
    wave = noise(1.0, 16000)
    ours, _ = encode(encoder, [wave])
    with torch.no_grad():
        theirs = reference(encoder.extract(wave)[None, :, 0], output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", LAYERED)
def test_layer_weighting_is_a_trainable_mix(paths, name):
    encoder = load(paths, name, layer_weighting=True)
    n_states = len(encoder.finetune_layers()) + 1  # the embeddings and every layer
    assert encoder.layer_weights.shape == (n_states,)
    assert not encoder.layer_weights.requires_grad  # build_encoder freezes everything
    encoder.layer_weights.requires_grad_(True)
    inputs, lengths = pad_features([encoder.extract(noise(0.8, encoder.sample_rate))])
    hidden, _ = encoder(inputs, lengths)
    hidden.pow(2).mean().backward()
    assert encoder.layer_weights.grad is not None and encoder.layer_weights.grad.abs().sum() > 0
    # all weight on the top state: the weighted sum is the last layer's output
    with torch.no_grad():
        encoder.layer_weights.copy_(torch.tensor([-1e4] * (n_states - 1) + [1e4]))
        top, _ = encoder(inputs, lengths)
        last, _ = load(paths, name)(inputs, lengths)
    torch.testing.assert_close(top, last, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["encodec", "clap"])
def test_families_without_layers_refuse_layer_settings(paths, name):
    with pytest.raises(ValueError, match="no layer choice"):
        load(paths, name, layer_weighting=True)


@pytest.mark.parametrize("name", ["hubert", "ast", "encodec", "whisper"])
def test_mean_pooling_gives_one_vector_per_clip(paths, name):
    frames, pooled = load(paths, name), load(paths, name, pooling="mean")
    assert pooled.sequence_wise and pooled.frame_rate == 0.0
    assert not frames.sequence_wise and frames.frame_rate > 0
    waves = [noise(1.2, frames.sample_rate), noise(0.6, frames.sample_rate, seed=1)]
    hidden, lengths = encode(frames, waves)
    vectors, ones = encode(pooled, waves)
    assert vectors.shape == (2, 1, frames.dim) and ones.tolist() == [1, 1]
    for i in range(2):
        torch.testing.assert_close(vectors[i, 0], hidden[i, : lengths[i]].mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        load(paths, name, pooling="max")


def _cut(tmp_path: Path, seconds: float, rate: int, channels: int = 1):
    audio = noise(seconds * channels, rate).reshape(-1, channels)
    path = tmp_path / f"clip-{rate}-{channels}.wav"
    sf.write(path, audio, rate)
    return Recording.from_file(path).to_cut()


@pytest.mark.parametrize("name", ["mert", "encodec"])
def test_load_input_resamples_to_the_encoder_rate(paths, tmp_path, name):
    encoder = load(paths, name)
    assert encoder.sample_rate == 24000
    cut = _cut(tmp_path, 1.3, 16000)
    features = encoder.load_input(cut)
    assert features.shape == (31200, 1)  # 1.3 s at 24 kHz
    with torch.no_grad():
        _, lengths = encoder(features[None], torch.tensor([features.shape[0]]))
    assert lengths.item() == {"mert": 97, "encodec": 98}[name]  # as for native 24 kHz audio


def test_load_input_mixes_to_mono_and_matches_extract(paths, tmp_path):
    encoder = load(paths, "hubert")
    mono = _cut(tmp_path, 0.5, 16000)
    torch.testing.assert_close(encoder.load_input(mono), encoder.extract(mono.load_audio()[0]))
    stereo = _cut(tmp_path, 0.5, 16000, channels=2)
    expected = encoder.extract(stereo.load_audio().mean(axis=0))
    torch.testing.assert_close(encoder.load_input(stereo), expected)


def test_clap_embeds_text_and_audio_in_one_space(paths):
    encoder = load(paths, "clap")
    texts = ["a dog barks", "rain on a tin roof", "speech"]
    with torch.no_grad():
        text = encoder.embed_text(texts)
    assert text.shape == (3, encoder.model.config.projection_dim) == (3, encoder.dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    audio, _ = encode(encoder, [noise(1.0, 48000)])
    torch.testing.assert_close(audio[0, 0].norm(), torch.tensor(1.0))


def test_clap_cuts_long_clips_deterministically(paths):
    encoder = load(paths, "clap_frames")
    long = noise(3.0, 48000)  # the tiny window is 2 s
    first, lengths = encode(encoder, [long])
    again, _ = encode(encoder, [long])
    assert torch.equal(first, again) and lengths.item() == 32


def test_ast_fbank_matches_ast_feature_extractor(paths):
    encoder = load(paths, "ast")
    wave = noise(1.3, 16000)
    ours = encoder.extract(wave)
    theirs = ASTFeatureExtractor.from_pretrained(paths["ast"])(wave, sampling_rate=16000).input_values[0]
    assert ours.shape == (128, 128)
    torch.testing.assert_close(ours, torch.as_tensor(theirs[:128]), atol=1e-4, rtol=1e-4)
    # beyond the clip, AST's extractor holds its padding: what encode fills in
    np.testing.assert_allclose(theirs[128:], encoder.fbank.pad_value, atol=1e-5)


def test_ast_cuts_audio_at_its_max_length(paths):
    encoder = load(paths, "ast")  # tiny: 300 frames (3 s), 29 patch columns
    hidden, lengths = encode(encoder, [noise(4.0, 16000)])
    assert lengths.item() == encoder.time_cols == 29 and hidden.shape[1] == 29


@pytest.mark.parametrize("name", FAMILIES)
def test_finetune_layers_are_distinct_modules_with_weights(paths, name):
    layers = load(paths, name).finetune_layers()
    assert layers and len({id(m) for m in layers}) == len(layers)
    assert all(any(True for _ in m.parameters()) for m in layers)


def test_cache_key_follows_layer_weighting_and_pooling(paths):
    keys = {
        load(paths, "hubert", **kwargs).cache_key()
        for kwargs in ({}, {"layer": 2}, {"layer_weighting": True}, {"pooling": "mean"})
    }
    assert len(keys) == 4
    assert load(paths, "hubert").cache_key() == load(paths, "hubert").cache_key()


def test_every_encoder_config_composes_and_names_a_registered_family():
    names = sorted(p.stem for p in (ROOT / "params" / "encoder").glob("*.yaml"))
    assert {"hubert_base", "mert_v1_95m", "ast_audioset", "clap_htsat", "encodec_24khz"} <= set(names)
    fields = set(vars(EncoderConfig()))
    for name in names:
        raw = yaml.safe_load((ROOT / "params" / "encoder" / f"{name}.yaml").read_text())
        assert set(raw) <= fields and raw["name"] in ENCODERS.names(), name
    composed = yaml.safe_load(compose_params([f"encoder={names[0]}"], ROOT / "params"))
    assert to_config(composed).encoder.name == yaml.safe_load(
        (ROOT / "params" / "encoder" / f"{names[0]}.yaml").read_text()
    )["name"]


def test_sequence_wise_flags_follow_the_family():
    assert ENCODERS.get("clap")._native_sequence_wise
    assert not ENCODERS.get("clap_frames")._native_sequence_wise
    assert math.isclose(ENCODERS.get("whisper")._native_frame_rate, 50.0)


def test_fixed_window_encoders_declare_it_so_long_audio_is_named_skipped_or_cut(paths, tiny_models, tmp_path):
    """Whisper, CLAP and AST cut audio past their window: each says how long it is, so the
    data side names, skips or keeps (cut, as the cache stores it) a longer clip; the others
    take any length. Whisper's in-step input of a clip past 30 s is the window's."""
    from slam.data.corpora.validate import BadInputError
    from slam.data.cuts import AudioTextDataset, fit_window

    windows = {name: load(paths, name).window_seconds for name in ("whisper", "clap", "clap_frames", "ast")}
    assert windows == {"whisper": 30.0, "clap": 2.0, "clap_frames": 2.0, "ast": 3.0}
    assert all(load(paths, name).window_seconds is None for name in ("hubert", "mert"))
    sf.write(tmp_path / "long.wav", noise(3.0, 16000), 16000)
    long = Recording.from_file(tmp_path / "long.wav").to_cut()
    short = Recording.from_file(tmp_path / "long.wav").to_cut().truncate(duration=1.0)
    with pytest.raises(BadInputError, match="long.wav: cut .* is 3.0 s long"):
        fit_window([short, long], windows["clap"], "set test", "error")
    kept, n = fit_window([short, long], windows["clap"], "set test", "skip")
    assert [c.id for c in kept] == [short.id] and n == 1
    kept, n = fit_window([short, long], windows["clap"], "set test", "truncate")
    assert [c.id for c in kept] == [short.id, long.id] and n == 1
    assert fit_window([long], None, "set test", "error")[1] == 0

    whisper = load(paths, "whisper")
    sf.write(tmp_path / "past.wav", noise(31.0, 16000), 16000)
    past = Recording.from_file(tmp_path / "past.wav").to_cut()
    dataset = AudioTextDataset(AutoTokenizer.from_pretrained(tiny_models["llm"]), whisper)
    batch = dataset[CutSet.from_cuts([past])]
    assert batch["inputs"].shape[1] == 3000  # 30 s of 10 ms frames: what the cache would encode
