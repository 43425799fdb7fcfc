"""Self-supervised speech and music encoders on raw waveforms: HuBERT, WavLM, wav2vec 2.0,
data2vec-audio and MERT (a HuBERT-style music model at 24 kHz).

One module serves them all through ``AutoModel`` / ``AutoFeatureExtractor``; the config names
``hubert``, ``wavlm``, ``wav2vec2``, ``data2vec`` and ``mert`` are aliases that say what a
params file loads. Real MERT checkpoints ship their own modelling code, hence
``trust_remote_code: true`` in ``params/encoder/mert_v1_95m.yaml``.

Per checkpoint, as its feature extractor and config say:

* ``extract`` normalises each utterance on its own true length when ``do_normalize`` is set;
* checkpoints whose convolutional front end uses layer norm (``feat_extract_norm == "layer"``,
  e.g. wavlm-large, wav2vec2-large-lv60) were trained with attention masks: a padded batch
  runs at once with one, and padding changes no valid output;
* the others would mix padding into valid frames: group norm over time in the first
  convolution without an attention mask (hubert-base, wav2vec2-base, wavlm-base-plus), or
  data2vec-audio's stack of positional convolutions (transformers zeroes padded frames only
  before the first). There each item runs alone at its true length, which is what the cache
  stage does anyway.

Output lengths come from the model's own ``_get_feat_extract_output_lengths``. ``layer`` keeps
the first ``layer`` transformer layers and returns the last kept one's output (after the final
layer norm of stable-layer-norm models); ``layer_weighting`` instead mixes the embeddings and
every kept layer's output with learned softmax weights ``layer_weights``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder, encode_each

SSL_NAMES = ("hubert", "wavlm", "wav2vec2", "data2vec", "mert")


class SSLEncoder(AudioEncoder):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.model = AutoModel.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(
            cfg.path, trust_remote_code=cfg.trust_remote_code
        )
        config = self.model.config
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.frame_rate = self.sample_rate / math.prod(config.conv_stride)
        self.dim = config.hidden_size
        # data2vec-audio has no feat_extract_norm: its convolutions always use layer norm, but
        # its stack of positional convolutions carries padded frames into valid ones.
        pos_conv = getattr(self.model.encoder, "pos_conv_embed", None)
        self.use_mask = getattr(config, "feat_extract_norm", "layer") == "layer" and not hasattr(
            pos_conv, "layers"
        )
        layers = self.model.encoder.layers
        self.num_layers = self.layers_to_keep(len(layers))
        # Layers above the chosen one are never run: drop them to save memory.
        self.model.encoder.layers = layers[: self.num_layers]

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        values = self.feature_extractor(
            waveform, sampling_rate=self.sample_rate, return_tensors="pt"
        ).input_values[0]
        return values[:, None].float()  # [samples, 1]

    def _run(self, values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        out = self.model(
            values, attention_mask=attention_mask, output_hidden_states=self.cfg.layer_weighting
        )
        if not self.cfg.layer_weighting:
            return out.last_hidden_state
        # The last hidden state as the layer choice returns it (stable-layer-norm models apply
        # their final norm there but not in ``hidden_states``).
        return self.mix_layers([*out.hidden_states[:-1], out.last_hidden_state])

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = inputs[..., 0].to(self.model.dtype)
        if not self.use_mask:
            return encode_each(lambda x: self._run(x, None), values, lengths)
        lengths = lengths.to(values.device)
        mask = torch.arange(values.shape[1], device=values.device)[None] < lengths[:, None]
        hidden = self._run(values, mask.long())
        out_lengths = self.model._get_feat_extract_output_lengths(lengths).long()
        return hidden, out_lengths

    def finetune_layers(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)


for _name in SSL_NAMES:
    ENCODERS.register(_name)(SSLEncoder)
