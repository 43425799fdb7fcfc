"""emotion2vec and EAT (data2vec 2.0) on tiny random published-style checkpoints: conversion,
the pickled-config guard, lengths, batch padding, layer choice and input features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
import yaml
from safetensors.torch import load_file

from slam import cli
from slam.config import EncoderConfig
from slam.model.encoders import build_encoder
from slam.model.encoders.base import pad_features
from slam.model.encoders.data2vec2 import (
    EAT_MEAN,
    EAT_STD,
    PickledCheckpointError,
    convert_checkpoint,
    parse_conv_spec,
)
from slam.testing_encoders import (
    data2vec2_cfg,
    encode,
    noise,
    save_fake_data2vec2_checkpoint,
    save_tiny_eat,
    save_tiny_emotion2vec,
)

FAMILIES = ["emotion2vec", "eat"]
# published parameter names (fairseq data2vec_multi / emotion2vec / EAT checkpoints)
PUBLISHED_KEYS = {
    "emotion2vec": [
        "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
        "blocks.2.mlp.fc1.weight", "blocks.2.mlp.fc2.bias", "blocks.1.norm1.weight", "blocks.1.norm2.bias",
        "modality_encoders.AUDIO.local_encoder.conv_layers.0.0.weight",
        "modality_encoders.AUDIO.local_encoder.conv_layers.0.2.1.weight",
        "modality_encoders.AUDIO.local_encoder.conv_layers.6.2.1.bias",
        "modality_encoders.AUDIO.project_features.1.weight",
        "modality_encoders.AUDIO.project_features.2.weight",
        "modality_encoders.AUDIO.relative_positional_encoder.1.0.weight",
        "modality_encoders.AUDIO.relative_positional_encoder.2.0.bias",
        "modality_encoders.AUDIO.context_encoder.blocks.1.attn.qkv.weight",
        "modality_encoders.AUDIO.context_encoder.norm.weight",
        "modality_encoders.AUDIO.extra_tokens", "modality_encoders.AUDIO.alibi_scale",
    ],
    "eat": [
        "blocks.0.attn.qkv.weight", "blocks.2.mlp.fc2.weight", "blocks.2.norm2.weight",
        "modality_encoders.IMAGE.local_encoder.proj.weight",
        "modality_encoders.IMAGE.local_encoder.proj.bias",
        "modality_encoders.IMAGE.fixed_positional_encoder.positions",
        "modality_encoders.IMAGE.extra_tokens", "modality_encoders.IMAGE.context_encoder.norm.weight",
    ],
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data2vec2")
    return {
        "emotion2vec": save_tiny_emotion2vec(root / "emotion2vec"),
        "emotion2vec_group": save_tiny_emotion2vec(root / "group", modality={"extractor_mode": "default"}),
        "eat": save_tiny_eat(root / "eat"),
    }


def load(path: Path, name: str, **kwargs):
    return build_encoder(EncoderConfig(name=name, path=str(path), **kwargs))


def written(directory: Path) -> list[str]:
    """The keys a conversion wrote to ``directory``."""
    return sorted(load_file(str(directory / "model.safetensors")))


# -- conversion -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_published_checkpoint_converts_keeping_the_student_and_reporting_the_rest(tmp_path, family):
    state = save_fake_data2vec2_checkpoint(tmp_path / "published.pt", family, seed=3)
    result = convert_checkpoint(tmp_path / "published.pt", tmp_path / "out", family)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "published.pt"]  # no temp left
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    kept = set(saved)
    assert set(PUBLISHED_KEYS[family]) <= kept
    mod = "AUDIO" if family == "emotion2vec" else "IMAGE"
    expected_dropped = {
        "_ema": "EMA teacher",
        f"modality_encoders.{mod}.decoder.blocks.0.0.weight": "pre-training decoder",
        f"modality_encoders.{mod}.decoder.proj.weight": "pre-training decoder",
    }
    if family == "emotion2vec":
        expected_dropped["proj.weight"] = "classification head"  # emotion2vec+'s emotion classes
    assert {k: result.dropped[k] for k in expected_dropped} == expected_dropped
    assert kept | set(result.dropped) == set(state) and not kept & set(result.dropped)
    assert not any(".decoder." in k or k.startswith(("_ema", "proj.")) for k in kept)

    # every kept weight arrives unchanged, in the file and in the loaded encoder
    encoder = load(tmp_path / "out", family)
    loaded = encoder.model.state_dict()
    assert set(loaded) == kept
    for key in kept:
        assert torch.equal(saved[key], state[key]) and torch.equal(loaded[key], state[key]), key

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    cfg = data2vec2_cfg(family)
    model_cfg = cfg["model"]
    assert {k: config[k] for k in ("embed_dim", "depth", "num_heads")} == {
        k: model_cfg[k] for k in ("embed_dim", "depth", "num_heads")
    }
    if family == "emotion2vec":
        audio = model_cfg["modalities"]["audio"]
        assert config["feature_encoder_spec"] == [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2
        assert (config["prenet_depth"], config["num_extra_tokens"], config["use_alibi"]) == (2, 2, True)
        assert config["conv_pos_width"] == audio["conv_pos_width"] and config["normalize"] is True
    else:
        assert (config["target_length"], config["patch_size"], config["num_extra_tokens"]) == (160, 16, 1)
        assert (config["fbank_mean"], config["fbank_std"]) == (EAT_MEAN, EAT_STD)


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    state = save_fake_data2vec2_checkpoint(tmp_path / "ok.pt", "emotion2vec")
    cfg = data2vec2_cfg("emotion2vec")
    broken = dict(state)
    del broken["blocks.1.mlp.fc2.weight"]
    broken["blocks.0.attn.rel_bias"] = torch.zeros(3)
    broken["modality_encoders.AUDIO.extra_tokens"] = torch.zeros(1, 5, 32)
    torch.save({"cfg": cfg, "model": broken}, tmp_path / "broken.pt")
    with pytest.raises(ValueError) as err:
        convert_checkpoint(tmp_path / "broken.pt", tmp_path / "out", "emotion2vec")
    message = str(err.value)
    assert "missing: blocks.1.mlp.fc2.weight" in message
    assert "unexpected: blocks.0.attn.rel_bias" in message
    assert "modality_encoders.AUDIO.extra_tokens (1, 5, 32) (expected (1, 2, 32))" in message
    assert not (tmp_path / "out").exists()


def test_a_pickled_config_needs_allow_pickle(tmp_path, capsys):
    """fairseq-era files may keep their config as objects that weights_only loading refuses:
    the converter says so and what to pass, and loads them only when told to."""
    save_fake_data2vec2_checkpoint(tmp_path / "pickled.pt", "eat", namespace=True)
    with pytest.raises(PickledCheckpointError, match="--allow-pickle") as err:
        convert_checkpoint(tmp_path / "pickled.pt", tmp_path / "out", "eat")
    assert "weights_only" in str(err.value) and "trust" in str(err.value)
    assert not (tmp_path / "out").exists()
    command = ["convert", "eat", str(tmp_path / "pickled.pt"), str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exited:
        cli.main(command)
    assert exited.value.code == 2
    assert "--allow-pickle" in capsys.readouterr().err and not (tmp_path / "out").exists()

    cli.main([*command, "--allow-pickle"])
    assert "dropped EMA teacher (1 key): _ema" in capsys.readouterr().out
    save_fake_data2vec2_checkpoint(tmp_path / "plain.pt", "eat")  # same seed, plain-dict config
    convert_checkpoint(tmp_path / "plain.pt", tmp_path / "plain", "eat")
    assert (tmp_path / "out" / "config.json").read_text() == (tmp_path / "plain" / "config.json").read_text()


def test_the_command_line_converts(tmp_path):
    """``python -m slam.cli convert`` in a subprocess (the other tests call ``cli.main``)."""
    save_fake_data2vec2_checkpoint(tmp_path / "published.pt", "emotion2vec")
    run = subprocess.run(
        [sys.executable, "-m", "slam.cli", "convert", "emotion2vec", str(tmp_path / "published.pt"),
         str(tmp_path / "out")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "dropped classification head (2 keys): proj.bias, proj.weight" in run.stdout
    assert f"wrote {tmp_path / 'out' / 'config.json'}" in run.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_funasr_layout_reads_config_yaml_beside_the_weights(tmp_path):
    """emotion2vec+ as FunASR ships it: a bare state dict in model.pt, model_conf in config.yaml."""
    state = save_fake_data2vec2_checkpoint(tmp_path / "fairseq.pt", "emotion2vec")
    cfg = data2vec2_cfg("emotion2vec")
    (tmp_path / "funasr").mkdir()
    torch.save({k: v for k, v in state.items() if k != "_ema"}, tmp_path / "funasr" / "model.pt")
    (tmp_path / "funasr" / "config.yaml").write_text(
        yaml.safe_dump({"model": "Emotion2vec", "model_conf": {**cfg["model"], "normalize": True}})
    )
    result = convert_checkpoint(tmp_path / "funasr" / "model.pt", tmp_path / "out", "emotion2vec")
    assert result.dropped["proj.weight"] == "classification head"
    convert_checkpoint(tmp_path / "fairseq.pt", tmp_path / "reference", "emotion2vec")
    config = (tmp_path / "out" / "config.json").read_text()
    assert config == (tmp_path / "reference" / "config.json").read_text()


def test_finetuned_eat_unwraps_the_pretrained_model(tmp_path):
    """EAT's fine-tuned classifiers wrap the pre-trained model (``model.*``, its config under
    ``pretrained_model_args``) and add ``fc_norm`` / ``head``."""
    state = save_fake_data2vec2_checkpoint(tmp_path / "pt.pt", "eat")
    student = {k: v for k, v in state.items() if not k.startswith("_ema") and ".decoder." not in k}
    wrapped = {f"model.{k}": v for k, v in student.items()}
    wrapped.update({"fc_norm.weight": torch.ones(32), "head.weight": torch.zeros(527, 32)})
    cfg = {"model": {"_name": "mae_image_classification", "target_length": 160,
                     "pretrained_model_args": data2vec2_cfg("eat")}, "task": {}}
    torch.save({"cfg": cfg, "model": wrapped}, tmp_path / "ft.pt")
    result = convert_checkpoint(tmp_path / "ft.pt", tmp_path / "out", "eat")
    assert written(tmp_path / "out") == sorted(student)
    assert result.dropped == {"fc_norm.weight": "classification head", "head.weight": "classification head"}


def test_pre_norm_models_keep_their_final_norm(tmp_path):
    cfg = data2vec2_cfg("eat", model={"layer_norm_first": True})
    state = save_fake_data2vec2_checkpoint(tmp_path / "ln.pt", "eat", cfg=cfg)
    assert "norm.weight" in state and "modality_encoders.IMAGE.context_encoder.norm.weight" not in state
    convert_checkpoint(tmp_path / "ln.pt", tmp_path / "out", "eat")
    assert {"norm.weight", "norm.bias"} <= set(written(tmp_path / "out"))
    encoder = load(tmp_path / "out", "eat")
    torch.testing.assert_close(encoder.model.norm.weight, state["norm.weight"])
    hidden, _ = encode(encoder, [noise(0.5)])
    assert torch.isfinite(hidden).all()


def test_existing_directories_with_other_files_are_never_replaced(tmp_path):
    save_fake_data2vec2_checkpoint(tmp_path / "published.pt", "eat")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="busy exists and holds more than a converted model"):
        convert_checkpoint(tmp_path / "published.pt", tmp_path / "busy", "eat")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    convert_checkpoint(tmp_path / "published.pt", tmp_path / "again", "eat")
    convert_checkpoint(tmp_path / "published.pt", tmp_path / "again", "IMAGE")  # a re-conversion is fine


def test_conv_spec_is_parsed_without_eval():
    spec = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"
    assert parse_conv_spec(spec) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ("__import__('os').getcwd()", "[(512, 10)]", "[]", "[(512, 10, 5.0)]"):
        with pytest.raises(ValueError, match="feature_encoder_spec"):
            parse_conv_spec(bad)


# -- loading ----------------------------------------------------------------------------------


def test_a_checkpoint_path_names_the_converter_command(tmp_path, paths):
    with pytest.raises(ValueError, match=r"python -m slam\.cli convert emotion2vec CHECKPOINT OUT_DIR"):
        load(tmp_path / "emotion2vec_base.pt", "emotion2vec")
    with pytest.raises(FileNotFoundError, match=r"python -m slam\.cli convert eat CHECKPOINT OUT_DIR"):
        load(tmp_path, "eat")
    with pytest.raises(ValueError, match="'emotion2vec' model, not 'eat'"):
        load(paths["emotion2vec"], "eat")


# -- lengths, padding, layers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name,samples,frames",
    [
        ("emotion2vec", 20800, 64),  # conv stack: (n - k) // s + 1 per layer
        ("emotion2vec", 16000, 49),
        ("emotion2vec", 200, 1),  # shorter than the receptive field (400): padded to it
        ("eat", 20800, 8),  # 128 fbank frames: 8 rows of 16
        ("eat", 16000, 7),  # 98 frames: 6 full rows and a partial one
        ("eat", 48000, 10),  # 3 s: cut at the 160-frame window (10 rows)
    ],
)
def test_output_lengths(paths, name, samples, frames):
    encoder = load(paths[name], name)
    assert encoder.frame_rate == {"emotion2vec": 50.0, "eat": 6.25}[name]
    hidden, lengths = encode(encoder, [noise(samples / 16000)])
    assert lengths.tolist() == [frames] and hidden.shape == (1, frames, 32)


def test_eat_declares_its_window(paths):
    assert load(paths["eat"], "eat").window_seconds == 1.6
    assert load(paths["emotion2vec"], "emotion2vec").window_seconds is None


@pytest.mark.parametrize("name", ["emotion2vec", "emotion2vec_group", "eat"])
def test_padding_in_a_batch_does_not_change_valid_outputs(paths, name):
    family = name.split("_")[0]
    encoder = load(paths[name], family)
    waves = [noise(s, seed=i) for i, s in enumerate([1.4, 0.5, 0.93])]
    hidden, lengths = encode(encoder, waves)
    assert lengths[0] > lengths[2] > lengths[1]
    for i, wave in enumerate(waves):
        alone, alone_len = encode(encoder, [wave])
        assert alone_len.item() == lengths[i].item()
        torch.testing.assert_close(hidden[i, : lengths[i]], alone[0], atol=1e-5, rtol=1e-5)
        assert hidden[i, lengths[i]:].abs().sum() == 0


def test_emotion2vec_batches_only_when_its_extractor_is_padding_safe(paths):
    assert load(paths["emotion2vec"], "emotion2vec").batched
    assert not load(paths["emotion2vec_group"], "emotion2vec").batched  # group norm over time


@pytest.mark.parametrize("name", FAMILIES)
def test_layer_choice_keeps_the_first_blocks_and_changes_the_output(paths, name):
    full, lower = load(paths[name], name), load(paths[name], name, layer=2)
    assert len(full.finetune_layers()) == 3 and len(lower.finetune_layers()) == 2
    for kept, original in zip(lower.finetune_layers(), full.finetune_layers()[:2], strict=True):
        for a, b in zip(kept.parameters(), original.parameters(), strict=True):
            assert torch.equal(a, b)
    waves = [noise(1.0)]
    top, _ = encode(full, waves)
    second, _ = encode(lower, waves)
    assert not torch.allclose(top, second)
    # layer=2 is the full model's state after its second block
    inputs, lengths = pad_features([full.extract(w) for w in waves])
    if name == "eat":  # padded to the window with EAT's padding, as encode does
        window = torch.nn.functional.pad(inputs, (0, 0, 0, 160 - len(inputs[0])), value=full.fbank.pad_value)
        front = (window,)
    else:
        front = (inputs[..., 0], None)
    with torch.no_grad():
        states = full.model(*front, all_states=True)
    tokens = states[2][:, full.config.num_extra_tokens :]
    if name == "eat":
        tokens = tokens.reshape(1, full.rows, full.cols, -1).mean(2)[:, : second.shape[1]]
    torch.testing.assert_close(second, tokens, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="layer=4"):
        load(paths[name], name, layer=4)


@pytest.mark.parametrize("name", FAMILIES)
def test_layer_weighting_mixes_the_front_end_and_every_block(paths, name):
    encoder = load(paths[name], name, layer_weighting=True)
    assert encoder.layer_weights.shape == (4,)
    inputs, lengths = pad_features([encoder.extract(noise(0.8))])
    encoder.layer_weights.requires_grad_(True)
    hidden, _ = encoder(inputs, lengths)
    hidden.pow(2).mean().backward()
    assert encoder.layer_weights.grad.abs().sum() > 0
    with torch.no_grad():
        encoder.layer_weights.copy_(torch.tensor([-1e4, -1e4, -1e4, 1e4]))
        top, _ = encoder(inputs, lengths)
        last, _ = load(paths[name], name)(inputs, lengths)
    torch.testing.assert_close(top, last, atol=1e-5, rtol=1e-5)


# -- input features ---------------------------------------------------------------------------


def test_emotion2vec_normalises_each_utterance_over_its_length(paths):
    encoder = load(paths["emotion2vec"], "emotion2vec")
    wave = noise(0.7)
    features = encoder.extract(wave)
    assert features.shape == (len(wave), 1)
    assert abs(features.mean().item()) < 1e-5 and abs(features.std(unbiased=False).item() - 1) < 1e-3
    centred = wave - wave.mean()  # fairseq's layer norm over the waveform: eps 1e-5
    expected = centred / np.sqrt((centred**2).mean() + 1e-5)
    torch.testing.assert_close(features[:, 0], torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.extract(wave + 0.2), features, atol=1e-5, rtol=1e-5)


def test_eat_features_are_eats_fbank(paths):
    """EAT's recipe: the clip's mean removed, Kaldi fbank (128 bins, Hann windows, no dither),
    normalised with EAT's statistics; padding is a zero fbank frame after normalisation."""
    encoder = load(paths["eat"], "eat")
    wave = noise(1.1) + 0.3  # an offset the recipe removes
    centred = torch.from_numpy(wave - wave.mean())
    reference = torchaudio.compliance.kaldi.fbank(
        centred[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    )
    reference = (reference - EAT_MEAN) / (2 * EAT_STD)
    torch.testing.assert_close(encoder.extract(wave), reference, atol=1e-4, rtol=1e-4)
    assert encoder.fbank.pad_value == pytest.approx(-EAT_MEAN / (2 * EAT_STD))
