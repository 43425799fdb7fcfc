"""Kaldi-fbank audio encoders (AST, BEATs, EAT style) and AST, the one transformers can build.

The input pipeline (:class:`KaldiFbank`) is torchaudio's Kaldi-compatible log-mel filterbank
(128 bins, 25 ms Hann windows every 10 ms, no dither) normalised as these models were
trained: ``(fbank - mean) / (2 * std)``. AST reads ``mean``/``std`` from the checkpoint's
``ASTFeatureExtractor`` config (AudioSet's -4.27 / 4.57 by default). ``ASTFeatureExtractor``
computes the same features but pads or cuts every clip to ``max_length`` frames before
normalising; ``extract`` keeps the true length instead (the tests check the two agree), so the
data loader carries no padding and the true output length is known.

AST (``ASTModel``) has position embeddings for a fixed ``max_length`` input (1024 frames,
10.24 s): ``encode`` pads each clip to exactly that with the value AST's zero padding takes
after normalisation, as in training (so a clip's outputs do not depend on its batch), and cuts
longer clips there (with a warning). AST splits the spectrogram into 16x16 patches with
stride 10 in both time and frequency: a grid of F frequency rows (12 for 128 bins) by
T time columns (101 for 1024 frames), flattened frequency-major after the CLS and
distillation tokens. To make a frame-wise sequence, the two special tokens are dropped and the
F patch vectors of each time column are averaged: one frame per column, ``dim`` = the hidden
size, ``frame_rate`` = 100 / time_stride = 10 Hz. A column counts as real audio if its patch
lies inside the clip's true frames, i.e. ``(frames - 16) // 10 + 1`` columns (at least one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio
from torch import nn
from transformers import ASTFeatureExtractor, ASTModel

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder

log = logging.getLogger(__name__)

AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet statistics of AST's fbank


@dataclass(frozen=True)
class KaldiFbank:
    """Waveform -> normalised Kaldi log-mel filterbank ``[frames, num_mel_bins]``."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    mean: float = AST_MEAN
    std: float = AST_STD
    normalize: bool = True
    window_type: str = "hanning"  # AST's; BEATs keeps torchaudio's default "povey"
    waveform_scale: float = 1.0  # BEATs scales [-1, 1] audio to 16-bit range (2**15) first

    @property
    def window(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def pad_value(self) -> float:
        """What a zero of the raw fbank (the models' training-time padding) normalises to."""
        return self.norm(torch.zeros(())).item()

    def norm(self, fbank: torch.Tensor) -> torch.Tensor:
        return (fbank - self.mean) / (2 * self.std) if self.normalize else fbank

    def __call__(self, waveform: np.ndarray) -> torch.Tensor:
        wav = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
        if wav.numel() < self.window:  # shorter than one window: one frame of zero-padded audio
            wav = nn.functional.pad(wav, (0, self.window - wav.numel()))
        fbank = torchaudio.compliance.kaldi.fbank(
            wav[None] * self.waveform_scale,
            sample_frequency=self.sample_rate,
            num_mel_bins=self.num_mel_bins,
            frame_length=self.frame_length_ms,
            frame_shift=self.frame_shift_ms,
            window_type=self.window_type,
            dither=0.0,
            use_energy=False,
        )
        return self.norm(fbank)


@ENCODERS.register("ast")
class ASTEncoder(AudioEncoder):
    """Audio Spectrogram Transformer, frame-wise over patch columns (see the module doc)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        # Loads ASTModel out of ASTForAudioClassification checkpoints too (head left out).
        self.model = ASTModel.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        fe = ASTFeatureExtractor.from_pretrained(cfg.path)
        config = self.model.config
        self.fbank = KaldiFbank(
            sample_rate=fe.sampling_rate, num_mel_bins=config.num_mel_bins,
            mean=fe.mean, std=fe.std, normalize=fe.do_normalize,
        )
        self.sample_rate = fe.sampling_rate
        self.max_length = config.max_length
        self.window_seconds = self.max_length * self.fbank.frame_shift_ms / 1000
        self.freq_rows, self.time_cols = self.model.embeddings.get_shape(config)
        self.frame_rate = 1000.0 / (self.fbank.frame_shift_ms * config.time_stride)
        self.dim = config.hidden_size
        self.num_layers = self.layers_to_keep(len(self.model.layers))
        self.model.layers = self.model.layers[: self.num_layers]
        self._warned = False

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        features = self.fbank(waveform)
        if features.shape[0] > self.max_length and not self._warned:
            log.warning("AST sees at most %d frames (%.2f s): longer audio is cut there",
                        self.max_length, self.max_length * self.fbank.frame_shift_ms / 1000)
            self._warned = True
        return features

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Time columns whose patches lie inside ``lengths`` fbank frames (at least one)."""
        config = self.model.config
        cols = (lengths.clamp(max=self.max_length) - config.patch_size) // config.time_stride + 1
        return cols.clamp(min=1, max=self.time_cols)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.max_length
        x = inputs[:, :n].to(self.model.dtype)
        x = nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))
        lengths = lengths.to(x.device)
        valid = torch.arange(n, device=x.device)[None, :, None] < lengths[:, None, None]
        x = x.masked_fill(~valid, self.fbank.pad_value)  # AST's own padding, whatever the batch
        out = self.model(x, output_hidden_states=self.cfg.layer_weighting)
        if self.cfg.layer_weighting:
            # the last state after the final layer norm, as the layer choice returns it
            hidden = self.mix_layers([*out.hidden_states[:-1], out.last_hidden_state])
        else:
            hidden = out.last_hidden_state
        patches = hidden[:, 2:]  # drop the CLS and distillation tokens
        columns = patches.reshape(len(x), self.freq_rows, self.time_cols, -1).mean(dim=1)
        return columns, self.out_lengths(lengths)

    def finetune_layers(self) -> list[nn.Module]:
        return list(self.model.layers)
