"""The encoder interface and its registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from slam.config import EncoderConfig
from slam.registry import Registry

if TYPE_CHECKING:
    from lhotse.cut import Cut

POOLINGS = ("none", "mean")


class AudioEncoder(nn.Module):
    """Waveform -> hidden states ``[batch, frames, dim]`` at ``frame_rate`` Hz.

    Work is split in two so the same code serves the cache stage and in-step encoding:
    ``extract`` turns one waveform (at ``sample_rate``) into the encoder's input features
    (CPU, data loader side) and ``forward`` runs the network on a padded batch of them.

    A family subclasses this, declares ``dim``, ``frame_rate`` and ``sample_rate`` and
    implements ``extract``, ``encode`` (the network on a padded batch, returning true output
    lengths) and ``finetune_layers``. ``forward`` adds what every family shares: frames past
    each true length are zeroed, and ``cfg.pooling="mean"`` turns any frame-wise encoder into a
    sequence-wise one. A sequence-wise encoder (paper V-B: one vector per clip) outputs
    ``[batch, 1, dim]`` with lengths of 1 and has ``sequence_wise = True`` and
    ``frame_rate = 0.0`` (no frames per second to speak of).
    """

    dim: int
    sample_rate: int = 16000
    _native_frame_rate: float
    _native_sequence_wise: bool = False
    takes_context_padding: bool = False  # honours ``encoder.context_seconds``
    # Seconds of audio the encoder hears whole at most (None: any length). Longer audio would
    # be cut short: the data side decides first (slam.data.cuts.fit_window).
    window_seconds: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Families declare ``frame_rate = 50.0`` / ``sequence_wise = True`` as plain class
        # attributes; move them under the properties below so that pooling can override them.
        for name in ("frame_rate", "sequence_wise"):
            value = cls.__dict__.get(name)
            if value is not None and not isinstance(value, property):
                setattr(cls, f"_native_{name}", value)
                delattr(cls, name)

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"encoder.pooling={cfg.pooling!r}; known: {', '.join(POOLINGS)}")
        if cfg.context_seconds and not self.takes_context_padding:
            raise ValueError(
                f"encoder.context_seconds={cfg.context_seconds}: the {cfg.name!r} encoder runs on "
                "the true length only (set it to 0)"
            )

    @property
    def sequence_wise(self) -> bool:
        """One vector per clip (natively, or by ``cfg.pooling``)."""
        return bool(self._native_sequence_wise) or self.cfg.pooling != "none"

    @property
    def frame_rate(self) -> float:
        """Output frames per second; 0.0 for a sequence-wise encoder."""
        return 0.0 if self.sequence_wise else float(self._native_frame_rate)

    @frame_rate.setter
    def frame_rate(self, value: float) -> None:
        self._native_frame_rate = value

    # -- data loader side ---------------------------------------------------------------

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        """Input features ``[time, feat]`` of one mono waveform at ``sample_rate``."""
        raise NotImplementedError

    def load_input(self, cut: Cut) -> torch.Tensor:
        """The input features of a Lhotse cut: resampled to ``sample_rate``, mixed to mono."""
        if cut.sampling_rate != self.sample_rate:
            cut = cut.resample(self.sample_rate)
        audio = cut.load_audio()  # [channels, samples]
        mono = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0)
        return self.extract(np.ascontiguousarray(mono, dtype=np.float32))

    # -- model side -----------------------------------------------------------------------

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The family's network on padded ``inputs [batch, time, feat]``: hidden states and
        their true lengths (frames past a length may hold anything)."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode padded ``inputs [batch, time, feat]``; return hidden states and their lengths."""
        hidden, out_lengths = self.encode(inputs, lengths)
        out_lengths = out_lengths.to(hidden.device)
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None] < out_lengths[:, None]
        hidden = hidden.masked_fill(~valid[..., None], 0.0)  # padding never reaches downstream
        if self.cfg.pooling == "mean":
            hidden = hidden.sum(1, keepdim=True) / out_lengths.clamp(min=1)[:, None, None].to(hidden.dtype)
            out_lengths = torch.ones_like(out_lengths)
        return hidden, out_lengths

    def finetune_layers(self) -> list[nn.Module]:
        """The encoder's layers bottom to top, so partial fine-tuning can open the top N."""
        raise NotImplementedError

    # -- helpers for families -------------------------------------------------------------

    def layers_to_keep(self, n_layers: int) -> int:
        """How many of ``n_layers`` layers ``cfg.layer`` needs (the rest can be dropped);
        creates ``layer_weights`` when ``cfg.layer_weighting`` is on.

        Call after building the network so that ``cache_key``'s probe reads its weights.
        """
        keep = n_layers if self.cfg.layer == -1 else self.cfg.layer
        if not 1 <= keep <= n_layers:
            raise ValueError(f"encoder.layer={self.cfg.layer} but {self.cfg.path} has {n_layers} layers")
        if self.cfg.layer_weighting:
            # one weight per hidden state: the embeddings and each kept layer; zeros = a plain mean
            self.layer_weights = nn.Parameter(torch.zeros(keep + 1))
        return keep

    def mix_layers(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """The softmax(``layer_weights``)-weighted sum of ``hidden_states``."""
        if len(hidden_states) != len(self.layer_weights):
            raise ValueError(f"{len(hidden_states)} hidden states for {len(self.layer_weights)} weights")
        weights = torch.softmax(self.layer_weights, dim=0)
        mixed = weights[0] * hidden_states[0]
        for weight, state in zip(weights[1:], hidden_states[1:], strict=True):
            mixed = mixed + weight * state
        return mixed

    def require_single_output(self, family: str) -> None:
        """For families without a stack of comparable hidden states."""
        if self.cfg.layer != -1 or self.cfg.layer_weighting:
            raise ValueError(f"{family} has no layer choice: use encoder.layer=-1, layer_weighting=false")

    def cache_key(self) -> str:
        """Changes whenever the cached outputs would change (weights, layer, settings)."""
        n_params = sum(p.numel() for p in self.parameters())
        probe = next(iter(self.parameters())).detach().float().flatten()[:64].tolist()
        payload = json.dumps(
            {"cls": type(self).__name__, "cfg": vars(self.cfg), "n": n_params, "probe": probe},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


ENCODERS: Registry[AudioEncoder] = Registry("encoder")


def build_encoder(cfg: EncoderConfig) -> AudioEncoder:
    """Build the encoder named by ``cfg.name`` (frozen, in eval mode)."""
    encoder = ENCODERS.build(cfg.name, cfg)
    encoder.requires_grad_(False)
    return encoder.eval()


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[time, feat]`` tensors into ``[batch, max_time, feat]`` with zero padding."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    batch = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
    return batch, lengths


def encode_each(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn`` (``[b, time, ...] -> [b, frames, dim]``) on each item at its true length.

    For networks whose padding would leak into valid outputs (group norm over time, no
    attention mask, edge padding of convolutions): exact, at the cost of batching (a batch
    without padding still runs at once).
    """
    if bool((lengths == inputs.shape[1]).all()):
        hidden = fn(inputs)
        return hidden, torch.full((len(inputs),), hidden.shape[1], dtype=torch.long, device=hidden.device)
    outs = [fn(inputs[i : i + 1, : int(n)])[0] for i, n in enumerate(lengths.tolist())]
    out_lengths = torch.tensor([o.shape[0] for o in outs], dtype=torch.long, device=outs[0].device)
    return torch.nn.utils.rnn.pad_sequence(outs, batch_first=True), out_lengths
