"""What trains: the LLM's tuning method (one registry) and how much of the encoder.

Everything starts frozen; ``apply_llm_tuning`` then opens the LLM the way ``peft.method``
names, and ``unfreeze_encoder`` opens the top ``train.encoder_layers`` layers of the encoder
(plus its learned layer weights, if it has them).
"""

from __future__ import annotations

import logging

from peft import LoraConfig, PrefixTuningConfig, get_peft_model
from torch import nn

from slam.config import PeftConfig, SlamConfig
from slam.model.encoders import AudioEncoder
from slam.registry import Registry

log = logging.getLogger(__name__)

LLM_TUNINGS: Registry[nn.Module] = Registry("peft method")


@LLM_TUNINGS.register("none")
def frozen(llm: nn.Module, cfg: PeftConfig) -> nn.Module:
    """Projector-only training: the LLM stays as the zoo made it."""
    return llm


@LLM_TUNINGS.register("full")
def full_finetuning(llm: nn.Module, cfg: PeftConfig) -> nn.Module:
    return llm.requires_grad_(True)


@LLM_TUNINGS.register("lora")
def lora(llm: nn.Module, cfg: PeftConfig) -> nn.Module:
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, config)


@LLM_TUNINGS.register("prefix")
def prefix_tuning(llm: nn.Module, cfg: PeftConfig) -> nn.Module:
    if cfg.num_virtual_tokens < 1:
        raise ValueError(f"peft.num_virtual_tokens must be >= 1, got {cfg.num_virtual_tokens}")
    config = PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type="CAUSAL_LM")
    return get_peft_model(llm, config)


def apply_llm_tuning(llm: nn.Module, cfg: PeftConfig) -> nn.Module:
    """Freeze the LLM, then open what ``cfg.method`` trains."""
    llm.requires_grad_(False)
    return LLM_TUNINGS.build(cfg.method, llm, cfg)


def encoder_trains(cfg: SlamConfig) -> bool:
    """Whether any encoder parameter trains (then its outputs cannot be cached)."""
    return cfg.train.encoder_layers != 0 or bool(getattr(cfg.encoder, "layer_weighting", False))


def unfreeze_encoder(encoder: AudioEncoder, cfg: SlamConfig) -> None:
    """Open the top ``train.encoder_layers`` layers (-1: all of them) and any layer weights.

    Dropout stays off: the paper's partial fine-tuning adapts a pretrained encoder on little
    data, and the encoder is kept in eval mode so that cached and in-step outputs agree.
    """
    n = cfg.train.encoder_layers
    if n < -1:
        raise ValueError(f"train.encoder_layers must be -1 (all), 0 (frozen) or N > 0, got {n}")
    if n == -1:
        encoder.requires_grad_(True)
    elif n > 0:
        layers = encoder.finetune_layers()
        if n > len(layers):
            raise ValueError(f"train.encoder_layers={n} but the encoder has {len(layers)} layers")
        for layer in layers[len(layers) - n :]:
            layer.requires_grad_(True)
    weights = getattr(encoder, "layer_weights", None)
    if isinstance(weights, nn.Parameter):
        weights.requires_grad_(True)
    trained = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    if trained:
        log.info("encoder: %.2fM trainable parameters", trained / 1e6)


def uses_cache(cfg: SlamConfig) -> bool:
    """Training reads cached encoder outputs unless told not to or the encoder trains."""
    return cfg.train.use_cache and not encoder_trains(cfg)
