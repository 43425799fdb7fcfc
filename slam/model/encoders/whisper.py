"""Whisper's encoder (any size) on the true length of each utterance.

transformers' ``WhisperEncoder.forward`` insists on 30 s of mel frames; padding a 3 s clip
to 30 s makes the encoder ten times slower and feeds the LLM 1,500 frames of mostly silence.
The forward below runs the same submodules (convolutions, positional table sliced to the
input, layers, final norm) on the real length, and stops early when a lower layer is asked for.
With ``layer_weighting`` it mixes the embeddings and every kept layer's output (the last one
after the final norm, as transformers returns it) with learned softmax weights.

``encoder.context_seconds`` restores part of the context Whisper was trained with: each clip is
padded with log-mel silence to that length (so its attention sees the silence it saw in
training), and only the true length's outputs are returned, so the LLM reads no more positions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import WhisperFeatureExtractor, WhisperModel

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder


@ENCODERS.register("whisper")
class WhisperEncoder(AudioEncoder):
    frame_rate = 50.0  # 100 Hz mel frames, conv2 has stride 2
    takes_context_padding = True

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        whisper = WhisperModel.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        self.encoder = whisper.get_encoder()
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(cfg.path)
        self.sample_rate = self.feature_extractor.sampling_rate
        self.dim = self.encoder.config.d_model
        self.num_layers = self.layers_to_keep(len(self.encoder.layers))
        # Layers above the chosen one are never run: drop them to save memory.
        self.encoder.layers = self.encoder.layers[: self.num_layers]
        # In mel frames (100 Hz), even so that conv2 (stride 2) maps it to whole output frames.
        self.context_frames = 2 * round(cfg.context_seconds * 50)
        if self.context_frames > 2 * self.max_frames:
            raise ValueError(
                f"encoder.context_seconds={cfg.context_seconds} is longer than Whisper's "
                f"{self.max_frames / 50:.0f} s window"
            )

    @property
    def max_frames(self) -> int:
        return self.encoder.embed_positions.num_embeddings

    @property
    def window_seconds(self) -> float:  # 30 s: the positional table's length
        return self.max_frames / self._native_frame_rate

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

    def pad_with_silence(
        self, inputs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each clip padded to at least ``context_frames`` with its own log-mel floor: the
        extractor clamps at (max - 8) in log10 and maps x -> (x + 4) / 4, so a zero waveform
        (Whisper's 30 s padding) comes out as the clip's maximum minus 2. Returns the padded
        batch and the lengths attention may see."""
        frames = max(inputs.shape[1], self.context_frames)
        valid = torch.arange(frames, device=inputs.device)[None] < lengths[:, None]
        floor = inputs.masked_fill(~valid[:, : inputs.shape[1], None], float("-inf")).amax(dim=(1, 2)) - 2.0
        padded = floor[:, None, None].expand(-1, frames, inputs.shape[2]).clone()
        padded[valid] = inputs[valid[:, : inputs.shape[1]]]
        return padded, lengths.clamp(min=self.context_frames)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        out_lengths = (lengths + 1) // 2
        attended = lengths
        if self.context_frames:
            inputs, attended = self.pad_with_silence(inputs, lengths)
        x = inputs.transpose(1, 2).to(enc.conv1.weight.dtype)  # [batch, n_mels, time]
        x = nn.functional.gelu(enc.conv1(x))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = [x]
        mask = key_padding_mask((attended + 1) // 2, x.shape[1], x.dtype)
        for layer in enc.layers:
            out = layer(x, mask)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        if self.num_layers == enc.config.encoder_layers:
            x = states[-1] = enc.layer_norm(x)
        if self.cfg.layer_weighting:
            x = self.mix_layers(states)
        return x[:, : int(out_lengths.max())], out_lengths

    def finetune_layers(self) -> list[nn.Module]:
        return list(self.encoder.layers)


def key_padding_mask(lengths: torch.Tensor, frames: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive ``[batch, 1, 1, frames]`` mask hiding padded frames from attention, so that an
    item of a padded batch gets the outputs of its true-length run (extract keeps an even
    number of mel frames, so the convolutions never mix padding into a valid frame)."""
    keep = torch.arange(frames, device=lengths.device)[None] < lengths[:, None]
    if bool(keep.all()):
        return None
    mask = torch.zeros(keep.shape, dtype=dtype, device=lengths.device)
    return mask.masked_fill(~keep, torch.finfo(dtype).min)[:, None, None]
