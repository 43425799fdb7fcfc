"""The encoder -> projector -> LLM assembly.

The prompt comes from the LLM's chat template with a placeholder where the audio goes; the
placeholder splits it into a prefix and a suffix whose token embeddings surround the projected
audio. Labels cover only the answer tokens (and the end-of-turn token that stops decoding).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import shutil
import string
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, LogitsProcessorList, PreTrainedTokenizerBase

from slam.config import (
    ConfigError,
    DecodeConfig,
    RuntimeConfig,
    SlamConfig,
    as_dict,
    code_loading_switches,
    to_config,
)
from slam.data.augment import EncoderOutputMasking
from slam.data.cuts import batch_rows
from slam.decode.ctc_prefix import CTCPrefixScorer
from slam.decode.keyword_boost import KeywordBoost, word_variants
from slam.model.encoders import AudioEncoder, build_encoder
from slam.model.llms import build_llm
from slam.model.projectors import Projector, build_projector, load_projector, save_projector
from slam.model.tuning import apply_llm_tuning, encoder_trains, unfreeze_encoder
from slam.recipes import recipe_of
from slam.utils import atomic_dir, autocast, setup_runtime

IGNORE_INDEX = -100
AUDIO_PLACEHOLDER = "<|slam_audio|>"
log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
ENCODER_WEIGHTS = "encoder.safetensors"  # the fine-tuned encoder parameters only
FULL_LLM_DIR = "llm"  # a fully fine-tuned LLM, as a Hugging Face model dir
ASSETS_INFO = "slam.json"
MODEL = "model"  # <train.dir>/model: the trained model directory (SpeechLLM.save_pretrained)
CTC_HEAD = "projector_ctc.safetensors"  # the auxiliary CTC head: its blank and its classes


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


class SpeechLLM(nn.Module):
    def __init__(
        self,
        projector: Projector,
        llm: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompt: Prompt,
        encoder: AudioEncoder | None = None,
        prompt_builder: Callable[[str], Prompt] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt = prompt
        # instruction -> Prompt in the same template, for rows with their own instruction
        self.prompt_builder = prompt_builder
        self.augment: nn.Module = nn.Identity()  # training-time masking (slam.data.augment)
        self.ctc_blank: nn.Parameter | None = None
        self.ctc_classes: torch.Tensor | None = None  # token ids the CTC loss scores (None: all)
        self.ctc_skip_punctuation = False  # TrainConfig.ctc_skip_punctuation, see ctc_silent_tokens
        # the training step adds the CTC loss (train.ctc_weight > 0); the warm-up alone does not
        # need it, and answers that are not transcripts (translations) have no CTC alignment
        self.ctc_in_step = True
        # what the LLM reads of the projection (ProjectorConfig.posterior_inputs, blank_skip)
        self.posterior_inputs = False
        self.blank_skip = 1.0
        self.utterance_norm = False  # ProjectorConfig.utterance_norm, see normalise_utterances
        self.config: SlamConfig | None = None  # the composed config it was built from

    def save_pretrained(self, directory: str | Path, extra: Iterable[Callable[[Path], None]] = (),
                        **info: Any) -> None:  # fmt: skip
        """The model directory, written atomically: ``slam.json`` (the composed config and the
        ``info`` given, e.g. the MLflow run id), the projector (safetensors + config), the PEFT
        adapter as peft writes it, the CTC head, tuned encoder weights; the frozen encoder and
        LLM by reference (``encoder.path``, ``llm.path`` in the config). ``extra`` writers add a
        recipe's own models (slam.recipes)."""
        if self.config is None:
            raise ValueError("save_pretrained needs the model's config: build it with build_speech_llm")
        with atomic_dir(directory) as tmp:
            save_assets(self, tmp, {**info, "config": as_dict(self.config)})
            for write in extra:
                write(tmp)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None,
                        trust_remote_code: bool = False) -> SpeechLLM:  # fmt: skip
        """A model directory of :meth:`save_pretrained` (a trained run's ``<train.dir>/model``)
        rebuilt on the zoo models its config names, with its encoder, in eval mode on
        ``device`` (default: the stored ``runtime.device``). A config that turns on a
        code-loading switch is refused unless ``trust_remote_code`` (see :func:`trained_config`)."""
        cfg = trained_config(Path(directory), trust_remote_code)
        if device is not None:
            cfg.runtime.device = device
        model = build_speech_llm(cfg, with_encoder=True)
        load_assets(model, Path(directory))
        return model.to(setup_runtime(cfg.runtime)).eval()

    def enable_ctc(self) -> None:
        """Add the learned blank embedding the auxiliary CTC loss needs."""
        self.ctc_blank = nn.Parameter(torch.zeros(self.llm.get_input_embeddings().embedding_dim))

    def restrict_ctc(self, token_counts: Mapping[int, int] | Iterable[int], min_count: int = 1) -> None:
        """Score CTC only against the tokens of the training transcripts (``token_counts``: token ->
        how often; or just the tokens): a transcript never needs the rest of the vocabulary, and
        scoring every frame against all of it was most of the loss's cost (11.8k of SmolLM2's 49k
        tokens on the default corpus). With ``min_count`` > 1 (``train.ctc_min_count``) a rarer
        token gets no class: the CTC targets spell it in the classes (:meth:`ctc_labels`), which
        then include the characters of every such token, so the head learns to spell pieces of
        words and joint decoding can spell a word no transcript held (``decode.ctc_spell_unknown``)."""
        counts = token_counts if isinstance(token_counts, Mapping) else dict.fromkeys(token_counts, min_count)
        silent = self.ctc_silent_tokens()
        kept = {int(t) for t, n in counts.items() if n >= min_count} - silent
        rare = sorted(set(counts) - kept - silent)
        if rare:
            chars = {ch for piece in self.tokenizer.convert_ids_to_tokens(rare) for ch in piece}
            ids = self.tokenizer.convert_tokens_to_ids(sorted(chars))
            kept |= {i for i in ids if i is not None and i != self.tokenizer.unk_token_id} - silent
        self.ctc_classes = torch.tensor(sorted(kept), dtype=torch.long)

    def ctc_silent_tokens(self) -> frozenset[int]:
        """With ``ctc_skip_punctuation`` (``train.ctc_skip_punctuation``), the tokens the CTC head
        does not write: those whose text has no letter or digit (punctuation, whitespace), special
        tokens and byte pieces of a character (whose text alone is not a character) excepted.
        They have no class, are left out of the CTC targets, and joint decoding scores them as
        CTC-neutral. Empty otherwise. Made once."""
        if not self.ctc_skip_punctuation:
            return frozenset()
        cached = getattr(self, "_silent", None)
        if cached is None:
            special = set(self.tokenizer.all_special_ids)
            texts = self.tokenizer.batch_decode([[t] for t in range(len(self.tokenizer))])
            cached = self._silent = frozenset(
                t for t, text in enumerate(texts)
                if t not in special and text and "\ufffd" not in text and not any(ch.isalnum() for ch in text)
            )  # fmt: skip
        return cached

    def ctc_log_probs(self, audio: torch.Tensor) -> torch.Tensor:
        """``[batch, positions, classes + 1]`` CTC log-probabilities of the projected audio over
        the LLM's token embeddings of the CTC classes, the blank last."""
        if self.ctc_blank is None:
            raise RuntimeError("this model has no CTC head (train.ctc_weight and ctc_warmup_steps are 0)")
        return (audio.float() @ self.ctc_table().T).log_softmax(-1)

    def ctc_table(self) -> torch.Tensor:
        """``[classes + 1, dim]``: the LLM's (frozen) input embeddings of the CTC classes, as the
        LLM sees them, then the learned blank."""
        embed = self.llm.get_input_embeddings()
        table = embed.weight.detach()
        if self.ctc_classes is not None:
            table = table[self.ctc_classes.to(table.device)]
        scale = getattr(embed, "embed_scale", None)
        if scale is not None:  # Gemma scales its embeddings inside the module: score what the LLM sees
            table = table * scale
        return torch.cat([table, self.ctc_blank[None].to(table.dtype)]).float()  # blank is the last class

    def ctc_class_ids(self) -> torch.Tensor:
        """The LLM token id of each CTC class (blank excluded)."""
        if self.ctc_classes is not None:
            return self.ctc_classes
        return torch.arange(self.llm.get_input_embeddings().num_embeddings)

    def ctc_spelling(self) -> Callable[[int], tuple[int, ...]]:
        """An LLM token outside the CTC classes -> the class indices that spell it (``()``: none,
        and for special tokens); for CTC targets (``train.ctc_min_count``) and joint decoding
        (``decode.ctc_spell_unknown``). A piece is a class whose string is a stretch of the
        token's (cost 2) or is one up to ASCII case and a leading word-boundary mark (cost 3):
        "Press" at the start of an answer is the class " press", one piece that sounds the
        same, not "P" + "ress"; the cheapest spelling wins. Made once per class set. The
        tokenizer cannot do this itself: its merges always give the whole token back, and the
        classes are an arbitrary subset of its vocabulary."""
        cached = getattr(self, "_spelling", None)
        if cached is not None and cached[0] is self.ctc_classes:
            return cached[1]
        ids = self.ctc_class_ids().tolist()
        strings = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        special = set(self.tokenizer.all_special_ids)
        exact: dict[str, int] = {}
        folded: dict[str, int] = {}
        for i, t in enumerate(ids):  # ascending token ids: the commoner merge keeps a folded key
            if t not in special and strings[t]:
                exact[strings[t]] = i
                folded.setdefault(fold_piece(strings[t]), i)
        folded.pop("", None)  # a bare word-boundary mark folds to nothing
        longest = max(map(len, exact), default=0) + 1

        @cache
        def spell(token: int) -> tuple[int, ...]:
            if token in special or not 0 <= token < len(strings):
                return ()
            text = strings[token]
            # best[j]: (cost, pieces) of text[:j]
            best: list[tuple[int, tuple[int, ...]] | None] = [(0, ())] + [None] * len(text)
            for i in range(len(text)):
                if best[i] is None:
                    continue
                for j in range(i + 1, min(len(text), i + longest) + 1):
                    for cost, piece in ((2, exact.get(text[i:j])), (3, folded.get(fold_piece(text[i:j])))):
                        if piece is not None and (best[j] is None or best[i][0] + cost < best[j][0]):
                            best[j] = (best[i][0] + cost, best[i][1] + (piece,))
            return best[-1][1] if best[-1] else ()

        self._spelling = (self.ctc_classes, spell)
        return spell

    def ctc_labels(self, tokens: list[int]) -> list[int]:
        """The CTC class indices that write ``tokens``: each token's class, else its spelling;
        nothing for a token the head does not write (:meth:`ctc_silent_tokens`)."""
        silent = self.ctc_silent_tokens()
        if self.ctc_classes is None:
            return [token for token in tokens if token not in silent]
        cached = getattr(self, "_class_positions", None)
        if cached is None or cached[0] is not self.ctc_classes:  # once per class set, not per row
            positions = {token: i for i, token in enumerate(self.ctc_classes.tolist())}
            cached = self._class_positions = (self.ctc_classes, positions)
        position = cached[1]
        labels = []
        for token in tokens:
            if token in silent:
                continue
            spelled = (position[token],) if token in position else self.ctc_spelling()(token)
            if not spelled:
                piece = self.tokenizer.convert_ids_to_tokens(token)
                raise ValueError(f"CTC target token {token} ({piece!r}) is outside the classes given to "
                                 "restrict_ctc and cannot be spelled in them")  # fmt: skip
            labels.extend(spelled)
        return labels

    def ctc_loss(
        self, audio: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]],
        log_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CTC of the projected audio against the answer tokens, over [token embeddings; blank]
        (``log_probs``: :meth:`ctc_log_probs` of ``audio`` when the caller has them already)."""
        labels = [self.ctc_labels(target) for target in targets]
        flat = torch.tensor([c for row in labels for c in row], dtype=torch.long)
        log_probs = self.ctc_log_probs(audio) if log_probs is None else log_probs
        target_lengths = torch.tensor([len(row) for row in labels], dtype=torch.long)
        return nn.functional.ctc_loss(
            log_probs.transpose(0, 1), flat.to(audio.device), lengths.cpu(), target_lengths,
            blank=log_probs.shape[-1] - 1, zero_infinity=True,
        )

    @torch.no_grad()
    def ctc_greedy(self, inputs: torch.Tensor, lengths: torch.Tensor, encoded: bool = True) -> list[str]:
        """The CTC head's own reading (best path: argmax, repeats merged, blanks dropped): a
        diagnostic of what the projector hears before the LLM has its say."""
        return self.ctc_best_paths(*self.audio_embeddings(inputs, lengths, encoded))

    @torch.no_grad()
    def ctc_best_paths(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> list[str]:
        """:meth:`ctc_greedy` on projected audio (:meth:`audio_embeddings`)."""
        best = self.ctc_log_probs(audio).argmax(-1).cpu()
        ids = self.ctc_class_ids()
        texts = []
        for row, n in zip(best, audio_lengths.tolist()):
            path = torch.unique_consecutive(row[:n])
            path = path[path != len(ids)]  # the blank is the last class
            texts.append(self.tokenizer.decode(ids[path].tolist(), skip_special_tokens=True).strip())
        return texts

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
        if self.utterance_norm:
            inputs = normalise_utterances(inputs, lengths)
        return self.projector(self.augment(inputs).to(self.projector_dtype), lengths)

    @property
    def reads_ctc_head(self) -> bool:
        """Whether what the LLM reads depends on the CTC head (see :meth:`llm_audio`)."""
        return self.posterior_inputs or self.blank_skip < 1.0

    def llm_audio(
        self, audio: torch.Tensor, lengths: torch.Tensor, log_probs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the LLM reads of the projected ``audio`` (the CTC head always reads ``audio``;
        ``log_probs``: its reading, when the caller has it already).

        By default the projection itself. With ``posterior_inputs`` each position becomes the
        CTC head's expected embedding, ``softmax(audio @ table.T) @ table`` over [the LLM's token
        embeddings; blank]: from the first joint step the LLM reads what lies near its own
        token embeddings, a soft transcript it can mend (LegoSLM, Ma et al. 2025). With
        ``blank_skip < 1`` the positions the CTC head calls blank with more than that
        probability are dropped (each row keeps at least its least blank one), which shortens
        the LLM's input to about one position per spoken token.
        """
        if not self.reads_ctc_head:
            return audio, lengths
        log_probs = self.ctc_log_probs(audio) if log_probs is None else log_probs
        if self.posterior_inputs:
            audio = (log_probs.exp() @ self.ctc_table()).to(audio.dtype)
        if self.blank_skip >= 1.0:
            return audio, lengths
        blank = log_probs[..., -1].exp()
        valid = torch.arange(audio.shape[1], device=audio.device)[None] < lengths[:, None]
        keep = valid & (blank <= self.blank_skip)
        least_blank = blank.masked_fill(~valid, 2.0).argmin(-1)
        keep[torch.arange(len(keep), device=keep.device), least_blank] = True
        packed = nn.utils.rnn.pad_sequence([row[kept] for row, kept in zip(audio, keep)], batch_first=True)
        return packed, keep.sum(-1).to(lengths.dtype)

    def train(self, mode: bool = True) -> SpeechLLM:
        super().train(mode)
        if self.encoder is not None:
            # Even a fine-tuned encoder stays in eval mode: no dropout or LayerDrop, so its
            # outputs match what the cache stage stores and what decoding computes.
            self.encoder.eval()
        return self

    @property
    def prefix_length(self) -> int:
        """Virtual tokens a prompt-learning adapter (prefix tuning) puts before every row."""
        if isinstance(self.llm, PeftModel) and self.llm.active_peft_config.is_prompt_learning:
            return self.llm.active_peft_config.num_virtual_tokens
        return 0

    def decoder_hidden(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states of the LLM body (no vocabulary projection)."""
        extra = {}
        if n := self.prefix_length:  # prefix tuning: learned keys/values as a past cache
            extra["past_key_values"] = self.llm.get_prompt(embeds.shape[0], max_cache_len=embeds.shape[1] + n)
            mask = torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)
        decoder = self.base_llm.get_decoder()
        return decoder(inputs_embeds=embeds, attention_mask=mask, **extra).last_hidden_state

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def row_prompts(self, instructions: list[str] | None, rows: int) -> list[Prompt] | None:
        """Each row's prompt when rows carry their own instruction (e.g. a biasing list)."""
        if instructions is None:
            return None
        if self.prompt_builder is None:
            raise RuntimeError("per-row instructions need a model built with a prompt_builder")
        if len(instructions) != rows:
            raise ValueError(f"{len(instructions)} instructions for {rows} rows")
        return [self.prompt_builder(text) for text in instructions]

    def assemble(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        targets: list[list[int]] | None = None,
        left_pad: bool = False,
        prompts: list[Prompt] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Build ``inputs_embeds``, ``attention_mask`` and ``labels`` for a batch.

        Each row is prefix + its own audio positions + suffix (+ answer + eos when training);
        rows are padded on the right for training and on the left for generation. ``prompts``
        gives each row its own prefix and suffix; without it every row has ``self.prompt``.
        """
        embed = self.llm.get_input_embeddings()
        device = audio.device
        ids = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
        prefix = embed(ids(self.prompt.prefix_ids))
        suffix = embed(ids(self.prompt.suffix_ids))
        rows, labels = [], []
        for i in range(audio.shape[0]):
            if prompts is not None:
                prefix = embed(ids(prompts[i].prefix_ids))
                suffix = embed(ids(prompts[i].suffix_ids))
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
        instructions: list[str] | None = None,
        ctc_targets: list[list[int]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean cross-entropy over answer tokens, with token accuracy counts.

        ``instructions`` (one per row) replace the fixed instruction in the prompt template;
        ``ctc_targets`` are the CTC term's targets when they are not the answers (the transcript
        of a speech-translation answer).
        """
        audio, audio_lengths = self.audio_embeddings(inputs, lengths, encoded)
        ctc_in_step = self.ctc_blank is not None and self.training and self.ctc_in_step
        # the CTC head's reading, once, when both the loss and the LLM's input need it
        log_probs = self.ctc_log_probs(audio) if ctc_in_step and self.reads_ctc_head else None
        prompts = self.row_prompts(instructions, audio.shape[0])
        llm_audio = self.llm_audio(audio, audio_lengths, log_probs)
        embeds, mask, labels = self.assemble(*llm_audio, targets, prompts=prompts)
        base = self.base_llm
        hidden = self.decoder_hidden(embeds, mask)
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
        if ctc_in_step:
            ctc_targets = targets if ctc_targets is None else ctc_targets
            out["ctc_loss"] = self.ctc_loss(audio, audio_lengths, ctc_targets, log_probs)
        return out

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def transcribe_batch(
        self, batch: dict[str, Any], runtime: RuntimeConfig, decode: DecodeConfig, num_beams: int = 1
    ) -> list[str]:
        """Hypotheses for one batch of :class:`slam.data.cuts.AudioTextDataset`, in its row order,
        searched as ``decode`` says (its CTC settings; the beams are the caller's). A row whose
        CTC best path has at most ``decode.ctc_max_words`` words keeps that reading."""
        device = next(self.projector.parameters()).device
        most = decode.ctc_max_words
        if most > 0 and self.ctc_blank is None:
            raise ConfigError(f"decode.ctc_max_words={most}: the model has no CTC head "
                              "(train.ctc_weight or train.ctc_warmup_steps); set it to 0")  # fmt: skip
        rows = range(len(batch["lengths"]))
        hyps: dict[int, str] = {}
        with autocast(runtime, device):
            # the audio is encoded once, for the CTC readings and for the rows the LLM decodes
            inputs, lengths = batch["inputs"].to(device), batch["lengths"].to(device)
            projected, lengths = self.audio_embeddings(inputs, lengths, batch["encoded"])
            audio = {"inputs": projected, "lengths": lengths, "instructions": batch.get("instructions"),
                     "keywords": batch.get("keywords")}  # fmt: skip
            if most > 0:
                readings = self.ctc_best_paths(audio["inputs"], audio["lengths"])
                hyps = {i: text for i, text in zip(rows, readings) if len(text.split()) <= most}
            by_llm = [i for i in rows if i not in hyps]
            if by_llm:
                part = batch_rows(audio, by_llm) if hyps else audio
                hyps.update(zip(by_llm, self.generate_from_audio(
                    part["inputs"], part["lengths"], num_beams=num_beams,
                    max_new_tokens=decode.max_new_tokens, instructions=part["instructions"],
                    ctc_weight=decode.ctc_weight, ctc_pre_beam=decode.ctc_pre_beam,
                    ctc_spell_unknown=decode.ctc_spell_unknown,
                    keywords=part["keywords"], keyword_bonus=decode.keyword_bonus,
                )))  # fmt: skip
        return [hyps[i] for i in rows]

    @torch.no_grad()
    def generate(
        self, inputs: torch.Tensor, lengths: torch.Tensor, encoded: bool = True, **search: Any
    ) -> list[str]:
        """:meth:`generate_from_audio` on encoder inputs (``encoded``: cached encoder outputs)."""
        return self.generate_from_audio(*self.audio_embeddings(inputs, lengths, encoded), **search)

    @torch.no_grad()
    def generate_from_audio(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        num_beams: int = 1,
        max_new_tokens: int = 64,
        instructions: list[str] | None = None,
        ctc_weight: float = 0.0,
        ctc_pre_beam: int = 8,
        ctc_spell_unknown: bool = False,
        keywords: list[list[str]] | None = None,
        keyword_bonus: float = 0.0,
    ) -> list[str]:
        """Greedy or beam search on projected audio (:meth:`audio_embeddings`); ``ctc_weight > 0``
        adds the CTC head's prefix scores to the LLM's (joint CTC/LLM decoding,
        :mod:`slam.decode.ctc_prefix`); ``keywords`` (a list per row) with ``keyword_bonus > 0``
        rewards writing their words (:mod:`slam.decode.keyword_boost`)."""
        processors = LogitsProcessorList()
        boost = None
        if keywords is not None and keyword_bonus > 0:
            boost = KeywordBoost([word_variants(self.tokenizer, words) for words in keywords],
                                 keyword_bonus, num_beams)  # fmt: skip
        log_probs = self.ctc_log_probs(audio) if ctc_weight > 0 or self.reads_ctc_head else None
        if ctc_weight > 0:
            processors.append(CTCPrefixScorer(
                log_probs.cpu(), audio_lengths.cpu(), self.ctc_class_ids(), self.prompt.eos_id,
                weight=ctc_weight, pre_beam=ctc_pre_beam, num_beams=num_beams,
                extra_candidates=boost.continuations if boost else None,
                spell=self.ctc_spelling() if ctc_spell_unknown else None,
                silent=self.ctc_silent_tokens(),
            ))  # fmt: skip
        if boost:  # after the CTC scorer, whose candidates it adds to
            processors.append(boost)
        prompts = self.row_prompts(instructions, audio.shape[0])
        llm_audio = self.llm_audio(audio, audio_lengths, log_probs)
        embeds, mask, _ = self.assemble(*llm_audio, left_pad=True, prompts=prompts)
        llm, extra = self.llm, {}
        if n := self.prefix_length:
            # peft's own generate cannot take inputs_embeds with prompt learning: hand the base
            # model the learned prefix as a ready cache (one row per beam; beams share it).
            llm = self.base_llm
            extra["past_key_values"] = self.llm.get_prompt(
                embeds.shape[0] * num_beams, max_cache_len=n + embeds.shape[1] + max_new_tokens
            )
            mask = torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)
        out = llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            **extra,
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            logits_processor=processors,
            eos_token_id=self.prompt.eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}


