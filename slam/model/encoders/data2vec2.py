"""data2vec 2.0 audio encoders that transformers cannot build: emotion2vec and EAT.

Both are the student network of a data2vec 2.0 ("data2vec_multi") checkpoint: a modality
encoder under ``modality_encoders.<MOD>`` feeding a stack of shared transformer blocks
(``blocks.N``, "AltBlock": fused ``qkv`` attention and an ``fc1``/``fc2`` GELU MLP, post-norm
unless ``layer_norm_first``), with an optional final ``norm``. One module here serves both
with two front ends; the parameter names follow the published checkpoints so that the
converter only has to drop what inference does not use.

* **emotion2vec** (``AUDIO``, speech emotion): a wav2vec 2.0-style convolutional feature
  extractor (``local_encoder``, ``feature_encoder_spec``; layer norm per frame or group norm
  in the first layer) on the 16 kHz waveform, layer-normalised over each utterance as fairseq's
  ``normalize: true``; ``project_features``; a stack of grouped convolutions as relative
  positions (``relative_positional_encoder``); learned extra tokens (dropped from the output);
  ALiBi attention biases with learned scales; a few prenet blocks (``context_encoder``), then the
  shared blocks. Output: one frame per conv stride, 50 Hz.
* **EAT** (``IMAGE``, Efficient Audio Transformer; SLAM-AAC's encoder): EAT's 128-bin Kaldi
  fbank (the waveform's mean removed, normalised ``(x + 4.268) / (2 * 4.569)``) as a one-channel
  image ``[time, 128]``, padded or cut to ``target_length`` frames (1024, 10.24 s) as EAT was
  trained and SLAM-AAC runs it; 16x16 patches (``local_encoder.proj``) flattened time-major
  (8 frequency patches per 16 frames); fixed 2-D sine-cosine positions; a CLS token
  (``extra_tokens``); the shared blocks. Frames: the CLS token dropped and the 8 frequency
  patches of each time row averaged (as the AST encoder here does): 100 / 16 = 6.25 Hz, a row
  counting as audio when it holds any of the clip's frames. (SLAM-AAC itself feeds all 512 patch
  tokens to its projector; averaging keeps a frame-wise sequence with a true frame rate.)

Padding: EAT pads every clip to ``target_length`` alone, so its batches never mix. emotion2vec
with a layer-norm extractor runs a padded batch at once: each convolution of the positional
stack sees zeros past an item's true length (as the item alone sees its convolution padding)
and attention masks padded keys, so valid outputs equal the item run alone. A group-norm
extractor normalises over time, padding included: there each item runs alone (``encode_each``).

Checkpoints are fairseq files (student, EMA teacher, decoders, fairseq config objects) or
FunASR ``model.pt`` + ``config.yaml``. Convert once::

    python -m slam.cli convert emotion2vec emotion2vec_base.pt models/emotion2vec-base
    python -m slam.cli convert eat EAT-base_epoch30_pt.pt models/eat-base --allow-pickle

which writes ``config.json`` (plain hyperparameters) and ``model.safetensors`` (what inference
needs) for ``encoder.path`` (:mod:`~slam.model.encoders.converted`). ``--allow-pickle`` is
needed only when the file keeps pickled config objects that ``torch.load(weights_only=True)``
refuses; pass it only for a trusted file.
"""

from __future__ import annotations

import argparse
import ast
import functools
import logging
import math
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from slam.config import EncoderConfig
from slam.model.encoders.base import ENCODERS, AudioEncoder, encode_each
from slam.model.encoders.converted import (
    CONVERTERS,
    ConversionReport,
    check_state,
    read_converted,
    write_converted,
)
from slam.model.encoders.fbank import KaldiFbank

log = logging.getLogger(__name__)

FAMILIES = {"emotion2vec": "AUDIO", "eat": "IMAGE"}
EAT_MEAN, EAT_STD = -4.268, 4.569  # EAT's fbank statistics (AudioSet, as AST's rounded)
# data2vec 2.0's audio front end when a config leaves it out
DEFAULT_CONV_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"


# -- configuration ----------------------------------------------------------------------------


