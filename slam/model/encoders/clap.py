"""CLAP (``ClapModel``, LAION's HTS-AT audio tower + RoBERTa text tower) as an audio encoder.

``clap`` is sequence-wise (paper V-B): one vector per clip, the projected and L2-normalised
audio embedding of the contrastive space, ``dim`` = ``projection_dim``. ``clap_frames`` is
frame-wise: HTS-AT's last feature map, averaged over its frequency rows, one frame per time
step of the (4 x 8 by default) time grid over the model's window, ``dim`` = the audio tower's
width. Both keep the text tower: ``embed_text`` puts captions in the same space as ``clap``'s
outputs, e.g. to rerank generated captions contrastively.

CLAP sees a fixed window (``max_length_s``, 10 s): ``ClapFeatureExtractor`` repeats shorter
clips to fill it and crops longer ones at a random offset. So that outputs are reproducible
(the cache), ``extract`` keeps the first window of a clip and the feature extractor then runs
inside ``encode`` on each clip's true samples (a padded batch cannot hold the repeat-padded
mel and the true length at once). In ``clap_frames`` the frames covering the true clip
(``ceil(frames * samples / window)``) count as real, the repeats do not. Feature-fusion
checkpoints are not supported (their extractor marks a random clip of each batch as long).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder


@ENCODERS.register("clap")
class ClapEncoder(AudioEncoder):
    sequence_wise = True
    frame_rate = 0.0

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.require_single_output("CLAP")
        self.model = ClapModel.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        if self.model.config.audio_config.enable_fusion:
            raise ValueError(f"{cfg.path} is a feature-fusion CLAP; use an unfused checkpoint")
        self.feature_extractor = ClapFeatureExtractor.from_pretrained(cfg.path)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.path)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.window = int(self.feature_extractor.nb_max_samples)
        self.window_seconds = self.window / self.sample_rate  # extract keeps the first window only
        self.dim = self.model.config.projection_dim

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(waveform[: self.window], dtype=np.float32))[:, None]

    def input_features(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The feature extractor's mel window ``[batch, 1, frames, mels]`` of each true clip."""
        clips = [inputs[i, : int(n), 0].float().cpu().numpy() for i, n in enumerate(lengths.tolist())]
        # No clip exceeds the window (extract cut it), so "rand_trunc" never draws a random crop.
        features = self.feature_extractor(
            clips, sampling_rate=self.sample_rate, truncation="rand_trunc", return_tensors="pt"
        ).input_features
        return features.to(device=inputs.device, dtype=self.model.dtype)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.get_audio_features(input_features=self.input_features(inputs, lengths))
        ones = torch.ones(len(inputs), dtype=torch.long, device=inputs.device)
        return embedding.pooler_output[:, None], ones

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[len(texts), projection_dim]`` in CLAP's joint space."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        tokens = tokens.to(self.model.device)
        return self.model.get_text_features(**tokens).pooler_output

    def finetune_layers(self) -> list[nn.Module]:
        """HTS-AT's Swin blocks, bottom to top across its stages."""
        stages = self.model.audio_model.audio_encoder.layers
        return [block for stage in stages for block in stage.blocks]


@ENCODERS.register("clap_frames")
class ClapFramesEncoder(ClapEncoder):
    sequence_wise = False

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        audio = self.model.audio_model.audio_encoder
        self.dim = audio.num_features
        # HTS-AT folds the window's time axis into freq_ratio chunks stacked along frequency;
        # transformers unfolds them again, giving freq_ratio x (time steps per chunk) frames.
        stride = audio.patch_stride[1] * 2 ** (len(audio.depths) - 1)
        self.num_frames = audio.freq_ratio * (audio.spec_size // stride)
        self.frame_rate = self.num_frames / self.feature_extractor.max_length_s

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.audio_model(input_features=self.input_features(inputs, lengths))
        frames = out.last_hidden_state.mean(dim=2).transpose(1, 2)  # [batch, frames, width]
        if frames.shape[1] != self.num_frames:
            raise RuntimeError(f"CLAP gave {frames.shape[1]} frames, expected {self.num_frames}")
        covered = torch.ceil(lengths.to(frames.device).double() * self.num_frames / self.window)
        return frames, covered.long().clamp(1, self.num_frames)
