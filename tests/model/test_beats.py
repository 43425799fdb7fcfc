"""BEATs: the converter from the published checkpoints, and the encoder on tiny random weights.

Numerical parity with the reference implementation is not checked here (no reference package
is a dependency); the checkpoint below carries the official parameter names, so what is
checked is that every official tensor lands where the module reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchaudio

from slam import cli
from slam.config import EncoderConfig
from slam.model.encoders import build_encoder
from slam.model.encoders.base import pad_features
from slam.model.encoders.beats import BEATs, BEATsConfig, convert_checkpoint
from slam.testing_encoders import encode, noise

# the official cfg keys of a tiny model (BEATs_iter3 has 12 layers, 768 wide, conv_pos 128 ...)
TINY_CFG = {
    "input_patch_size": 16, "embed_dim": 24, "conv_bias": False, "encoder_layers": 2,
    "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
    "activation_fn": "gelu", "layer_wise_gradient_decay_ratio": 1.0, "layer_norm_first": False,
    "deep_norm": True, "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05, "dropout_input": 0.0, "conv_pos": 16, "conv_pos_groups": 4,
    "relative_position_embedding": True, "num_buckets": 32, "max_distance": 64, "gru_rel_pos": True,
    "finetuned_model": True, "predictor_dropout": 0.0, "predictor_class": 3,
}
# official name -> the module's (torch's weight-norm parametrization replaced weight_g / weight_v)
OFFICIAL_RENAMES = {
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv.0.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv.0.parametrizations.weight.original1",
}
SHARED_COPY = "encoder.layers.1.self_attn.relative_attention_bias.weight"
HEAD = ["predictor.bias", "predictor.weight"]


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random tiny BEATs as unilm saves it: old weight-norm names, the shared relative position
    table under every layer, and the fine-tuned checkpoints' classifier head."""
    torch.manual_seed(seed)
    ours = BEATs(BEATsConfig.from_dict(TINY_CFG)[0]).state_dict()
    back = {new: old for old, new in OFFICIAL_RENAMES.items()}
    state = {back.get(k, k): v.clone() for k, v in ours.items()}
    state[SHARED_COPY] = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    state["predictor.weight"] = torch.randn(3, 32)
    state["predictor.bias"] = torch.randn(3)
    return state


def save_official(path: Path, state: dict[str, torch.Tensor], cfg: dict | None = None) -> Path:
    torch.save({"cfg": cfg or TINY_CFG, "model": state}, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], object]:
    root = tmp_path_factory.mktemp("beats")
    state = official_state()
    report = convert_checkpoint(save_official(root / "BEATs_tiny.pt", state), root / "beats-tiny")
    return root / "beats-tiny", state, report


def load(path: Path, **kwargs):
    return build_encoder(EncoderConfig(name="beats", path=str(path), **kwargs))


# -- the converter ----------------------------------------------------------------------


