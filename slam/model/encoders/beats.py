"""BEATs (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers"), frame-wise.

Microsoft publishes BEATs as torch files (``BEATs_iter3.pt``, ``BEATs_iter3_plus_AS2M.pt``, ...)
holding ``{"cfg": dict, "model": state_dict}`` for its own modelling code. This module is a
clean reimplementation under the same parameter names, so converting a checkpoint is a short,
explicit list of renames: ``python -m slam.cli convert beats BEATs_iter3.pt models/beats-iter3``
writes ``config.json`` (the checkpoint's cfg) and ``model.safetensors``, the directory that
``encoder.path`` names (:mod:`~slam.model.encoders.converted`). The converter drops the
fine-tuned checkpoints' AudioSet classifier (``predictor.*``) and the 11 copies of the
relative-position table that the official model stores once per layer although all layers
share layer 0's, and says so.

Input: BEATs' Kaldi fbank (:class:`~slam.model.encoders.fbank.KaldiFbank`): the waveform scaled
to 16-bit range (``* 2**15``), 128 mel bins, 25 ms povey windows every 10 ms, no dither,
normalised ``(fbank - 15.41663) / (2 * 6.55582)``, computed per clip on its true length.

Network: 16x16 patches over (time, mel) by a strided convolution, layer norm, a projection
to the transformer width, a grouped convolutional position embedding (weight-normed) added to
the tokens, layer norm, then post-LN transformer layers with deep-norm residual scaling
(``alpha = (2 * layers) ** 0.25``) whose attention adds a T5-style bucketed relative position
bias (one table, in layer 0, shared by all layers) scaled per query by a learned gate
(``grep_linear``, ``grep_a``: the gated relative position bias of WavLM). The tokens are the
patch grid flattened time-major (the 8 frequency rows of time column 0, then of column 1, ...),
and the relative positions and the position convolution run over that flat sequence, as in
training.

Output: one frame per time column, the mean of its 8 frequency tokens (as ``fbank.py`` does
for AST): ``frame_rate`` = 100 / 16 = 6.25 Hz, ``dim`` = ``encoder_embed_dim``. A column is
real audio iff all 16 of its fbank frames are (``frames // 16`` columns; the convolution drops
the rest, as BEATs does); the other columns' tokens are zeroed before the position convolution
and masked as keys, so padding in a batch changes no real output. (BEATs' own mask maps
samples to tokens as if each token were 2 consecutive frames, ignoring the time-major layout;
it agrees with this one wherever padding starts at a column boundary.) ``layer`` keeps the
first ``layer`` transformer layers; ``layer_weighting`` mixes the first layer's input (the
embeddings) and every kept layer's output. Not reproduced, as they only act in training:
layer drop and the layer-wise gradient decay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder
from slam.model.encoders.converted import (
    CONFIG_FILE,
    CONVERTERS,
    WEIGHTS_FILE,
    ConversionReport,
    check_state,
    read_converted,
    write_converted,
)
from slam.model.encoders.fbank import KaldiFbank

log = logging.getLogger(__name__)

BEATS_MEAN, BEATS_STD = 15.41663, 6.55582  # AudioSet statistics of BEATs' fbank
NUM_MEL_BINS = 128  # BEATs' fbank (not in the cfg)

# official name -> ours: torch's weight-norm parametrization replaced ``weight_g``/``weight_v``
POS_CONV = "encoder.pos_conv.0."
RENAMES = {
    POS_CONV + "weight_g": POS_CONV + "parametrizations.weight.original0",
    POS_CONV + "weight_v": POS_CONV + "parametrizations.weight.original1",
}
SHARED_TABLE = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight")
HEAD_PREFIX = "predictor"  # the fine-tuned checkpoints' classifier (predictor, predictor_dropout)
HEAD_DROPPED = "classification head"
TABLE_DROPPED = "per-layer copies of layer 0's shared relative position table"


@dataclass
class BEATsConfig:
    """The official cfg dict's fields, with its defaults (a checkpoint's cfg sets them all)."""

    input_patch_size: int = 16
    embed_dim: int = 512  # patch embedding width
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0  # training only: not reproduced
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0  # training only: not reproduced
    dropout_input: float = 0.0
    conv_pos: int = 128  # kernel of the convolutional position embedding (in tokens)
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> tuple[BEATsConfig, list[str]]:
        """The config and the cfg keys it does not know (ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        config.check()
        return config, sorted(k for k in raw if k not in known)

    def check(self) -> None:
        """Refuse what the published checkpoints never use rather than compute it wrongly."""
        if self.layer_norm_first:
            raise ValueError("BEATs cfg layer_norm_first=true (pre-LN) is not supported (BEATs is post-LN)")
        if self.activation_fn != "gelu":
            raise ValueError(f"BEATs cfg activation_fn={self.activation_fn!r} is not supported (only gelu)")
        if NUM_MEL_BINS % self.input_patch_size:
            raise ValueError(f"input_patch_size={self.input_patch_size} must divide {NUM_MEL_BINS} mel bins")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError("encoder_embed_dim must be a multiple of encoder_attention_heads")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- the network ------------------------------------------------------------------------


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional buckets of ``key - query`` positions ``[length, length]``: half the
    buckets per direction, exact up to a quarter of them, then logarithmic up to
    ``max_distance`` (the arithmetic, in float32, as BEATs trained with)."""
    positions = torch.arange(length)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_scaled = exact + (
        torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    log_scaled = log_scaled.clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, log_scaled)


class BEATsAttention(nn.Module):
    """Self-attention plus the gated relative position bias (the table only in layer 0)."""

    def __init__(self, config: BEATsConfig, has_table: bool) -> None:
        super().__init__()
        dim, self.heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.head_dim = dim // self.heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gated = config.gru_rel_pos
        if self.gated:
            # per head and query: 8 -> two groups of 4 summed -> sigmoid gates a, b
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))
        if has_table:
            self.relative_attention_bias = nn.Embedding(config.num_buckets, self.heads)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # [b, heads, len, head_dim]

    def forward(
        self, x: torch.Tensor, position_bias: torch.Tensor | None, key_padding: torch.Tensor | None
    ) -> torch.Tensor:
        """``x [b, len, dim]``; ``position_bias [heads, len, len]``; ``key_padding [b, len]``
        is True at padded tokens."""
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        mask = None
        if position_bias is not None:
            mask = position_bias[None]
            if self.gated:
                gate_a, gate_b = torch.sigmoid(self.grep_linear(q).unflatten(-1, (2, 4)).sum(-1)).chunk(2, -1)
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask  # [b, heads, len, len]
            mask = mask.to(q.dtype)
        if key_padding is not None:
            # finite, so that a clip with no real token gets uniform weights rather than NaN
            padding = torch.zeros(key_padding.shape, dtype=q.dtype, device=q.device)
            padding = padding.masked_fill(key_padding, torch.finfo(q.dtype).min)[:, None, None]
            mask = padding if mask is None else mask + padding
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))


class BEATsLayer(nn.Module):
    """Post-LN transformer layer; deep norm scales the residual by ``alpha`` before each norm."""

    def __init__(self, config: BEATsConfig, has_table: bool) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = BEATsAttention(config, has_table)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.activation_dropout)
        self.dropout3 = nn.Dropout(config.dropout)
        # from the full depth, also when ``encoder.layer`` keeps fewer layers
        self.alpha = (2 * config.encoder_layers) ** 0.25 if config.deep_norm else 1.0

    def forward(
        self, x: torch.Tensor, position_bias: torch.Tensor | None, key_padding: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.self_attn_layer_norm(
            x * self.alpha + self.dropout1(self.self_attn(x, position_bias, key_padding))
        )
        hidden = self.dropout2(F.gelu(self.fc1(x).float()).type_as(x))  # in float32, as trained
        return self.final_layer_norm(x * self.alpha + self.dropout3(self.fc2(hidden)))


class _DropLast(nn.Module):
    """Cuts the one extra output step that ``padding = kernel // 2`` gives an even kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-1]


class BEATsTransformer(nn.Module):
    """Convolutional position embedding, layer norm and the layers; returns every hidden state."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        dim, kernel = config.encoder_embed_dim, config.conv_pos
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=config.conv_pos_groups)
        conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.pos_conv = nn.Sequential(conv, _DropLast() if kernel % 2 == 0 else nn.Identity(), nn.GELU())
        self.layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.relative = config.relative_position_embedding
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.layers = nn.ModuleList(
            BEATsLayer(config, has_table=self.relative and i == 0) for i in range(config.encoder_layers)
        )

    def position_bias(self, length: int) -> torch.Tensor | None:
        """``[heads, length, length]`` from layer 0's table (BEATs shares it with every layer)."""
        if not self.relative:
            return None
        table = self.layers[0].self_attn.relative_attention_bias
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return table(buckets.to(table.weight.device)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> list[torch.Tensor]:
        """The first layer's input, then each layer's output (all ``[b, tokens, dim]``)."""
        if key_padding is not None:
            x = x.masked_fill(key_padding[..., None], 0.0)  # padding never enters the convolution
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.layer_norm(x))
        bias = self.position_bias(x.shape[1])
        states = [x]
        for layer in self.layers:
            x = layer(x, bias, key_padding)
            states.append(x)
        return states


class BEATs(nn.Module):
    """Normalised fbank ``[b, frames, mel]`` -> hidden states of the patch tokens."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        self.config = config
        patch = config.input_patch_size
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, patch, stride=patch, bias=config.conv_bias)
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim
            else None
        )
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = BEATsTransformer(config)

    def forward(self, fbank: torch.Tensor, key_padding: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every hidden state ``[b, columns * rows, dim]``, tokens time-major (all frequency
        rows of a time column together); ``key_padding [b, columns * rows]`` marks padding."""
        patches = self.patch_embedding(fbank[:, None])  # [b, embed, columns, rows]
        x = self.layer_norm(patches.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(self.dropout_input(x), key_padding)


# -- checkpoints ------------------------------------------------------------------------


def check_state_dict(state: Mapping[str, torch.Tensor], config: BEATsConfig, source: str) -> None:
    """Raise a ValueError naming every key of ``state`` that does not fit ``config``'s BEATs."""
    with torch.device("meta"):  # shapes only: no memory for a full-size model
        check_state(BEATs(config).state_dict(), state, source)


def convert_state_dict(
    official: Mapping[str, torch.Tensor], config: BEATsConfig, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """The official state dict under this module's names, checked against ``config``."""
    report = ConversionReport()
    table = official.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    state: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if key.startswith(HEAD_PREFIX):
            report.dropped[key] = HEAD_DROPPED
            continue
        shared = SHARED_TABLE.fullmatch(key)
        if shared and int(shared[1]) > 0:
            if table is None or not torch.equal(value, table):
                raise ValueError(f"{source}: {key} differs from layer 0's table, which BEATs shares")
            report.dropped[key] = TABLE_DROPPED
            continue
        if key in RENAMES:
            report.renamed[key] = RENAMES[key]
            key = RENAMES[key]
        state[key] = value
    check_state_dict(state, config, source)
    return state, report


@CONVERTERS.register("beats")
def convert_checkpoint(
    src: str | Path, dst: str | Path, *, allow_pickle: bool = False, config_yaml: Path | None = None
) -> ConversionReport:
    """Convert a published BEATs torch file into ``dst`` (``config.json`` + ``model.safetensors``),
    written atomically: ``dst`` is replaced whole once both files are complete. ``allow_pickle``
    and ``config_yaml`` are ignored: a BEATs file holds only tensors and plain types (it loads
    with ``weights_only=True``) and carries its own cfg."""
    src, dst = Path(src), Path(dst)
    try:
        checkpoint = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure means the same to the user: not a readable checkpoint
        raise ValueError(f"{src}: cannot be read as a BEATs checkpoint (torch.load weights_only): {e}") from e
    if not isinstance(checkpoint, dict) or not {"cfg", "model"} <= set(checkpoint):
        got = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{src}: not a BEATs checkpoint {{'cfg': ..., 'model': ...}} (got {got})")
    config, ignored = BEATsConfig.from_dict(checkpoint["cfg"])
    state, report = convert_state_dict(checkpoint["model"], config, str(src))
    if ignored:
        report.notes.append(f"ignored unknown cfg keys: {', '.join(ignored)}")
    write_converted(dst, config.to_dict(), state, {"source": src.name, "family": "beats"})
    return report


def load_beats(path: str | Path) -> BEATs:
    """The network of a converted directory (see the module doc), in eval mode."""
    raw, state = read_converted(path, "beats")
    config, ignored = BEATsConfig.from_dict(raw)
    if ignored:
        log.warning("%s: ignoring unknown BEATs cfg keys %s", Path(path) / CONFIG_FILE, ignored)
    check_state_dict(state, config, str(Path(path) / WEIGHTS_FILE))
    model = BEATs(config)
    model.load_state_dict(state)
    return model.eval()


# -- the encoder ------------------------------------------------------------------------


@ENCODERS.register("beats")
class BEATsEncoder(AudioEncoder):
    """BEATs over its fbank patch grid, one frame per time column (see the module doc)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.model = load_beats(cfg.path)
        config = self.model.config
        self.fbank = KaldiFbank(
            num_mel_bins=NUM_MEL_BINS, mean=BEATS_MEAN, std=BEATS_STD,
            window_type="povey", waveform_scale=2.0**15,
        )
        self.sample_rate = self.fbank.sample_rate
        self.patch = config.input_patch_size
        self.freq_rows = NUM_MEL_BINS // self.patch
        self.frame_rate = 1000.0 / (self.fbank.frame_shift_ms * self.patch)
        self.dim = config.encoder_embed_dim
        layers = self.model.encoder.layers
        self.num_layers = self.layers_to_keep(len(layers))
        # Layers above the chosen one are never run: drop them to save memory.
        self.model.encoder.layers = layers[: self.num_layers]

    @property
    def min_samples(self) -> int:
        """Samples that give one whole patch of fbank frames."""
        shift = int(self.sample_rate * self.fbank.frame_shift_ms / 1000)
        return self.fbank.window + (self.patch - 1) * shift

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        wave = np.asarray(waveform, dtype=np.float32)
        if wave.size < self.min_samples:  # under one patch: pad with silence, as BEATs batches are
            wave = np.pad(wave, (0, self.min_samples - wave.size))
        return self.fbank(wave)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Time columns all of whose fbank frames lie inside ``lengths``."""
        return lengths // self.patch

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs.to(self.model.patch_embedding.weight.dtype)
        columns = inputs.shape[1] // self.patch
        out_lengths = self.out_lengths(lengths.to(x.device))
        key_padding = None
        if bool((out_lengths < columns).any()):
            real = torch.arange(columns, device=x.device)[None] < out_lengths[:, None]
            key_padding = ~real.repeat_interleave(self.freq_rows, dim=1)  # each column's rows together
        states = self.model(x, key_padding)
        hidden = self.mix_layers(states) if self.cfg.layer_weighting else states[-1]
        frames = hidden.unflatten(1, (columns, self.freq_rows)).mean(dim=2)
        return frames, out_lengths

    def finetune_layers(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)
