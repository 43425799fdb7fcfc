"""EnCodec (``EncodecModel``) as a codec encoder: the continuous latent of its SEANet encoder,
before residual vector quantisation, ``dim`` = ``hidden_size`` (128), one frame per
``prod(upsampling_ratios)`` samples (320: 75 Hz at 24 kHz). Only the encoder is kept.

The encoder's convolutions pad each input on the right up to a whole number of strides (by
reflection in the 24 kHz model), so the last frame of an utterance would read the zeros of a
padded batch instead: each utterance runs alone at its true length (all at once when a batch
has one length). The output has ``ceil(samples / 320)`` frames. Checkpoints with
``normalize`` (48 kHz) scale each input to unit RMS first, as ``EncodecModel.encode`` does;
stereo checkpoints are not supported (inputs are mixed to mono).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import AutoFeatureExtractor, EncodecModel

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder, encode_each


@ENCODERS.register("encodec")
class EncodecEncoder(AudioEncoder):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.require_single_output("EnCodec")
        model = EncodecModel.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        config = model.config
        if config.audio_channels != 1:
            raise ValueError(f"{cfg.path} has {config.audio_channels} audio channels; only mono is supported")
        self.encoder = model.encoder  # the decoder and quantiser are not needed
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(cfg.path)
        self.sample_rate = int(config.sampling_rate)
        self.hop_length = math.prod(config.upsampling_ratios)
        self.frame_rate = self.sample_rate / self.hop_length
        self.dim = config.hidden_size
        self.normalize = bool(config.normalize)

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        values = self.feature_extractor(
            waveform, sampling_rate=self.sample_rate, return_tensors="pt"
        ).input_values[0, 0]
        if self.normalize:
            values = values / (values.pow(2).mean().sqrt() + 1e-8)
        return values[:, None].float()  # [samples, 1]

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = next(self.encoder.parameters()).dtype

        def run(x: torch.Tensor) -> torch.Tensor:  # [b, samples, 1] -> [b, frames, dim]
            return self.encoder(x.transpose(1, 2).to(dtype)).transpose(1, 2)

        return encode_each(run, inputs, lengths)

    def finetune_layers(self) -> list[nn.Module]:
        """The encoder's blocks with weights (convolutions, residual blocks, LSTM), bottom to top."""
        return [layer for layer in self.encoder.layers if any(True for _ in layer.parameters())]
