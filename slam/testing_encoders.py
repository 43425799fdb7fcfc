"""Tiny random encoders of every family, saved like real checkpoints (``save_pretrained`` plus
feature-extractor / tokenizer files) so that tests load them through the encoders' own
``from_pretrained`` paths. No real weights of these families exist offline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
}