WORD_MARKS = "\u0120\u2581"  # byte-level BPE's and SentencePiece's word-boundary marks ("Ġ", "▁")
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold_piece(piece: str) -> str:
    """A token string without its leading word-boundary mark, ASCII letters lower-cased: the
    tokens that sound the same (" press", "Press") fold alike. ASCII only, as other characters
    of a byte-level token are bytes, not letters."""
    return piece.lstrip(WORD_MARKS).translate(ASCII_LOWER)


def normalise_utterances(x: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``[batch, frames, dim]`` with each row's valid frames at mean 0 and variance 1 per
    channel (statistics in float32 over its own ``lengths`` frames; padding stays 0)."""
    valid = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None])[..., None]
    frames = valid.sum(1, keepdim=True).clamp(min=1)
    xf = x.float().masked_fill(~valid, 0.0)
    mean = xf.sum(1, keepdim=True) / frames
    var = ((xf - mean).masked_fill(~valid, 0.0) ** 2).sum(1, keepdim=True) / frames
    return ((xf - mean) * torch.rsqrt(var + eps)).masked_fill(~valid, 0.0).to(x.dtype)


def build_speech_llm(
    cfg: SlamConfig, encoder_dim: int | None = None, with_encoder: bool = False
) -> SpeechLLM:
    """A fresh model for training: encoder (optional), new projector, LLM + adapter.

    What trains follows the config (``slam.model.tuning``); an encoder that trains is always built.
    """
    with_encoder = with_encoder or encoder_trains(cfg)
    encoder = build_encoder(cfg.encoder) if with_encoder else None
    if encoder is not None:
        unfreeze_encoder(encoder, cfg)
        encoder_dim = encoder.dim
    if encoder_dim is None:
        raise ValueError("encoder_dim is needed when the encoder is not built")
    loaded = build_llm(cfg.llm)
    llm_dim = loaded.model.get_input_embeddings().embedding_dim
    projector = build_projector(cfg.projector, encoder_dim, llm_dim)
    llm = apply_llm_tuning(loaded.model, cfg.peft)
    builder = partial(
        build_prompt, loaded.tokenizer,
        use_chat_template=loaded.use_chat_template, system_prompt=cfg.train.system_prompt,
    )  # fmt: skip
    instruction = builder(recipe_of(cfg).default_instruction(cfg))
    model = SpeechLLM(projector, llm, loaded.tokenizer, instruction, encoder, builder)
    model.config = cfg
    model.augment = EncoderOutputMasking(cfg.train)
    model.ctc_skip_punctuation = cfg.train.ctc_skip_punctuation
    if cfg.train.ctc_weight > 0 or cfg.train.ctc_warmup_steps > 0:
        model.enable_ctc()
        model.ctc_in_step = cfg.train.ctc_weight > 0
    model.posterior_inputs, model.blank_skip = cfg.projector.posterior_inputs, cfg.projector.blank_skip
    model.utterance_norm = cfg.projector.utterance_norm
    if model.reads_ctc_head and model.ctc_blank is None:
        raise ConfigError("projector.posterior_inputs and projector.blank_skip read the CTC head: "
                          "set train.ctc_weight or train.ctc_warmup_steps above 0")
    return model


def save_assets(model: SpeechLLM, directory: Path, info: dict) -> None:
    """Trained parameters only, the Hugging Face way: projector (safetensors + config), the
    PEFT adapter dir, a fully tuned LLM as a model dir, fine-tuned encoder parameters."""
    directory.mkdir(parents=True, exist_ok=True)
    save_projector(model.projector, directory)
    if isinstance(model.llm, PeftModel):
        model.llm.save_pretrained(str(directory / ADAPTER_DIR))
    elif any(p.requires_grad for p in model.llm.parameters()):
        model.llm.save_pretrained(str(directory / FULL_LLM_DIR))
        model.tokenizer.save_pretrained(str(directory / FULL_LLM_DIR))
    if model.encoder is not None:
        tuned = {n: p.detach().contiguous() for n, p in model.encoder.named_parameters() if p.requires_grad}
        if tuned:
            save_file(tuned, str(directory / ENCODER_WEIGHTS))
    if model.ctc_blank is not None:  # joint CTC/LLM decoding and the CTC-greedy diagnostic need it
        save_file({"blank": model.ctc_blank.detach().float().contiguous(),
                   "classes": model.ctc_class_ids().contiguous()}, str(directory / CTC_HEAD))
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
    full_llm = directory / FULL_LLM_DIR
    if full_llm.exists():
        tuned = AutoModelForCausalLM.from_pretrained(str(full_llm), dtype="float32")
        model.llm.load_state_dict(tuned.state_dict())
    ctc_head = directory / CTC_HEAD
    if ctc_head.exists():
        head = load_file(str(ctc_head))
        if model.ctc_blank is None:
            model.enable_ctc()
        model.ctc_blank.data.copy_(head["blank"])
        model.restrict_ctc(head["classes"].tolist())
    encoder_weights = directory / ENCODER_WEIGHTS
    if encoder_weights.exists():
        if model.encoder is None:
            raise ValueError(f"{encoder_weights} holds encoder weights but the model has no encoder")
        result = model.encoder.load_state_dict(load_file(str(encoder_weights)), strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{encoder_weights}: unknown parameters {result.unexpected_keys[:5]}")
    return model


# what a model directory's weights are: the files the digest of an initialisation covers
WEIGHT_SUFFIXES = (".safetensors",)
# the config sections that shape the parameters a directory holds (init_from must match them)
SHAPING_SECTIONS = ("encoder", "projector", "llm", "peft")


def assets_digest(directory: Path) -> str:
    """A digest of the weight files of a model directory (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@cache
def trained_model_dir(path: str) -> Path:
    """A trained model directory by its path: in the workspace or, when a run of another profile
    has replaced it there (``dvc exp run`` checks out the train stage's new outputs), as the
    committed ``dvc.lock`` has it in the DVC cache (copied into a temporary directory)."""
    directory = Path(path)
    if (directory / ASSETS_INFO).exists():
        return directory
    from dvc.api import DVCFileSystem  # only here: most runs never need it

    try:
        fs = DVCFileSystem(".", rev="HEAD")
        if fs.exists(f"{path}/{ASSETS_INFO}"):
            copy = Path(tempfile.mkdtemp(prefix="slam-init-")) / directory.name
            atexit.register(shutil.rmtree, copy.parent, ignore_errors=True)
            fs.get(path, str(copy), recursive=True)
            log.info("train.init_from: %s from the DVC cache (the committed dvc.lock's)", path)
            return copy
    except Exception as exc:  # not a DVC repository, not in the cache: say what was looked for
        log.warning("train.init_from: %s not found in DVC either (%s)", path, exc)
    raise ConfigError(f"train.init_from: {path} is not a trained model directory (no {ASSETS_INFO}), "
                      "in the workspace or as an output of the committed dvc.lock; train the run it "
                      "names first (the default recipe: dvc repro)")  # fmt: skip


def init_from_trained(model: SpeechLLM, cfg: SlamConfig) -> str:
    """Load ``train.init_from``'s trained weights into ``model``; their digest. The directory's
    encoder, projector, LLM and PEFT settings must be ``cfg``'s (else the weights would not fit,
    or would fit and mean something else)."""
    directory = trained_model_dir(cfg.train.init_from)
    trained = trained_config(directory)
    ours, theirs = as_dict(cfg), as_dict(trained)
    differ = {f"{section}.{k}": theirs[section].get(k) for section in SHAPING_SECTIONS
              for k in ours[section] if ours[section][k] != theirs[section].get(k)}  # fmt: skip
    if differ:
        raise ConfigError(f"train.init_from: {directory} was trained with other {', '.join(differ)} "
                          f"({', '.join(f'{k}={v!r}' for k, v in differ.items())})")  # fmt: skip
    load_assets(model, directory)
    return assets_digest(directory)


class UntrustedModelError(ValueError):
    """A handed-over model asks to run its own Python and the user has not opted in."""


def trained_config(assets: Path, trust_remote_code: bool = False) -> SlamConfig:
    """The config stored with a trained model. It is data from whoever made the directory, so
    it may not turn on a code-loading switch (``trust_remote_code``) unless the user says so."""
    info = json.loads((assets / ASSETS_INFO).read_text())
    if "config" not in info:
        raise ValueError(f"{assets / ASSETS_INFO} has no config: retrain with this version of slam")
    cfg = to_config(info["config"])
    switches = code_loading_switches(cfg)
    if switches and not trust_remote_code:
        raise UntrustedModelError(
            f"{assets / ASSETS_INFO} sets {' and '.join(f'{k}=true' for k in switches)}, which runs Python "
            "that comes with the model; if you trust its source, opt in with --trust-remote-code "
            "(trust_remote_code=True)"
        )
    if not Path(cfg.llm.path).exists() and (assets / cfg.llm.path).exists():
        cfg.llm.path = str(assets / cfg.llm.path)  # an export keeps its LLM inside the dir
    return cfg
