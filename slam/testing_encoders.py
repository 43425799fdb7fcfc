"""Tiny random encoders of every family, saved like real checkpoints (``save_pretrained`` plus
feature-extractor / tokenizer files) so that tests load them through the encoders' own
``from_pretrained`` paths. No real weights of these families exist offline. Also the helpers
the encoder tests share: :func:`noise` to feed them and :func:`encode` to run them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    Data2VecAudioConfig,
    Data2VecAudioModel,
    EncodecConfig,
    EncodecFeatureExtractor,
    EncodecModel,
    HubertConfig,
    HubertModel,
    PreTrainedTokenizerFast,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from slam.testing import _byte_bpe

if TYPE_CHECKING:
    from slam.model.encoders.base import AudioEncoder


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Quiet white noise (std 0.1) of ``seconds`` at ``rate`` Hz, float32."""
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)


def encode(encoder: AudioEncoder, waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder`` on ``waves`` as one padded batch, without gradients: (hidden, lengths)."""
    from slam.model.encoders.base import pad_features

    inputs, lengths = pad_features([encoder.extract(w) for w in waves])
    with torch.no_grad():
        return encoder(inputs, lengths)


_SSL = {
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "data2vec": (Data2VecAudioConfig, Data2VecAudioModel),
}


def save_tiny_ssl(
    directory: str | Path, family: str = "hubert", sample_rate: int = 16000,
    feat_extract_norm: str = "group", do_stable_layer_norm: bool = False,
    hidden: int = 32, layers: int = 3, seed: int = 0,
) -> Path:
    """A random HuBERT / WavLM / wav2vec2 / data2vec-audio with the standard 7-conv front end
    (stride 320: 50 Hz at 16 kHz, 75 Hz at 24 kHz) at a small width."""
    directory = Path(directory)
    config_cls, model_cls = _SSL[family]
    torch.manual_seed(seed)
    kwargs = {} if family == "data2vec" else {"feat_extract_norm": feat_extract_norm}
    config = config_cls(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=do_stable_layer_norm, **kwargs,
    )
    model_cls(config).save_pretrained(directory)
    uses_mask = family == "data2vec" or feat_extract_norm == "layer"
    Wav2Vec2FeatureExtractor(
        sampling_rate=sample_rate, do_normalize=True, return_attention_mask=uses_mask
    ).save_pretrained(directory)
    return directory


def save_tiny_mert(directory: str | Path, seed: int = 0) -> Path:
    """MERT's architecture as transformers builds it: a HuBERT on 24 kHz audio (75 Hz)."""
    return save_tiny_ssl(directory, "hubert", sample_rate=24000, seed=seed)


def save_tiny_ast(directory: str | Path, max_length: int = 300, seed: int = 0) -> Path:
    """A random AST audio classifier (like the AudioSet checkpoint) over 128 mel bins and
    ``max_length`` frames (3 s), with AST's default feature-extractor statistics."""
    directory = Path(directory)
    torch.manual_seed(seed)
    config = ASTConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_length=max_length, num_mel_bins=128, num_labels=4,
    )
    ASTForAudioClassification(config).save_pretrained(directory)
    ASTFeatureExtractor(max_length=max_length).save_pretrained(directory)
    return directory