@dataclass
class Data2Vec2Config:
    """The hyperparameters inference needs, as the converter writes them to ``config.json``
    (``asdict``)."""

    family: str  # "emotion2vec" (AUDIO front end) or "eat" (IMAGE front end)
    embed_dim: int = 768
    depth: int = 8  # shared blocks
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    norm_affine: bool = True
    layer_norm_first: bool = False  # pre-norm blocks and a final ``norm``; else post-norm
    prenet_depth: int = 0  # modality-specific blocks before the shared ones
    num_extra_tokens: int = 0  # learned tokens prepended to the sequence, dropped from outputs
    use_alibi: bool = False
    num_alibi_heads: int = 0  # ALiBi goes to the first this many heads
    alibi_scale_per_layer: bool = False
    alibi_scale_per_head: bool = False
    # AUDIO (emotion2vec)
    sample_rate: int = 16000
    normalize: bool = True  # layer norm over each waveform
    feature_encoder_spec: list[list[int]] = field(default_factory=list)  # (channels, kernel, stride)
    extractor_mode: str = "layer_norm"  # or "default": group norm in the first conv only
    conv_pos_width: int = 95
    conv_pos_groups: int = 16
    conv_pos_depth: int = 5
    conv_pos_pre_ln: bool = False
    # IMAGE (EAT)
    patch_size: int = 16
    in_chans: int = 1
    num_mel_bins: int = 128
    target_length: int = 1024  # fbank frames every clip is padded or cut to
    fbank_mean: float = EAT_MEAN
    fbank_std: float = EAT_STD

    @property
    def modality(self) -> str:
        return FAMILIES[self.family]

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}; known: {', '.join(FAMILIES)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not a multiple of num_heads={self.num_heads}")
        if self.use_alibi and not 0 < self.num_alibi_heads <= self.num_heads:
            raise ValueError(f"num_alibi_heads={self.num_alibi_heads} with num_heads={self.num_heads}")
        if self.modality == "AUDIO":
            if self.extractor_mode not in ("layer_norm", "default"):
                raise ValueError(f"extractor_mode={self.extractor_mode!r}; known: layer_norm, default")
            self.feature_encoder_spec = [list(layer) for layer in parse_conv_spec(self.feature_encoder_spec)]
        else:
            if self.use_alibi:
                raise ValueError("EAT (IMAGE) with ALiBi (use_alibi_encoder) is not supported")
            tiles = self.num_mel_bins % self.patch_size == 0 and self.target_length % self.patch_size == 0
            if self.in_chans != 1 or not tiles:
                raise ValueError(
                    f"EAT needs one input channel and patches tiling the spectrogram: in_chans="
                    f"{self.in_chans}, num_mel_bins={self.num_mel_bins}, target_length="
                    f"{self.target_length}, patch_size={self.patch_size}"
                )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Data2Vec2Config:
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown data2vec 2.0 config keys: {', '.join(unknown)}")
        return cls(**raw)


def parse_conv_spec(spec: str | list) -> list[tuple[int, int, int]]:
    """fairseq's ``feature_encoder_spec`` (a Python expression such as
    ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``) without ``eval``: lists and tuples of integers,
    ``+`` and ``*`` only, since the string comes from a downloaded file."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"feature_encoder_spec {spec!r}: only lists of (channels, kernel, stride)")

    layers = value(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else spec
    out = [tuple(layer) for layer in layers] if isinstance(layers, list | tuple) else None
    if not out or any(len(t) != 3 or not all(type(v) is int and v > 0 for v in t) for t in out):
        raise ValueError(f"feature_encoder_spec {spec!r}: expected a list of (channels, kernel, stride)")
    return out  # type: ignore[return-value]


# -- network --------------------------------------------------------------------------------


class Transpose(nn.Module):
    """Swap time and channels (keeps the published layouts' module indices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class TrimLast(nn.Module):
    """Drop the extra frame a same-padded convolution with an even kernel makes."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.trim]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if bias is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # scores in float32 like the reference: ALiBi reaches -slope * distance, which half
            # precision would round coarsely for long clips
            scores = ((q * self.scale) @ k.transpose(-2, -1)).float() + bias
            out = scores.softmax(dim=-1).to(v.dtype) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _layer_norm(config: Data2Vec2Config) -> nn.LayerNorm:
    return nn.LayerNorm(config.embed_dim, eps=config.norm_eps, elementwise_affine=config.norm_affine)


class Block(nn.Module):
    """data2vec 2.0's transformer block ("AltBlock")."""

    def __init__(self, config: Data2Vec2Config) -> None:
        super().__init__()
        self.pre_norm = config.layer_norm_first
        self.norm1 = _layer_norm(config)
        self.attn = Attention(config.embed_dim, config.num_heads)
        self.norm2 = _layer_norm(config)
        self.mlp = Mlp(config.embed_dim, int(config.embed_dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.pre_norm:  # what the published models use
            x = self.norm1(x + self.attn(x, bias))
            return self.norm2(x + self.mlp(x))
        # The reference's pre-norm arithmetic, which models trained with it expect: its MLP
        # residual adds the MLP output to itself, so the attention residual lives on only
        # through the MLP's input.
        x = x + self.attn(self.norm1(x), bias)
        h = self.mlp(self.norm2(x))
        return h + h


class BlockStack(nn.Module):
    """A modality's own blocks (``context_encoder``): a leading norm for post-norm models."""

    def __init__(self, config: Data2Vec2Config) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.prenet_depth))
        self.norm = None if config.layer_norm_first else _layer_norm(config)

    def forward(self, x: torch.Tensor, bias: Callable[[int], torch.Tensor | None]) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        for i, block in enumerate(self.blocks):
            x = block(x, bias(i))
        return x


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (geometric from 2^(-8/n); interleaved for other head counts)."""

    def powers_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(powers_of_two(heads))
    lower = 2 ** math.floor(math.log2(heads))
    extra = powers_of_two(2 * lower)[0::2][: heads - lower]
    return torch.tensor(powers_of_two(lower) + extra)


class AttentionBias:
    """Additive attention bias of each layer: ALiBi (``-slope * |i - j|`` between frames, zero
    for the extra tokens, times the layer's learned scale) and ``-inf`` on padded keys."""

    def __init__(
        self, heads: int, alibi: torch.Tensor | None = None, scales: torch.Tensor | None = None,
        key_padding: torch.Tensor | None = None,
    ) -> None:
        self.heads, self.alibi, self.scales, self.key_padding = heads, alibi, scales, key_padding
        self._shared: torch.Tensor | None = None  # the bias of every layer when they share one scale

    def __call__(self, layer: int) -> torch.Tensor | None:
        per_layer = self.scales is not None and self.scales.shape[0] > 1
        if self._shared is not None and not per_layer:
            return self._shared
        bias = None
        if self.alibi is not None and self.scales is not None:
            scale = self.scales[layer if per_layer else 0].clamp_min(0)
            bias = self.alibi * scale.float()  # [1, alibi heads, T, T]
            bias = F.pad(bias, (0, 0, 0, 0, 0, self.heads - bias.shape[1]))
        if self.key_padding is not None:
            mask = torch.zeros(self.key_padding.shape, device=self.key_padding.device)
            mask = mask.masked_fill(self.key_padding, float("-inf"))[:, None, None, :]
            bias = mask if bias is None else bias + mask
        if not per_layer:
            self._shared = bias
        return bias

    def shifted(self, offset: int) -> AttentionBias:
        """The same bias for layers counted from ``offset`` (the shared blocks after a prenet)."""
        scales = self.scales
        if scales is not None and scales.shape[0] > 1:
            scales = scales[offset:]
        return AttentionBias(self.heads, self.alibi, scales, self.key_padding)


class ConvFeatureExtractor(nn.Module):
    """wav2vec 2.0's convolutional front end on ``[batch, 1, samples]``."""

    def __init__(self, spec: list[list[int]], mode: str) -> None:
        super().__init__()
        layers = []
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(spec):
            parts: list[nn.Module] = [nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=False)]
            parts.append(nn.Identity())  # the reference's dropout slot: norms keep index 2
            if mode == "layer_norm":
                parts.append(nn.Sequential(Transpose(), nn.LayerNorm(channels), Transpose()))
            elif i == 0:
                parts.append(nn.GroupNorm(channels, channels))  # per channel over time
            parts.append(nn.GELU())
            layers.append(nn.Sequential(*parts))
            in_channels = channels
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.conv_layers:
            x = layer(x)
        return x


class AudioModalityEncoder(nn.Module):
    """emotion2vec's front end: waveform -> conv features -> positions -> prenet blocks."""

    def __init__(self, config: Data2Vec2Config) -> None:
        super().__init__()
        dim = config.embed_dim
        spec = config.feature_encoder_spec
        self.spec = [tuple(layer) for layer in spec]
        self.local_encoder = ConvFeatureExtractor(spec, config.extractor_mode)
        feat_dim = spec[-1][0]
        self.project_features = nn.Sequential(Transpose(), nn.LayerNorm(feat_dim), nn.Linear(feat_dim, dim))
        kernel = max(3, config.conv_pos_width // config.conv_pos_depth)
        positions = nn.Sequential(
            Transpose(),
            *[
                nn.Sequential(
                    nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=config.conv_pos_groups),
                    TrimLast(kernel), Transpose(), nn.LayerNorm(dim, elementwise_affine=False),
                    Transpose(), nn.GELU(),
                )
                for _ in range(config.conv_pos_depth)
            ],
            Transpose(),
        )
        self.pos_pre_ln = config.conv_pos_pre_ln
        self.relative_positional_encoder = (
            nn.Sequential(nn.LayerNorm(dim), positions) if config.conv_pos_pre_ln else positions
        )
        self.context_encoder = BlockStack(config)
        self.extra_tokens = (
            nn.Parameter(torch.zeros(1, config.num_extra_tokens, dim)) if config.num_extra_tokens else None
        )
        self.alibi_scale = None
        if config.use_alibi:
            layers = config.prenet_depth + config.depth if config.alibi_scale_per_layer else 1
            heads = config.num_alibi_heads if config.alibi_scale_per_head else 1
            self.alibi_scale = nn.Parameter(torch.ones(layers, 1, heads, 1, 1))
        self.heads, self.alibi_heads = config.num_heads, config.num_alibi_heads

    def out_lengths(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames the conv stack makes of ``samples`` (each layer: ``(n - kernel) // stride + 1``)."""
        n = samples
        for _, kernel, stride in self.spec:
            n = torch.div(n - kernel, stride, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def positions(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """Relative positions of ``x [batch, frames, dim]``; padded frames are zeroed before
        each convolution so that valid frames see what they would see alone."""
        stack = self.relative_positional_encoder
        if self.pos_pre_ln:
            x, stack = stack[0](x), stack[1]
        h = x.transpose(1, 2)
        for layer in list(stack)[1:-1]:
            if padding is not None:
                h = h.masked_fill(padding[:, None, :], 0.0)
            h = layer(h)
        return h.transpose(1, 2)

    def forward(
        self, wave: torch.Tensor, frame_lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, AttentionBias]:
        x = self.project_features(self.local_encoder(wave[:, None]))
        frames = x.shape[1]
        padding = None
        if frame_lengths is not None:
            padding = torch.arange(frames, device=x.device)[None] >= frame_lengths[:, None]
            padding = padding if bool(padding.any()) else None
        x = x + self.positions(x, padding)
        extra = 0 if self.extra_tokens is None else self.extra_tokens.shape[1]
        alibi = None
        if self.alibi_scale is not None:
            pos = torch.arange(frames, device=x.device, dtype=torch.float32)
            distance = -(pos[None, :] - pos[:, None]).abs()
            slopes = alibi_slopes(self.alibi_heads).to(x.device)
            alibi = F.pad(slopes[:, None, None] * distance, (extra, 0, extra, 0))[None]
        if padding is not None:
            padding = F.pad(padding, (extra, 0), value=False)
        if self.extra_tokens is not None:
            x = torch.cat([self.extra_tokens.expand(len(x), -1, -1).to(x.dtype), x], dim=1)
        bias = AttentionBias(self.heads, alibi, self.alibi_scale, padding)
        return self.context_encoder(x, bias), bias.shifted(len(self.context_encoder.blocks))


def sincos_positions_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine positions of a ``rows x cols`` patch grid, row-major; the
    first half of the channels encodes the column, the second the row (as EAT computes them)."""

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        angles = np.outer(pos, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    row, col = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64),
                           indexing="ij")
    emb = np.concatenate([one_axis(dim // 2, col.ravel()), one_axis(dim // 2, row.ravel())], axis=1)
    return torch.from_numpy(emb).float()


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [b, rows * cols, dim], row-major


class FixedPositions(nn.Module):
    def __init__(self, positions: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("positions", positions[None])


class ImageModalityEncoder(nn.Module):
    """EAT's front end: fbank image -> 16x16 patches + fixed positions -> CLS + prenet."""

    def __init__(self, config: Data2Vec2Config) -> None:
        super().__init__()
        self.rows = config.target_length // config.patch_size
        self.cols = config.num_mel_bins // config.patch_size
        self.local_encoder = PatchEmbed(config.in_chans, config.embed_dim, config.patch_size)
        positions = sincos_positions_2d(config.embed_dim, self.rows, self.cols)
        self.fixed_positional_encoder = FixedPositions(positions)  # the checkpoint's replace these
        self.context_encoder = BlockStack(config)
        self.extra_tokens = (
            nn.Parameter(torch.zeros(1, config.num_extra_tokens, config.embed_dim))
            if config.num_extra_tokens else None
        )
        self.heads = config.num_heads

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, AttentionBias]:
        x = self.local_encoder(image[:, None])
        x = x + self.fixed_positional_encoder.positions[:, : x.shape[1]].to(x.dtype)
        if self.extra_tokens is not None:
            x = torch.cat([self.extra_tokens.expand(len(x), -1, -1).to(x.dtype), x], dim=1)
        bias = AttentionBias(self.heads)
        return self.context_encoder(x, bias), bias


class Data2Vec2Model(nn.Module):
    """The student network of a data2vec 2.0 checkpoint, for one modality."""

    def __init__(self, config: Data2Vec2Config) -> None:
        super().__init__()
        self.config = config
        front = AudioModalityEncoder if config.modality == "AUDIO" else ImageModalityEncoder
        self.modality_encoders = nn.ModuleDict({config.modality: front(config)})
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = _layer_norm(config) if config.layer_norm_first else None

    @property
    def front(self) -> nn.Module:
        return self.modality_encoders[self.config.modality]

    def forward(self, *inputs: torch.Tensor | None, all_states: bool = False) -> list[torch.Tensor]:
        """Token states ``[batch, extra + tokens, dim]`` after the front end and after each
        kept block (all of them, or only the last), the last after the final norm."""
        x, bias = self.front(*inputs)
        states = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, bias(i))
            states.append(x)
        if self.norm is not None:
            states[-1] = self.norm(states[-1])
        return states if all_states else states[-1:]


# -- encoders ---------------------------------------------------------------------------------


def load_converted(path: str | Path, family: str) -> tuple[Data2Vec2Config, Data2Vec2Model]:
    """The model of a converted directory (``config.json`` + ``model.safetensors``)."""
    raw, state = read_converted(path, family)
    config = Data2Vec2Config.from_dict(raw)
    if config.family != family:
        raise ValueError(f"{path} holds a converted {config.family!r} model, not {family!r}")
    model = Data2Vec2Model(config)
    model.load_state_dict(state)
    return config, model.eval()


class Data2Vec2Encoder(AudioEncoder):
    family: str

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.config, self.model = load_converted(cfg.path, self.family)
        self.dim = self.config.embed_dim
        self.num_layers = self.layers_to_keep(self.config.depth)
        self.model.blocks = self.model.blocks[: self.num_layers]  # upper blocks never run

    def _tokens(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        """The chosen (or mixed) hidden state, extra tokens dropped."""
        states = self.model(*inputs, all_states=self.cfg.layer_weighting)
        hidden = self.mix_layers(states) if self.cfg.layer_weighting else states[-1]
        return hidden[:, self.config.num_extra_tokens :]

    def finetune_layers(self) -> list[nn.Module]:
        return list(self.model.blocks)


@ENCODERS.register("emotion2vec")
class Emotion2VecEncoder(Data2Vec2Encoder):
    """emotion2vec on 16 kHz waveforms, 50 Hz (see the module doc)."""

    family = "emotion2vec"

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        front = self.model.front
        self.sample_rate = self.config.sample_rate
        self.frame_rate = self.sample_rate / math.prod(s for _, _, s in front.spec)
        receptive = 1  # the shortest input that yields one frame
        for _, kernel, stride in reversed(front.spec):
            receptive = (receptive - 1) * stride + kernel
        self.receptive_field = receptive
        self.batched = self.config.extractor_mode == "layer_norm"

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        wav = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
        if self.config.normalize:  # over the true length, as fairseq's dataset does
            wav = F.layer_norm(wav, wav.shape)
        if wav.numel() < self.receptive_field:
            wav = F.pad(wav, (0, self.receptive_field - wav.numel()))
        return wav[:, None]

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.model.front.out_lengths(lengths)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wave = inputs[..., 0].to(next(self.model.parameters()).dtype)
        if not self.batched:  # group norm over time would see the padding
            return encode_each(lambda w: self._tokens(w, None), wave, lengths)
        out_lengths = self.out_lengths(lengths.to(wave.device))
        return self._tokens(wave, out_lengths), out_lengths


@ENCODERS.register("eat")
class EATEncoder(Data2Vec2Encoder):
    """EAT over fbank patch rows, 6.25 Hz, up to ``target_length`` frames (see the module doc)."""

    family = "eat"

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        config = self.config
        self.fbank = KaldiFbank(
            num_mel_bins=config.num_mel_bins, mean=config.fbank_mean, std=config.fbank_std
        )
        self.sample_rate = self.fbank.sample_rate
        self.frame_rate = 1000.0 / (self.fbank.frame_shift_ms * config.patch_size)
        self.window_seconds = config.target_length * self.fbank.frame_shift_ms / 1000
        self.rows, self.cols = self.model.front.rows, self.model.front.cols
        self._warned = False

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        wav = np.asarray(waveform, dtype=np.float32)
        features = self.fbank(wav - wav.mean())  # EAT removes the clip's mean first
        if features.shape[0] > self.config.target_length and not self._warned:
            log.warning("EAT sees at most %d frames (%.2f s): longer audio is cut there",
                        self.config.target_length, self.window_seconds)
            self._warned = True
        return features

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Patch rows holding any of ``lengths`` fbank frames (at least one)."""
        frames = lengths.clamp(max=self.config.target_length)
        return torch.div(frames + self.config.patch_size - 1, self.config.patch_size,
                         rounding_mode="floor").clamp(min=1, max=self.rows)

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.target_length
        x = inputs[:, :n].to(next(self.model.parameters()).dtype)
        x = F.pad(x, (0, 0, 0, n - x.shape[1]))
        lengths = lengths.to(x.device)
        valid = torch.arange(n, device=x.device)[None, :, None] < lengths[:, None, None]
        x = x.masked_fill(~valid, self.fbank.pad_value)  # EAT's zero fbank padding, whatever the batch
        patches = self._tokens(x)
        rows = patches.reshape(len(x), self.rows, self.cols, -1).mean(dim=2)
        out_lengths = self.out_lengths(lengths)
        return rows[:, : int(out_lengths.max())], out_lengths  # not the window's padding rows


# -- converter --------------------------------------------------------------------------------


class PickledCheckpointError(ValueError):
    """The checkpoint needs ``torch.load(weights_only=False)``, which was not allowed."""


# what inference leaves out of published checkpoints: (pattern, why)
DROPPED = [
    (r"^_ema(\.|$)|^ema\.", "EMA teacher"),
    (r"^modality_encoders\.\w+\.decoder\.|^shared_decoder\.|^decoder\.", "pre-training decoder"),
    (r"^recon_proj\.|^cls_proj\.|^center$", "pre-training head"),
    (r"^proj\.|^fc_norm\.|^head\.", "classification head"),
]


def _plain(obj: Any) -> Any:
    """omegaconf / argparse / enum config objects as plain dicts, lists and scalars."""
    if isinstance(obj, Enum):
        return obj.name
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    elif type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        obj = OmegaConf.to_container(obj, resolve=True, enum_to_str=True)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _config_classes() -> list[Any]:
    """The classes fairseq-era checkpoints pickle their config as (omegaconf's when installed)."""
    import collections
    import typing

    classes: list[Any] = [argparse.Namespace, collections.defaultdict, typing.Any, dict, list]
    try:
        from omegaconf import DictConfig, ListConfig, nodes
        from omegaconf.base import ContainerMetadata, Metadata
    except ImportError:
        return classes
    return [*classes, DictConfig, ListConfig, ContainerMetadata, Metadata, nodes.AnyNode]


def load_checkpoint(src: Path, allow_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; ``weights_only=False`` only when allowed."""
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refused:
        if not allow_pickle:
            raise PickledCheckpointError(
                f"{src} holds pickled objects besides tensors (fairseq keeps its config as "
                "omegaconf/argparse objects), which torch.load(weights_only=True) refuses. "
                "--allow-pickle admits those config classes (and only them): if you trust the file, pass "
                f"--allow-pickle (convert_checkpoint(..., allow_pickle=True)). Refused: "
                f"{str(refused).splitlines()[0]}"
            ) from None
    # Still weights_only=True: --allow-pickle only admits the config classes fairseq pickles
    # (argparse / omegaconf containers), never arbitrary code from the file.
    log.warning("loading %s with its pickled config classes allowed (--allow-pickle)", src)
    try:
        with torch.serialization.safe_globals(_config_classes()):
            return torch.load(src, map_location="cpu", weights_only=True)
    except ModuleNotFoundError as missing:
        raise ModuleNotFoundError(
            f"{src} pickles objects of module {missing.name!r}: install it to load the file once "
            "(e.g. fairseq), or re-save the checkpoint with a plain-dict config"
        ) from None


def _state_and_config(
    ckpt: Any, src: Path, config_yaml: Path | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(state dict, model config, task config, outer model config) of a fairseq or FunASR file."""
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{src}: expected a dict checkpoint, got {type(ckpt).__name__}")
    state = ckpt
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    cfg = _plain(ckpt.get("cfg") or ckpt.get("args") or {})
    model_cfg = cfg["model"] if isinstance(cfg.get("model"), Mapping) else cfg  # argparse: flat
    task_cfg = cfg["task"] if isinstance(cfg.get("task"), Mapping) else cfg
    if not model_cfg:  # FunASR keeps its config beside model.pt
        yaml_path = config_yaml or src.with_name("config.yaml")
        if not yaml_path.is_file():
            raise ValueError(f"{src} holds no config ('cfg' or 'args') and there is no {yaml_path}: "
                             "pass the model's config.yaml with --config")
        model_cfg = (yaml.safe_load(yaml_path.read_text()) or {}).get("model_conf") or {}
        task_cfg = model_cfg
    outer = model_cfg
    inner = model_cfg.get("pretrained_model_args")
    if isinstance(inner, Mapping):  # a fine-tuned classifier wraps the pre-trained model
        model_cfg, task_cfg = inner.get("model", {}), inner.get("task", {})
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return dict(state), model_cfg, task_cfg, outer


def config_from_checkpoint(
    family: str, model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], outer: Mapping[str, Any]
) -> Data2Vec2Config:
    """The hyperparameters of a data2vec 2.0 checkpoint config (fairseq ``cfg.model`` or
    FunASR ``model_conf``); data2vec 2.0's defaults where a key is absent."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; known: {', '.join(FAMILIES)}")
    for key in ("embed_dim", "depth", "num_heads"):
        if key not in model_cfg:
            raise ValueError(f"the checkpoint config has no model {key!r}")
    mod = ((model_cfg.get("modalities") or {}).get(FAMILIES[family].lower())) or {}
    if mod.get("learned_alibi"):
        raise ValueError("learned ALiBi tables (learned_alibi: true) are not supported")

    def get(d: Mapping[str, Any], key: str, default: Any) -> Any:
        value = d.get(key)
        return default if value is None else value

    common = dict(
        family=family,
        embed_dim=int(model_cfg["embed_dim"]),
        depth=int(model_cfg["depth"]),
        num_heads=int(model_cfg["num_heads"]),
        mlp_ratio=float(get(model_cfg, "mlp_ratio", 4.0)),
        norm_eps=float(get(model_cfg, "norm_eps", 1e-6)),
        norm_affine=bool(get(model_cfg, "norm_affine", True)),
        layer_norm_first=bool(get(model_cfg, "layer_norm_first", False)),
        prenet_depth=int(get(mod, "prenet_depth", 4 if family == "emotion2vec" else 0)),
        num_extra_tokens=int(get(mod, "num_extra_tokens", 0)),
        use_alibi=bool(get(mod, "use_alibi_encoder", False)),
        num_alibi_heads=int(get(mod, "num_alibi_heads", model_cfg["num_heads"])),
        alibi_scale_per_layer=bool(get(mod, "learned_alibi_scale_per_layer", False)),
        alibi_scale_per_head=bool(get(mod, "learned_alibi_scale_per_head", False)),
    )
    if family == "emotion2vec":
        normalize = model_cfg.get("normalize", task_cfg.get("normalize"))
        return Data2Vec2Config(
            **common,
            normalize=True if normalize is None else bool(normalize),
            feature_encoder_spec=[
                list(t) for t in parse_conv_spec(get(mod, "feature_encoder_spec", DEFAULT_CONV_SPEC))
            ],
            extractor_mode=str(get(mod, "extractor_mode", get(model_cfg, "extractor_mode", "layer_norm"))),
            conv_pos_width=int(get(mod, "conv_pos_width", 95)),
            conv_pos_groups=int(get(mod, "conv_pos_groups", 16)),
            conv_pos_depth=int(get(mod, "conv_pos_depth", 5)),
            conv_pos_pre_ln=bool(get(mod, "conv_pos_pre_ln", False)),
        )
    if int(get(mod, "embed_dim", common["embed_dim"])) != common["embed_dim"]:
        raise ValueError("EAT with a patch width other than embed_dim is not supported")
    target = outer.get("target_length") or mod.get("target_length") or task_cfg.get("target_length") or 1024
    return Data2Vec2Config(
        **common,
        patch_size=int(get(mod, "patch_size", 16)),
        in_chans=int(get(mod, "in_chans", 1)),
        target_length=int(target),
    )


def split_state(state: Mapping[str, Any], modality: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What inference keeps (tensors) and what it drops (key -> why)."""
    kept: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    for key, value in state.items():
        why = next((why for pattern, why in DROPPED if re.search(pattern, key)), None)
        own = key.startswith(f"modality_encoders.{modality}.")
        if why is None and key.startswith("modality_encoders.") and not own:
            why = "another modality"
        if why is not None:
            dropped[key] = why
        elif not isinstance(value, torch.Tensor):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        else:
            kept[key] = value
    scale = f"modality_encoders.{modality}.alibi_scale"
    if scale in kept and kept[scale].dim() == 4:  # older checkpoints: one scale for all layers
        kept[scale] = kept[scale][None]
    return kept, dropped


def convert_checkpoint(
    src: str | Path, dst: str | Path, modality: str, *, allow_pickle: bool = False,
    config_yaml: Path | None = None,
) -> ConversionReport:
    """Convert a published emotion2vec / EAT checkpoint into ``dst`` (``config.json`` +
    ``model.safetensors``); ``modality``: ``emotion2vec`` / ``AUDIO`` or ``eat`` / ``IMAGE``."""
    family = {mod: fam for fam, mod in FAMILIES.items()}.get(modality, modality.lower())
    if family not in FAMILIES:
        raise ValueError(f"modality={modality!r}; known: {', '.join(FAMILIES)}")
    src, dst = Path(src), Path(dst)
    ckpt = load_checkpoint(src, allow_pickle)
    state, model_cfg, task_cfg, outer = _state_and_config(ckpt, src, config_yaml)
    config = config_from_checkpoint(family, model_cfg, task_cfg, outer)
    kept, dropped = split_state(state, config.modality)
    with torch.device("meta"):  # shapes only
        check_state(Data2Vec2Model(config).state_dict(), kept, str(src))
    write_converted(dst, asdict(config), kept, {"source": src.name, "family": family})
    return ConversionReport(dropped=dropped, notes=[
        f"kept {len(kept)} tensors ({config.depth} blocks, width {config.embed_dim})"
    ])


for _family in FAMILIES:  # `slam convert emotion2vec ...` / `slam convert eat ...`
    CONVERTERS.register(_family)(functools.partial(convert_checkpoint, modality=_family))