def test_official_checkpoint_converts_and_loads_with_every_weight_in_place(converted):
    directory, official, report = converted
    assert sorted(report.dropped) == sorted([SHARED_COPY, *HEAD])
    assert report.renamed == OFFICIAL_RENAMES
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((directory / "config.json").read_text()) == TINY_CFG
    ours = load(directory).model.state_dict()
    kept = {k: v for k, v in official.items() if k not in report.dropped}
    assert len(ours) == len(kept)
    for key, value in kept.items():
        assert torch.equal(ours[OFFICIAL_RENAMES.get(key, key)], value), key
    # the layers share layer 0's table (BEATs keeps one); the effective pos-conv weight is g * v / |v|
    encoder = load(directory)
    assert not hasattr(encoder.model.encoder.layers[1].self_attn, "relative_attention_bias")
    g, v = official["encoder.pos_conv.0.weight_g"], official["encoder.pos_conv.0.weight_v"]
    expected = g * v / v.norm(dim=(0, 1), keepdim=True)
    torch.testing.assert_close(encoder.model.encoder.pos_conv[0].weight, expected)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s.pop("encoder.layers.1.fc2.bias"), "missing: encoder.layers.1.fc2.bias"),
        (lambda s: s.update({"encoder.layers.0.self_attn.bias_k": torch.zeros(1, 1, 32)}),
         "unexpected: encoder.layers.0.self_attn.bias_k"),
        (lambda s: s.update({"encoder.layer_norm.weight": torch.ones(16)}),
         r"wrong shape: encoder.layer_norm.weight \(16,\) \(expected \(32,\)\)"),
        (lambda s: s.update({SHARED_COPY: torch.zeros(32, 4)}),
         f"{SHARED_COPY} differs from layer 0's table"),
    ],
)
def test_a_checkpoint_that_does_not_fit_its_cfg_fails_naming_the_key(tmp_path, change, message):
    state = official_state()
    change(state)
    src = save_official(tmp_path / "BEATs_bad.pt", state)
    with pytest.raises(ValueError, match=message) as failure:
        convert_checkpoint(src, tmp_path / "out")
    assert str(failure.value).startswith(str(src))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_unreadable_or_foreign_files_fail_naming_the_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"{re.escape(str(text))}: cannot be read as a BEATs checkpoint"):
        convert_checkpoint(text, tmp_path / "out")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    expected = rf"{re.escape(str(other))}: not a BEATs checkpoint .*got \['state_dict'\]"
    with pytest.raises(ValueError, match=expected):
        convert_checkpoint(other, tmp_path / "out")
    with pytest.raises(ValueError, match="layer_norm_first"):
        convert_checkpoint(save_official(tmp_path / "preln.pt", {}, {**TINY_CFG, "layer_norm_first": True}),
                           tmp_path / "out")


def test_converter_replaces_its_own_output_but_no_other_directory(tmp_path, capsys):
    """``slam convert beats`` in-process (test_data2vec2 runs the command in a subprocess)."""
    src = save_official(tmp_path / "BEATs_tiny.pt", official_state())
    out = tmp_path / "beats"
    cli.main(["convert", "beats", str(src), str(out)])
    printed = capsys.readouterr().out
    assert "classification head (2 keys): predictor.bias, predictor.weight" in printed
    assert "shared relative position table (1 key)" in printed
    assert f"wrote {out / 'config.json'}" in printed and (out / "model.safetensors").is_file()
    save_official(src, official_state(seed=1))
    cli.main(["convert", "beats", str(src), str(out)])  # a second conversion replaces the first
    second = official_state(seed=1)["patch_embedding.weight"]
    assert torch.equal(load(out).model.patch_embedding.weight, second)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exited:
        cli.main(["convert", "beats", str(src), str(out)])
    assert exited.value.code == 2
    assert f"{out} exists and holds more than a converted model" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    with pytest.raises(SystemExit) as exited:
        cli.main(["convert", "beat", str(src), str(tmp_path / "new")])
    assert exited.value.code == 2
    assert "known checkpoint converters: beats, eat, emotion2vec" in capsys.readouterr().err


# -- the encoder ------------------------------------------------------------------------


def test_a_checkpoint_file_as_path_points_to_the_converter(tmp_path):
    hint = r"python -m slam\.cli convert beats CHECKPOINT OUT_DIR"
    with pytest.raises(ValueError, match=rf"not a converted beats directory: convert .*{hint}"):
        load(tmp_path / "BEATs_iter3.pt")  # whether or not it exists
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"config\.json or model\.safetensors.*{hint}"):
        load(tmp_path / "empty")


def test_fbank_is_beats_preprocessing(converted):
    """What BEATs' ``preprocess`` computes: 16-bit-scaled audio, torchaudio's Kaldi fbank with
    its defaults (povey window), 128 bins, normalised by AudioSet's mean and twice its std."""
    encoder = load(converted[0])
    wave = noise(1.3)
    reference = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(wave)[None] * 2**15, num_mel_bins=128, sample_frequency=16000,
        frame_length=25, frame_shift=10,
    )
    torch.testing.assert_close(encoder.extract(wave), (reference - 15.41663) / (2 * 6.55582))


