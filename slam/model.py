"""The encoder -> projector -> LLM assembly.

The prompt comes from the LLM's chat template with a placeholder where the audio goes; the
placeholder splits it into a prefix and a suffix whose token embeddings surround the projected
audio. Labels cover only the answer tokens (and the end-of-turn token that stops decoding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from slam.config import PeftConfig, SlamConfig
from slam.encoders import AudioEncoder, build_encoder
from slam.llms import build_llm
from slam.projectors import Projector, build_projector, load_projector, save_projector

IGNORE_INDEX = -100
AUDIO_PLACEHOLDER = "<|slam_audio|>"
ADAPTER_DIR = "adapter"
ASSETS_INFO = "slam.json"


@dataclass
class Prompt:
    """Token ids around the audio, and the id that ends an answer."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    eos_id: int


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    use_chat_template: bool,
    system_prompt: str | None = None,
) -> Prompt:
    if use_chat_template:
        messages = [{"role": "user", "content": f"{AUDIO_PLACEHOLDER}{instruction}"}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # base models: a plain prompt
        text = f"{tokenizer.bos_token or ''}{AUDIO_PLACEHOLDER}\n{instruction}\n"
    prefix, suffix = text.split(AUDIO_PLACEHOLDER)
    encode = lambda s: tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
    return Prompt(encode(prefix), encode(suffix), tokenizer.eos_token_id)


def apply_peft(llm: nn.Module, cfg: PeftConfig) -> nn.Module:
    """Freeze the LLM and add the configured adapter (or none)."""
    llm.requires_grad_(False)
    if cfg.method == "none":
        return llm
    if cfg.method == "lora":
        lora = LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(llm, lora)
    raise ValueError(f"peft.method={cfg.method!r}; known: lora, none")


class SpeechLLM(nn.Module):
    def __init__(
        self,
        projector: Projector,
        llm: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompt: Prompt,
        encoder: AudioEncoder | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.ctc_blank: nn.Parameter | None = None

    def enable_ctc(self) -> None:
        """Add the learned blank embedding the auxiliary CTC loss needs."""
        dim = self.llm.get_input_embeddings().embedding_dim
        self.ctc_blank = nn.Parameter(torch.zeros(dim))

    def ctc_loss(self, audio: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """CTC of the projected audio against the answer tokens, over [token embeddings; blank]."""
        table = self.llm.get_input_embeddings().weight.detach()
        classes = torch.cat([table, self.ctc_blank[None].to(table.dtype)])  # blank is the last class
        logits = audio.float() @ classes.float().T
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # [time, batch, classes]
        flat = torch.tensor([t for target in targets for t in target], dtype=torch.long)
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        return nn.functional.ctc_loss(
            log_probs, flat.to(audio.device), lengths.cpu(), target_lengths,
            blank=classes.shape[0] - 1, zero_infinity=True,
        )

    # -- pieces ---------------------------------------------------------------------------
    @property
    def base_llm(self) -> nn.Module:
        return self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm

    def audio_embeddings(
        self, inputs: torch.Tensor, lengths: torch.Tensor, encoded: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected audio; ``encoded`` says the inputs are cached encoder outputs."""
        if not encoded:
            if self.encoder is None:
                raise RuntimeError("raw features given but the model was built without its encoder")
            inputs, lengths = self.encoder(inputs, lengths)
        return self.projector(inputs.to(self.projector_dtype), lengths)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def assemble(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        targets: list[list[int]] | None = None,
        left_pad: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Build ``inputs_embeds``, ``attention_mask`` and ``labels`` for a batch.

        Each row is prefix + its own audio positions + suffix (+ answer + eos when training);
        rows are padded on the right for training and on the left for generation.
        """
        embed = self.llm.get_input_embeddings()
        device = audio.device
        ids = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
        prefix = embed(ids(self.prompt.prefix_ids))
        suffix = embed(ids(self.prompt.suffix_ids))
        rows, labels = [], []
        for i in range(audio.shape[0]):
            parts = [prefix, audio[i, : audio_lengths[i]].to(prefix.dtype), suffix]
            label = [IGNORE_INDEX] * sum(p.shape[0] for p in parts)
            if targets is not None:
                answer = list(targets[i]) + [self.prompt.eos_id]
                parts.append(embed(ids(answer)))
                label += answer
            rows.append(torch.cat(parts))
            labels.append(ids(label))
        width = max(r.shape[0] for r in rows)
        embeds = prefix.new_zeros(len(rows), width, prefix.shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        label_batch = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long, device=device)
        for i, (row, label) in enumerate(zip(rows, labels)):
            span = slice(width - row.shape[0], width) if left_pad else slice(0, row.shape[0])
            embeds[i, span], mask[i, span], label_batch[i, span] = row, 1, label
        return embeds, mask, label_batch

    # -- training -------------------------------------------------------------------------
    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        targets: list[list[int]],
        encoded: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Mean cross-entropy over answer tokens, with token accuracy counts."""
        audio, audio_lengths = self.audio_embeddings(inputs, lengths, encoded)
        embeds, mask, labels = self.assemble(audio, audio_lengths, targets)
        base = self.base_llm
        hidden = base.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        # Logits only where a label exists: the vocabulary projection over every prompt and
        # audio position would cost more than the rest of the LLM on small models.
        next_labels = labels[:, 1:]
        keep = next_labels != IGNORE_INDEX
        logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
        softcap = getattr(base.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        gold = next_labels[keep]
        loss = nn.functional.cross_entropy(logits, gold)
        correct = (logits.argmax(-1) == gold).sum()
        out = {"loss": loss, "correct": correct, "tokens": keep.sum()}
        if self.ctc_blank is not None and self.training:
            out["ctc_loss"] = self.ctc_loss(audio, audio_lengths, targets)
        return out

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        encoded: bool = True,
        num_beams: int = 1,
        max_new_tokens: int = 64,
    ) -> list[str]:
        audio, audio_lengths = self.audio_embeddings(inputs, lengths, encoded)
        embeds, mask, _ = self.assemble(audio, audio_lengths, left_pad=True)
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.prompt.eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}


def build_speech_llm(
    cfg: SlamConfig, encoder_dim: int | None = None, with_encoder: bool = False
) -> SpeechLLM:
    """A fresh model for training: frozen encoder (optional), new projector, LLM + adapter."""
    encoder = build_encoder(cfg.encoder) if with_encoder else None
    if encoder is not None:
        encoder_dim = encoder.dim
    if encoder_dim is None:
        raise ValueError("encoder_dim is needed when the encoder is not built")
    loaded = build_llm(cfg.llm)
    llm_dim = loaded.model.get_input_embeddings().embedding_dim
    projector = build_projector(cfg.projector, encoder_dim, llm_dim)
    llm = apply_peft(loaded.model, cfg.peft)
    prompt = build_prompt(
        loaded.tokenizer, cfg.train.prompt, loaded.use_chat_template, cfg.train.system_prompt
    )
    model = SpeechLLM(projector, llm, loaded.tokenizer, prompt, encoder)
    if cfg.train.ctc_weight > 0:
        model.enable_ctc()
    return model


def save_assets(model: SpeechLLM, directory: Path, info: dict) -> None:
    """Trained parameters only: projector (safetensors + config) and the PEFT adapter dir."""
    directory.mkdir(parents=True, exist_ok=True)
    save_projector(model.projector, directory)
    if isinstance(model.llm, PeftModel):
        model.llm.save_pretrained(str(directory / ADAPTER_DIR))
    (directory / ASSETS_INFO).write_text(json.dumps(info, indent=2))


def load_assets(model: SpeechLLM, directory: Path) -> SpeechLLM:
    """Put trained assets (from :func:`save_assets`) on top of freshly built zoo models."""
    trained = load_projector(directory)
    model.projector.load_state_dict(trained.state_dict())
    adapter = directory / ADAPTER_DIR
    if adapter.exists():
        if not isinstance(model.llm, PeftModel):
            raise ValueError(f"{adapter} holds an adapter but peft.method is 'none'")
        set_peft_model_state_dict(model.llm, load_file(str(adapter / "adapter_model.safetensors")))
    return model