def save_tiny_clap(directory: str | Path, seed: int = 0) -> Path:
    """A random unfused CLAP: a two-stage HTS-AT on 16 mel bins over a 2 s window at 48 kHz
    (32 output frames) and a two-layer text tower with a byte-level BPE tokenizer."""
    directory = Path(directory)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe(["<s>", "<pad>", "</s>", "<unk>"]), bos_token="<s>",
        pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
    )
    torch.manual_seed(seed)
    config = ClapConfig(
        projection_dim=24,
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "projection_dim": 24,
        },
        audio_config={
            "spec_size": 64, "num_mel_bins": 16, "window_size": 4, "patch_size": 4,
            "patch_stride": (4, 4), "depths": [1, 1], "num_attention_heads": [2, 2],
            "patch_embeds_hidden_size": 16, "hidden_size": 32, "projection_dim": 24,
            "enable_fusion": False,
        },
    )
    ClapModel(config).save_pretrained(directory)
    ClapFeatureExtractor(
        feature_size=16, sampling_rate=48000, max_length_s=2, truncation="rand_trunc",
        padding="repeatpad",
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_encodec(directory: str | Path, seed: int = 0) -> Path:
    """A random 24 kHz mono EnCodec (causal, hop 320: 75 Hz) with a 16-wide latent."""
    directory = Path(directory)
    torch.manual_seed(seed)
    config = EncodecConfig(
        sampling_rate=24000, audio_channels=1, hidden_size=16, num_filters=4,
        num_residual_layers=1, upsampling_ratios=[8, 5, 4, 2], codebook_size=16,
        codebook_dim=16, target_bandwidths=[1.5], use_causal_conv=True, normalize=False,
    )
    EncodecModel(config).save_pretrained(directory)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(directory)
    return directory


# -- data2vec 2.0 families (emotion2vec, EAT): published-style fairseq checkpoints ------------

_D2V2_MODEL = {"embed_dim": 32, "depth": 3, "num_heads": 4, "mlp_ratio": 2.0, "norm_affine": True,
               "layer_norm_first": False, "encoder_dropout": 0.1, "layerdrop": 0.05, "clone_batch": 8}
_D2V2_DECODER = {"decoder_dim": 16, "decoder_groups": 4, "decoder_kernel": 3, "decoder_layers": 2}
_D2V2_MODALITY = {
    "emotion2vec": {  # emotion2vec's layout at a small width: 10 extra tokens -> 2, etc.
        "type": "AUDIO", "prenet_depth": 2, "num_extra_tokens": 2, "use_alibi_encoder": True,
        "learned_alibi": False, "learned_alibi_scale": True, "learned_alibi_scale_per_head": True,
        "learned_alibi_scale_per_layer": False, "num_alibi_heads": 4, "model_depth": 3,
        "extractor_mode": "layer_norm", "conv_pos_width": 8, "conv_pos_groups": 4,
        "conv_pos_depth": 2, "conv_pos_pre_ln": False, "mask_prob": 0.5,
        "feature_encoder_spec": "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16,2,2)] * 2",
    },
    "eat": {  # EAT's layout: 16x16 patches of a 128-bin fbank, one CLS token, no prenet
        "type": "IMAGE", "in_chans": 1, "patch_size": 16, "embed_dim": 32, "prenet_depth": 0,
        "num_extra_tokens": 1, "use_alibi_encoder": False, "target_length": 160, "mask_prob": 0.8,
    },
}


def data2vec2_cfg(family: str, model: dict | None = None, modality: dict | None = None) -> dict:
    """A tiny emotion2vec / EAT config as fairseq saves one (``cfg.model`` with the modality
    under ``modalities``, ``cfg.task``), with ``model`` / ``modality`` overrides."""
    norm_eps = 1e-5 if family == "emotion2vec" else 1e-6
    mod = {**_D2V2_MODALITY[family], "decoder": dict(_D2V2_DECODER), **(modality or {})}
    key = "audio" if family == "emotion2vec" else "image"
    task = {"normalize": True} if family == "emotion2vec" else {"target_length": mod.get("target_length")}
    return {"model": {"_name": "data2vec_multi", **_D2V2_MODEL, "norm_eps": norm_eps, **(model or {}),
                      "modalities": {key: mod}}, "task": task}


def save_fake_data2vec2_checkpoint(
    path: str | Path, family: str, seed: int = 0, cfg: dict | None = None, namespace: bool = False
) -> dict[str, torch.Tensor]:
    """A random tiny emotion2vec / EAT saved as the published fairseq files are: the student's
    weights under their published names beside an EMA teacher (``_ema``), the pre-training
    decoder (and, for emotion2vec, emotion2vec+'s classification head ``proj``) and the config
    as a plain dict, or as ``argparse.Namespace`` objects (``namespace``: a file that
    ``weights_only`` loading refuses). Returns the state dict saved (student and extras)."""
    from slam.model.encoders.data2vec2 import FAMILIES, Data2Vec2Model, config_from_checkpoint

    cfg = cfg or data2vec2_cfg(family)
    config = config_from_checkpoint(family, cfg["model"], cfg["task"], cfg["model"])
    torch.manual_seed(seed)
    student = Data2Vec2Model(config)
    state = {}
    for key, value in student.state_dict().items():  # no init value (zeros, ones) left to hide a swap
        if key.endswith("alibi_scale"):
            value = torch.rand_like(value) + 0.5
        elif key.endswith("positions"):
            value = value.clone()
        else:
            value = value + (0.1 if value.dim() == 1 else 0.05) * torch.randn_like(value)
        state[key] = value
    mod = FAMILIES[family]
    state["_ema"] = {k: v + 0.01 for k, v in state.items() if k.startswith(("blocks.", "modality_encoders."))}
    dim = config.embed_dim
    state[f"modality_encoders.{mod}.decoder.blocks.0.0.weight"] = torch.randn(16, dim // 4, 3)
    state[f"modality_encoders.{mod}.decoder.blocks.0.0.bias"] = torch.randn(16)
    state[f"modality_encoders.{mod}.decoder.proj.weight"] = torch.randn(dim, 16)
    if family == "emotion2vec":
        state["proj.weight"], state["proj.bias"] = torch.randn(9, dim), torch.randn(9)
    saved_cfg: object = cfg
    if namespace:
        saved_cfg = argparse.Namespace(
            model=argparse.Namespace(**cfg["model"]), task=argparse.Namespace(**cfg["task"])
        )
    torch.save({"args": None, "cfg": saved_cfg, "model": state, "optimizer_history": []}, path)
    return state


def _save_tiny_data2vec2(directory: str | Path, family: str, seed: int, **overrides: dict) -> Path:
    from slam.model.encoders.data2vec2 import convert_checkpoint

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = data2vec2_cfg(family, **overrides)
    save_fake_data2vec2_checkpoint(directory / "published.pt", family, seed, cfg)
    convert_checkpoint(directory / "published.pt", directory / "converted", family)
    return directory / "converted"


def save_tiny_emotion2vec(directory: str | Path, seed: int = 0, **overrides: dict) -> Path:
    """A random emotion2vec (layer-norm extractor, ALiBi, 2 extra tokens, 2 prenet + 3 blocks,
    width 32, 50 Hz), converted from a published-style checkpoint: the converted directory."""
    return _save_tiny_data2vec2(directory, "emotion2vec", seed, **overrides)


def save_tiny_eat(directory: str | Path, seed: int = 0, **overrides: dict) -> Path:
    """A random EAT (3 blocks, width 32, CLS token, 160-frame window: 10 patch rows, 6.25 Hz),
    converted from a published-style checkpoint: the converted directory."""
    return _save_tiny_data2vec2(directory, "eat", seed, **overrides)


# config name -> builder of a tiny checkpoint for it (what the tests parametrise over)
TINY_ENCODERS: dict[str, Callable[[Path], Path]] = {
    "hubert": lambda d: save_tiny_ssl(d, "hubert"),
    "wavlm": lambda d: save_tiny_ssl(d, "wavlm", feat_extract_norm="layer"),
    "wav2vec2": lambda d: save_tiny_ssl(d, "wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True),
    "data2vec": lambda d: save_tiny_ssl(d, "data2vec"),
    "mert": save_tiny_mert,
    "ast": save_tiny_ast,
    "clap": save_tiny_clap,
    "clap_frames": save_tiny_clap,
    "encodec": save_tiny_encodec,
    "emotion2vec": save_tiny_emotion2vec,
    "eat": save_tiny_eat,
}
