"""Whisper's encoder (any size) on the true length of each utterance.

transformers' ``WhisperEncoder.forward`` insists on 30 s of mel frames; padding a 3 s clip
to 30 s makes the encoder ten times slower and feeds the LLM 1,500 frames of mostly silence.
The forward below runs the same submodules (convolutions, positional table sliced to the
input, layers, final norm) on the real length, and stops early when a lower layer is asked for.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import WhisperFeatureExtractor, WhisperModel

from slam.config import EncoderConfig
from slam.encoders.base import ENCODERS, AudioEncoder


@ENCODERS.register("whisper")
class WhisperEncoder(AudioEncoder):
    frame_rate = 50.0  # 100 Hz mel frames, conv2 has stride 2

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        whisper = WhisperModel.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        self.encoder = whisper.get_encoder()
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(cfg.path)
        self.sample_rate = self.feature_extractor.sampling_rate
        self.dim = self.encoder.config.d_model
        n_layers = len(self.encoder.layers)
        self.num_layers = n_layers if cfg.layer == -1 else cfg.layer
        if not 1 <= self.num_layers <= n_layers:
            raise ValueError(f"encoder.layer={cfg.layer} but {cfg.path} has {n_layers} layers")
        # Layers above the chosen one are never run: drop them to save memory.
        self.encoder.layers = self.encoder.layers[: self.num_layers]

    @property
    def max_frames(self) -> int:
        return self.encoder.embed_positions.num_embeddings

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        # Whisper's log-mel clamps at (max - 8) over the clip; padding with zeros to 30 s
        # leaves that max unchanged, so true-length features equal the padded ones' prefix.
        features = self.feature_extractor(
            waveform, sampling_rate=self.sample_rate, padding="longest", return_tensors="pt"
        ).input_features[0]
        n_frames = features.shape[-1] - features.shape[-1] % 2  # conv2 halves the rate
        max_input = 2 * self.max_frames
        if n_frames > max_input:
            raise ValueError(
                f"audio of {n_frames / 100:.1f} s is longer than Whisper's {max_input / 100:.0f} s"
            )
        return features[:, :n_frames].T.contiguous()  # [time, n_mels]

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        x = inputs.transpose(1, 2).to(enc.conv1.weight.dtype)  # [batch, n_mels, time]
        x = nn.functional.gelu(enc.conv1(x))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
        if self.num_layers == enc.config.encoder_layers:
            x = enc.layer_norm(x)
        out_lengths = (lengths + 1) // 2
        return x, out_lengths