@pytest.mark.parametrize("samples,frames,columns", [(20720, 128, 8), (20719, 127, 7), (800, 16, 1)])
def test_one_frame_per_whole_16_frame_time_patch(converted, samples, frames, columns):
    encoder = load(converted[0])
    assert encoder.frame_rate == 6.25 and encoder.dim == 32 and encoder.sample_rate == 16000
    features = encoder.extract(noise(samples / 16000))
    assert features.shape == (frames, 128)  # under one patch (800 samples): padded with silence
    hidden, lengths = encode(encoder, [noise(samples / 16000)])
    assert lengths.tolist() == [columns] and hidden.shape == (1, columns, 32)


def test_batch_padding_does_not_change_valid_outputs(converted):
    encoder = load(converted[0])
    waves = [noise(1.3, seed=0), noise(0.71, seed=1), noise(2.05, seed=2)]  # not on patch bounds
    hidden, lengths = encode(encoder, waves)
    assert lengths.tolist() == [8, 4, 12]
    assert hidden[1, 4:].abs().sum() == 0
    for i, wave in enumerate(waves):
        alone, _ = encode(encoder, [wave])
        torch.testing.assert_close(hidden[i, : lengths[i]], alone[0], atol=1e-5, rtol=1e-5)
    # and the padding does reach the network: without the mask the short clip's outputs move
    inputs, lengths = pad_features([encoder.extract(w) for w in waves])
    with torch.no_grad():
        unmasked = encoder.model(inputs)[-1].unflatten(1, (-1, encoder.freq_rows)).mean(2)
    assert not torch.allclose(unmasked[1, :4], hidden[1, :4], atol=1e-3)


def test_layer_choice_drops_upper_layers_and_changes_output(converted):
    full, lower = load(converted[0]), load(converted[0], layer=1)
    assert len(lower.finetune_layers()) == 1 < len(full.finetune_layers()) == 2
    assert sum(p.numel() for p in lower.parameters()) < sum(p.numel() for p in full.parameters())
    wave = [noise(1.0)]
    assert not torch.allclose(encode(full, wave)[0], encode(lower, wave)[0])
    with torch.no_grad():  # layer 1 is the full model's first layer output (the shared table kept)
        inputs = full.extract(wave[0])[None]
        expected = full.model(inputs)[1].unflatten(1, (-1, full.freq_rows)).mean(2)
    torch.testing.assert_close(encode(lower, wave)[0], expected)
    with pytest.raises(ValueError, match="layer=9"):
        load(converted[0], layer=9)


def test_layer_weighting_mixes_embeddings_and_every_kept_layer(converted):
    encoder = load(converted[0], layer_weighting=True)
    assert encoder.layer_weights.shape == (3,)
    wave = [noise(1.0)]
    with torch.no_grad():
        encoder.layer_weights.copy_(torch.tensor([-1e4, -1e4, 1e4]))
        top, _ = encode(encoder, wave)
        encoder.layer_weights.copy_(torch.tensor([1e4, -1e4, -1e4]))
        bottom, _ = encode(encoder, wave)
    torch.testing.assert_close(top, encode(load(converted[0]), wave)[0])
    assert not torch.allclose(top, bottom)


def test_finetuning_the_top_layer_trains_it(converted):
    encoder = load(converted[0])
    layers = encoder.finetune_layers()
    assert len({id(m) for m in layers}) == 2
    layers[-1].requires_grad_(True)
    inputs, lengths = pad_features([encoder.extract(noise(0.8))])
    hidden, _ = encoder(inputs, lengths)
    hidden.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[-1].parameters())
    assert all(p.grad is None for p in layers[0].parameters())
