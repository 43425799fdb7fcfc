"""The measurements, each on the real slam code paths.

Every function takes an :class:`~benchmarks.env.Env` and returns a section: ``ratios`` (the
headline figures, each a ratio of two measurements taken in the same run, so that the load of
a shared machine cancels out as far as possible) and ``raw`` (the numbers behind them).
Where two settings are compared they are interleaved item by item (step by step, clip by
clip) rather than run one after the other, for the same reason.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from torch import nn

from benchmarks.env import Env, cached_set, cached_subset, peak_rss_mb, reset_peak, rss_mb, spread
from slam.data.cache import INFO, cache_dim
from slam.data.cuts import ENCODER_OUT, AudioTextDataset, batches_of, cut_text, load_cuts
from slam.model.encoders import build_encoder
from slam.model.speech_llm import IGNORE_INDEX, SpeechLLM, build_speech_llm, load_assets
from slam.score.metrics.wer import score_wer
from slam.train.loop import Batches, make_optimizer, warmup_loss
from slam.utils import autocast, seed_everything

DEVICE = torch.device("cpu")
# Measured however late it gets; past these, loops stop at the Env's deadline.
MIN_STEPS, MIN_CLIPS, MIN_SINGLES = 2, 5, 4
Section = dict[str, Any]


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "n": len(xs)}


# -- models and batches, as slam.train.loop / slam.decode.stage make them --------------------------------
def training_model(env: Env, with_encoder: bool) -> SpeechLLM:
    """What slam.train.loop builds: with the encoder for in-step encoding, else for cached inputs."""
    seed_everything(env.cfg.train.seed)
    if with_encoder:
        model = build_speech_llm(env.cfg, with_encoder=True)
    else:
        model = build_speech_llm(env.cfg, encoder_dim=encoder_dim(env))
    if model.ctc_blank is not None:  # slam.train.loop's CTC classes: the training transcripts' tokens
        train_cuts = load_cuts(env.cfg.corpus.dir, "train")
        counts = AudioTextDataset(model.tokenizer).token_counts(train_cuts)
        model.restrict_ctc(counts, env.cfg.train.ctc_min_count)
    return model.to(DEVICE).train()


def encoder_dim(env: Env) -> int:
    if (Path(env.cfg.cache.dir) / INFO).exists():
        return cache_dim(env.cfg)
    return build_encoder(env.cfg.encoder).dim


def decoding_model(env: Env) -> tuple[SpeechLLM, bool]:
    """What slam.decode.stage builds over cached inputs, with the trained assets when there are any."""
    model = build_speech_llm(env.cfg, encoder_dim=encoder_dim(env))
    trained = False
    if env.assets:
        try:
            load_assets(model, Path(env.assets))
            trained = True
        except Exception as exc:  # an incompatible assets dir must not stop the benchmarks
            env.notes.append(f"could not load {env.assets} ({exc}): decoding with an untrained model")
    return model.to(DEVICE).eval(), trained


def train_batches(env: Env, n: int) -> list[tuple[CutSet, CutSet]]:
    """The first ``n`` batches of an epoch of slam.train.loop's sampler: (raw cuts, cached cuts)."""
    raw = load_cuts(env.cfg.corpus.dir, "train")
    sampler = Batches(raw, None, env.cfg).sampler  # type: ignore[arg-type]  # only its sampler
    picked: list[CutSet] = []
    for epoch in itertools.count():  # a tiny corpus may need more than one epoch
        sampler.set_epoch(epoch)
        got = list(itertools.islice(sampler, n - len(picked)))
        picked += got
        if len(picked) >= n or not got:
            break
    ids = list(dict.fromkeys(c.id for cuts in picked for c in cuts))
    by_id = {c.id: c for c in cached_subset(env, "train", ids)}
    return [(cuts, CutSet.from_cuts(by_id[c.id] for c in cuts)) for cuts in picked]


def train_step(model: SpeechLLM, batch: dict[str, Any], optimizer: torch.optim.Optimizer, env: Env,
               encoded: bool) -> None:
    """One optimiser step exactly as slam.train.loop._loop takes it (autocast, CTC term, clipping)."""
    tc = env.cfg.train
    with autocast(env.cfg.runtime, DEVICE):
        out = model(batch["inputs"].to(DEVICE), batch["lengths"].to(DEVICE), batch["targets"],
                    encoded=encoded)
    objective = out["loss"]
    if "ctc_loss" in out:
        objective = objective + tc.ctc_weight * out["ctc_loss"]
    (objective / tc.grad_accum).backward()
    torch.nn.utils.clip_grad_norm_(model.trainable_state().values(), tc.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed_step(model: SpeechLLM, dataset: AudioTextDataset, cuts: CutSet, optimizer: torch.optim.Optimizer,
               env: Env) -> tuple[float, float]:
    """(data seconds, compute seconds) of one step; data is the dataset's batch building."""
    t0 = time.perf_counter()
    batch = dataset[cuts]
    t1 = time.perf_counter()
    train_step(model, batch, optimizer, env, encoded=dataset.encoder is None)
    return t1 - t0, time.perf_counter() - t1


# -- 1 + 4: training step with / without the encoder cache, and its FLOP utilisation -----------
def matmul_peak(n: int, reps: int, dtype: torch.dtype) -> dict[str, float]:
    """GFLOP/s of an n x n x n torch.matmul: the practical peak the training step is held to."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    flops = 2 * n**3
    return {"n": n, "gflops_best": flops / min(times) / 1e9,
            "gflops_median": flops / statistics.median(times) / 1e9}


@torch.no_grad()
def step_shapes(model: SpeechLLM, batch: dict[str, Any]) -> dict[str, int]:
    """Shapes the LLM sees for a cached batch: rows, padded width, audio positions, labels."""
    audio, audio_lengths = model.audio_embeddings(batch["inputs"], batch["lengths"], encoded=True)
    embeds, mask, labels = model.assemble(audio, audio_lengths, batch["targets"])
    return {"rows": embeds.shape[0], "width": embeds.shape[1], "audio_positions": audio.shape[1],
            "real_tokens": int(mask.sum()), "labels": int((labels[:, 1:] != IGNORE_INDEX).sum())}


def linear_params(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


FLOP_FORMULA = (
    "2 x [2 N_body B W + 4 L H d_head B W^2 + 2 d V labels + 2 d (V+1) B P] + 3 x 2 N_proj B P, with N_body "
    "the LLM's linear weights (LoRA included), B rows, W padded LLM width, L layers, H heads, V vocabulary, "
    "d width, "
    "P audio positions, N_proj the projector's weights: frozen LLM weights need only activation gradients "
    "(backward ~ forward), the projector trains (backward ~ 2x forward)"
)


def step_flops(model: SpeechLLM, shapes: dict[str, int]) -> dict[str, float]:
    """FLOPs of one training step on cached inputs (multiply-add = 2 FLOPs).

    forward:  body   2 * N_body * B * W          (every LLM linear, over all padded positions)
              attn   4 * L * H * d_head * B * W^2 (QK^T and AV, the mask does not skip work)
              head   2 * d * V * labels           (slam projects only the labelled positions)
              ctc    2 * d * (V + 1) * B * P      (CTC logits of the audio positions)
              proj   2 * N_proj * B * P
    step = 2 * (body + attn + head + ctc) + 3 * proj: the LLM weights are frozen, so backward
    needs only the activation gradients (~1x forward; LoRA's own weight gradients are
    negligible at r=16), while the projector trains (backward ~2x forward).
    """
    base = model.base_llm
    config = base.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    vocab, dim = base.get_output_embeddings().weight.shape
    ctc_classes = vocab if model.ctc_classes is None else len(model.ctc_classes)
    b, w, p = shapes["rows"], shapes["width"], shapes["audio_positions"]
    parts = {
        "body": 2 * linear_params(base.get_decoder()) * b * w,
        "attn": 4 * config.num_hidden_layers * heads * head_dim * b * w * w,
        "head": 2 * dim * vocab * shapes["labels"],
        "ctc": 2 * dim * (ctc_classes + 1) * b * p if model.ctc_blank is not None else 0,
        "proj": 2 * linear_params(model.projector) * b * p,
    }
    parts["step"] = 2 * (parts["body"] + parts["attn"] + parts["head"] + parts["ctc"]) + 3 * parts["proj"]
    return {k: float(v) for k, v in parts.items()}


def counted_flops(model: SpeechLLM, batch: dict[str, Any], optimizer: torch.optim.Optimizer,
                  env: Env) -> float:
    """torch's FlopCounterMode over one real step: a check on the formula (it counts matmuls,
    convolutions and attention kernels it knows, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(model, batch, optimizer, env, encoded=True)
    return float(counter.get_total_flops())


def bench_training(env: Env) -> dict[str, Section]:
    """Sections ``cache_vs_instep`` and ``mfu``: one model (with its encoder) takes the same
    batches from the cache and from audio, alternating which goes first."""
    sizes = env.sizes
    peak_before = {"bf16": matmul_peak(sizes.matmul_n, sizes.matmul_reps, torch.bfloat16),
                   "fp32": matmul_peak(sizes.matmul_n, sizes.matmul_reps, torch.float32)}
    model = training_model(env, with_encoder=True)
    optimizer = make_optimizer(model, env.cfg)
    cached_ds = AudioTextDataset(model.tokenizer, None)
    instep_ds = AudioTextDataset(model.tokenizer, model.encoder)
    pairs = train_batches(env, sizes.train_warmup + sizes.train_steps)
    for raw, cached in pairs[: sizes.train_warmup]:
        timed_step(model, cached_ds, cached, optimizer, env)
        timed_step(model, instep_ds, raw, optimizer, env)
    # Per batch and mode, the best of ``train_reps`` runs: another job on a shared machine
    # only ever adds time, so the minimum is the least disturbed figure.
    best: dict[str, list[tuple[float, float]]] = {"cached": [], "in_step": []}
    measured = []
    for i, (raw, cached) in enumerate(pairs[sizes.train_warmup:]):
        if i >= MIN_STEPS and env.out_of_time():
            break
        measured.append((raw, cached))
        runs = {"cached": [], "in_step": []}
        for rep in range(sizes.train_reps):
            order = [("cached", cached_ds, cached), ("in_step", instep_ds, raw)]
            for mode, ds, cuts in order if (i + rep) % 2 == 0 else order[::-1]:
                runs[mode].append(timed_step(model, ds, cuts, optimizer, env))
        for mode, got in runs.items():
            best[mode].append(min(got, key=sum))
    peak_after = {"bf16": matmul_peak(sizes.matmul_n, sizes.matmul_reps, torch.bfloat16),
                  "fp32": matmul_peak(sizes.matmul_n, sizes.matmul_reps, torch.float32)}

    utts = sum(len(c) for _, c in measured)
    audio = sum(cut.duration for _, cuts in measured for cut in cuts)
    total = {m: [d + c for d, c in t] for m, t in best.items()}
    paired = [a / b for a, b in zip(total["in_step"], total["cached"])]
    n_batches = sum(1 for _ in _epoch(env))
    modes = {}
    for mode, t in best.items():
        modes[mode] = {"step_s": _stats(total[mode]), "data_s": _stats([d for d, _ in t]),
                       "compute_s": _stats([c for _, c in t]),
                       "utt_per_s": utts / sum(total[mode]), "audio_s_per_s": audio / sum(total[mode]),
                       "epoch_minutes_projected": n_batches * statistics.fmean(total[mode]) / 60}
    cache_section = {
        "ratios": {
            "in_step_over_cached_step_time": statistics.median(paired),  # per batch, then median
            "in_step_over_cached_epoch_time": sum(total["in_step"]) / sum(total["cached"]),
        },
        "raw": {"modes": modes, "steps_per_mode": len(measured), "steps_planned": sizes.train_steps,
                "reps_per_step": sizes.train_reps, "paired_ratios": paired,
                "warmup_steps": sizes.train_warmup,
                "batch_sizes": [len(c) for _, c in measured],
                "batch_audio_s": [round(sum(x.duration for x in c), 2) for _, c in measured],
                "batches_per_epoch": n_batches, "precision": env.cfg.runtime.precision,
                "ctc_weight": env.cfg.train.ctc_weight},
    }

    # FLOPs of the cached steps (shapes only; no timing), and one counted step as a check.
    per_step = []
    for _, cached in measured:
        batch = cached_ds[cached]
        per_step.append(step_flops(model, step_shapes(model, batch)))
    first = cached_ds[measured[0][1]]
    counted = counted_flops(model, first, optimizer, env)
    flops = statistics.fmean(p["step"] for p in per_step)
    compute = statistics.fmean(c for _, c in best["cached"])
    achieved = flops / compute / 1e9
    peak = {k: max(peak_before[k]["gflops_best"], peak_after[k]["gflops_best"]) for k in peak_before}
    mfu_section = {
        "ratios": {"mfu_vs_bf16_matmul_peak": achieved / peak["bf16"],
                   "mfu_vs_fp32_matmul_peak": achieved / peak["fp32"],
                   "bf16_over_fp32_matmul_peak": peak["bf16"] / peak["fp32"]},
        "raw": {"achieved_gflops": achieved, "step_gflop_formula": flops / 1e9,
                "step_gflop_counted_first_batch": counted / 1e9,
                "formula_over_counted_first_batch": per_step[0]["step"] / counted if counted else None,
                "parts_gflop_mean": {k: statistics.fmean(p[k] for p in per_step) / 1e9 for k in per_step[0]},
                "cached_compute_s_mean": compute,
                "matmul_peak_before": peak_before, "matmul_peak_after": peak_after,
                "formula": FLOP_FORMULA},
    }
    return {"cache_vs_instep": cache_section, "mfu": mfu_section}


def _epoch(env: Env) -> list[CutSet]:
    raw = load_cuts(env.cfg.corpus.dir, "train")
    sampler = Batches(raw, None, env.cfg).sampler  # type: ignore[arg-type]
    sampler.set_epoch(0)
    return list(sampler)


# -- 2: Whisper on true lengths vs padded to 30 s ----------------------------------------------
@torch.no_grad()
def bench_whisper(env: Env) -> dict[str, Section]:
    """slam's WhisperEncoder (true length) vs transformers' WhisperEncoder (30 s), per clip at
    batch 1 as the cache stage runs it; Whisper's own greedy decoder on both outputs."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.modeling_outputs import BaseModelOutput

    cfg = env.cfg
    whisper = WhisperForConditionalGeneration.from_pretrained(cfg.encoder.path).eval()
    processor = WhisperProcessor.from_pretrained(cfg.encoder.path)
    extractor = processor.feature_extractor
    rate = extractor.sampling_rate
    encoder = build_encoder(cfg.encoder)
    multilingual = bool(getattr(whisper.generation_config, "is_multilingual", False))
    gen = {"num_beams": 1, "max_new_tokens": cfg.baseline.max_new_tokens,
           **({"language": "en", "task": "transcribe"} if multilingual else {})}
    cuts = list(spread(load_cuts(cfg.corpus.dir, env.real_set), env.sizes.whisper_clips + 1))

    def text(ids: torch.Tensor) -> str:
        return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    t: dict[str, list[float]] = {k: [] for k in ("feat_pad", "enc_pad", "dec_pad", "feat_true", "enc_true",
                                                 "dec_true")}
    cos, rel, hyps_pad, hyps_true, true_out = [], [], {}, {}, {}
    for i, cut in enumerate(cuts):
        if i > MIN_CLIPS and env.out_of_time():
            cuts = cuts[:i]
            break
        audio = np.ascontiguousarray(cut.resample(rate).load_audio()[0], dtype=np.float32)
        clock = [time.perf_counter()]
        feats_pad = extractor(audio, sampling_rate=rate, return_tensors="pt").input_features
        clock.append(time.perf_counter())
        hidden_pad = whisper.model.encoder(feats_pad).last_hidden_state
        clock.append(time.perf_counter())
        ids_pad = whisper.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden_pad), **gen)
        clock.append(time.perf_counter())
        feats = encoder.extract(audio)
        clock.append(time.perf_counter())
        hidden, lengths = encoder(feats[None], torch.tensor([feats.shape[0]]))
        clock.append(time.perf_counter())
        ids_true = whisper.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), **gen)
        clock.append(time.perf_counter())
        if i == 0:
            continue  # warm-up clip
        for key, a, b in zip(t, clock, clock[1:]):
            t[key].append(b - a)
        n = int(lengths[0])
        a, b = hidden[0, :n], hidden_pad[0, :n]
        cos.append(float(nn.functional.cosine_similarity(a, b, dim=-1).mean()))
        rel.append(float((a - b).norm() / b.norm()))
        hyps_pad[cut.id], hyps_true[cut.id] = text(ids_pad), text(ids_true)
        true_out[cut.id] = a
    refs = {c.id: cut_text(c) for c in cuts[1:]}
    wer_pad = score_wer(refs, hyps_pad, cfg.score.normalizer)["summary"]
    wer_true = score_wer(refs, hyps_true, cfg.score.normalizer)["summary"]
    mean = {k: statistics.fmean(v) for k, v in t.items()}
    raw = {
        "set": env.real_set, "clips": len(refs),
        "mean_duration_s": statistics.fmean(c.duration for c in cuts[1:]),
        "ms_per_utt": {k: 1000 * v for k, v in mean.items()},
        "agreement_on_true_length_prefix": {"cosine_mean": statistics.fmean(cos), "cosine_min": min(cos),
                                            "rel_l2_mean": statistics.fmean(rel), "rel_l2_max": max(rel)},
        "whisper_decoder_wer": {"padded_30s": wer_pad["wer"], "true_length": wer_true["wer"],
                                "difference_points": 100 * (wer_true["wer"] - wer_pad["wer"]),
                                # without insertions: are the words right, even if the decoder runs on?
                                "sub_del_rate_padded_30s": _sub_del(wer_pad), "sub_del_rate_true_length":
                                _sub_del(wer_true), "insertions_padded_30s": wer_pad["insertions"],
                                "insertions_true_length": wer_true["insertions"],
                                "ref_words": wer_pad["ref_words"],
                                "identical_hyps": sum(hyps_pad[k] == hyps_true[k] for k in refs) / len(refs)},
        "cache_agreement": cache_agreement(env, true_out),
    }
    return {"whisper_true_length": {
        # medians of per-clip ratios: both ways ran back to back on each clip
        "ratios": {"encoder_time_padded_over_true": _paired(t["enc_pad"], t["enc_true"]),
                   "transcribe_time_padded_over_true": _paired(
                       [a + b + c for a, b, c in zip(t["feat_pad"], t["enc_pad"], t["dec_pad"])],
                       [a + b + c for a, b, c in zip(t["feat_true"], t["enc_true"], t["dec_true"])]),
                   "decoder_time_padded_over_true": _paired(t["dec_pad"], t["dec_true"])},
        "raw": raw}}


def _paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _sub_del(summary: dict[str, Any]) -> float:
    return (summary["substitutions"] + summary["deletions"]) / max(summary["ref_words"], 1)


def cache_agreement(env: Env, outputs: dict[str, torch.Tensor], n: int = 3) -> dict[str, Any]:
    """Do the stored cache arrays match what slam's encoder computes now (fp16 storage)?"""
    if not (Path(env.cfg.cache.dir) / INFO).exists():
        return {"checked": 0, "note": "no cache"}
    ids = list(outputs)[:n]
    try:
        cached = {c.id: c for c in cached_set(env, env.real_set) if c.id in set(ids)}
    except (FileNotFoundError, ValueError) as exc:
        return {"checked": 0, "note": str(exc)}
    errs = []
    for cut_id in ids:
        if cut_id in cached:
            stored = torch.from_numpy(cached[cut_id].load_custom(ENCODER_OUT)).float()
            fresh = outputs[cut_id]
            if stored.shape != fresh.shape:
                errs.append(float("inf"))
                continue
            errs.append(float((stored - fresh).norm() / fresh.norm()))
    return {"checked": len(errs), "rel_l2_max": max(errs) if errs else None}


# -- 3: padding with dynamic bucketing vs fixed-size random batches ----------------------------
def bench_padding(env: Env) -> dict[str, Section]:
    """One epoch of slam.train.loop's DynamicBucketingSampler vs SimpleCutSampler batches of the same
    mean size, shuffled: padded share of encoder frames and of LLM positions."""
    from transformers import AutoTokenizer

    from slam.model.projectors import build_projector
    from slam.model.speech_llm import build_prompt

    cfg = env.cfg
    try:
        cuts = cached_set(env, "train")
        frames = {c.id: int(c.custom[ENCODER_OUT].array.shape[0]) for c in cuts}
        source = "cached encoder output lengths"
    except (FileNotFoundError, ValueError):
        cuts = load_cuts(cfg.corpus.dir, "train")
        frames = {c.id: max(1, round(c.duration * 50)) for c in cuts}
        source = "duration x 50 Hz (no cache)"
    tokenizer = AutoTokenizer.from_pretrained(cfg.llm.path)
    use_chat = cfg.llm.chat_template and tokenizer.chat_template is not None
    prompt = build_prompt(tokenizer, cfg.train.prompt, use_chat, cfg.train.system_prompt)
    projector = build_projector(cfg.projector, 8, 8)  # only its output_lengths
    ids = list(frames)
    positions = projector.output_lengths(torch.tensor([frames[i] for i in ids])).tolist()
    answers = tokenizer([cut_text(c) for c in cuts], add_special_tokens=False).input_ids
    prompt_len = len(prompt.prefix_ids) + len(prompt.suffix_ids) + 1  # + eos
    # an LLM row: prefix + audio positions + suffix + answer + eos (SpeechLLM.assemble)
    row = {i: prompt_len + p + len(a) for i, p, a in zip(ids, positions, answers)}

    def measure(batches: list[CutSet]) -> dict[str, float]:
        out = {"batches": len(batches), "mean_batch_size": statistics.fmean(len(b) for b in batches)}
        for name, length in (("encoder_frames", frames), ("llm_positions", row)):
            true = padded = 0
            for b in batches:
                lens = [length[c.id] for c in b]
                true += sum(lens)
                padded += max(lens) * len(lens)
            out[f"{name}_padding"] = 1 - true / padded
            out[f"{name}_computed"] = padded
        return out

    bucketing = measure(_epoch(env))
    size = max(1, round(bucketing["mean_batch_size"]))
    sampler = SimpleCutSampler(cuts, max_cuts=size, shuffle=True, seed=cfg.train.seed, drop_last=False)
    sampler.set_epoch(0)
    random = measure(list(sampler))
    return {"padding": {
        "ratios": {
            "random_over_bucketing_padded_frames":
                random["encoder_frames_computed"] / bucketing["encoder_frames_computed"],
            "random_over_bucketing_llm_positions":
                random["llm_positions_computed"] / bucketing["llm_positions_computed"],
        },
        "raw": {"bucketing": bucketing, "random_fixed_size": random, "cuts": len(ids), "frames_from": source,
                "max_duration": cfg.train.max_duration, "num_buckets": cfg.train.num_buckets},
    }}


# -- 5: decoding real-time factor --------------------------------------------------------------
def decode_batch_cuts(env: Env) -> CutSet:
    """One decoding batch: ``decode_batch`` cached test cuts spread over the set, in the
    order slam.decode.stage batches them (longest first)."""
    subset = spread(load_cuts(env.cfg.corpus.dir, "test"), env.sizes.decode_batch)
    cuts = cached_subset(env, "test", [c.id for c in subset])
    return next(iter(batches_of(cuts, len(cuts))))


def bench_decode(env: Env) -> dict[str, Section]:
    """slam.decode.stage's transcribe on cached test cuts: one batch of 16 decoded whole, then its
    utterances one at a time (greedy and beam 4 alternating) until the time budget is spent."""
    cfg = env.cfg
    model, trained = decoding_model(env)
    transcribe = _transcriber(env, model, AudioTextDataset(model.tokenizer, None))
    batch = decode_batch_cuts(env)
    ordered = list(batch)
    transcribe(CutSet.from_cuts(ordered[-1:]), 1)  # warm-up
    seconds: dict[tuple[str, int], float] = {}
    hyps: dict[tuple[str, int], dict[str, str]] = {}
    for beams in (1, 4):
        start = time.perf_counter()
        texts = transcribe(batch, beams)
        seconds[("batched", beams)] = time.perf_counter() - start
        hyps[("batched", beams)] = {c.id: h for c, h in zip(ordered, texts)}
    # joint CTC/LLM decoding (slam.decode.ctc_prefix) on the same batch: the recipe's weight, or 0.5
    joint_weight = cfg.decode.ctc_weight or 0.5
    if model.ctc_blank is not None:
        joint = _transcriber(env, model, AudioTextDataset(model.tokenizer, None), joint_weight)
        for beams in (1, 4):
            start = time.perf_counter()
            texts = joint(batch, beams)
            seconds[("joint", beams)] = time.perf_counter() - start
            hyps[("joint", beams)] = {c.id: h for c, h in zip(ordered, texts)}
    # alternately the longest and the shortest left, so that a cut-short run still spans lengths
    spread_order = [ordered[i // 2] if i % 2 == 0 else ordered[-1 - i // 2] for i in range(len(ordered))]
    singles = []
    for j, cut in enumerate(spread_order):
        if j >= MIN_SINGLES and env.out_of_time():
            break
        singles.append(cut)
        for beams in (1, 4):
            start = time.perf_counter()
            text = transcribe(CutSet.from_cuts([cut]), beams)[0]
            seconds[("single", beams)] = seconds.get(("single", beams), 0.0) + time.perf_counter() - start
            hyps.setdefault(("single", beams), {})[cut.id] = text
    audio = {"batched": sum(c.duration for c in ordered), "single": sum(c.duration for c in singles)}
    audio["joint"] = audio["batched"]
    rtf = {f"{m}_beam{b}": sec / audio[m] for (m, b), sec in seconds.items()}
    refs = {c.id: cut_text(c) for c in ordered}
    single_refs = {c.id: refs[c.id] for c in singles}
    wer = {f"{m}_beam{b}": score_wer(single_refs if m == "single" else refs, h,
                                     cfg.score.normalizer)["summary"]["wer"] for (m, b), h in hyps.items()}
    raw = {"trained_model": trained, "batch_size": len(ordered), "single_utterances": len(singles),
           "audio_s": audio, "max_new_tokens": cfg.decode.max_new_tokens, "rtf": rtf,
           "seconds": {f"{m}_beam{b}": sec for (m, b), sec in seconds.items()}, "wer": wer,
           "batched_equals_single": {f"beam{b}": statistics.fmean(
               hyps[("batched", b)][c.id] == hyps[("single", b)][c.id] for c in singles) for b in (1, 4)},
           "mean_hyp_words": statistics.fmean(len(h.split()) for h in hyps[("batched", 1)].values()),
           "joint_ctc_weight": joint_weight if ("joint", 1) in seconds else None}
    ratios = {"single_over_batched_greedy": rtf["single_beam1"] / rtf["batched_beam1"],
              "single_over_batched_beam4": rtf["single_beam4"] / rtf["batched_beam4"],
              "beam4_over_greedy_batched": rtf["batched_beam4"] / rtf["batched_beam1"]}
    if ("joint", 1) in seconds:
        ratios["joint_greedy_over_greedy"] = rtf["joint_beam1"] / rtf["batched_beam1"]
        ratios["joint_beam4_over_greedy"] = rtf["joint_beam4"] / rtf["batched_beam1"]
    return {"decode_rtf": {"ratios": ratios, "raw": raw}}


def _transcriber(
    env: Env, model: SpeechLLM, dataset: AudioTextDataset, ctc_weight: float = 0.0
) -> Callable[[CutSet, int], list[str]]:
    """slam.decode.stage.decode's transcribe, over cached inputs (``ctc_weight``: joint CTC/LLM)."""

    decode = dataclasses.replace(env.cfg.decode, ctc_weight=ctc_weight)

    def transcribe(cuts: CutSet, beams: int) -> list[str]:
        return model.transcribe_batch(dataset[cuts], env.cfg.runtime, decode, beams)

    return transcribe


# -- hot paths, before and after ----------------------------------------------------------------
def bench_hot_paths(env: Env) -> dict[str, Section]:
    """Sections ``ctc_classes``: the same cached training steps with the CTC loss over the whole
    vocabulary (before) and over the training transcripts' tokens (after: slam.train.loop), alternating;
    ``ctc_warmup``: seconds of compute per second of audio, a warm-up step (projector + CTC, no
    LLM) against a joint step, both on slam.train.loop's batches."""
    sizes, tc = env.sizes, env.cfg.train
    model = training_model(env, with_encoder=False)
    if model.ctc_blank is None:
        return {}
    optimizer = make_optimizer(model, env.cfg)
    dataset = AudioTextDataset(model.tokenizer, None)
    restricted = model.ctc_classes
    pairs = train_batches(env, sizes.train_warmup + sizes.train_steps)
    modes = {"full_vocab": None, "training_tokens": restricted}
    best: dict[str, list[float]] = {m: [] for m in modes}
    for i, (_, cached) in enumerate(pairs):
        if i > sizes.train_warmup + 1 and env.out_of_time():
            break
        runs: dict[str, list[float]] = {m: [] for m in modes}
        for rep in range(sizes.train_reps):
            order = list(modes.items()) if (i + rep) % 2 == 0 else list(modes.items())[::-1]
            for mode, classes in order:
                model.ctc_classes = classes
                runs[mode].append(sum(timed_step(model, dataset, cached, optimizer, env)))
        if i >= sizes.train_warmup:
            for mode, got in runs.items():
                best[mode].append(min(got))
    model.ctc_classes = restricted
    paired = [a / b for a, b in zip(best["full_vocab"], best["training_tokens"])]
    vocab = model.llm.get_input_embeddings().num_embeddings
    ctc_section = {
        "ratios": {"full_over_training_tokens_step_time": statistics.median(paired)},
        "raw": {"step_s": {m: _stats(t) for m, t in best.items()}, "paired_ratios": paired,
                "classes": {"full_vocab": vocab + 1, "training_tokens": len(restricted) + 1}},
    }

    # warm-up steps as slam.train.loop.ctc_warmup takes them (its batch size), then joint steps
    warm_sampler = DynamicBucketingSampler(load_cuts(env.cfg.corpus.dir, "train"), shuffle=True, seed=tc.seed,
                                           max_duration=tc.ctc_warmup_max_duration, num_buckets=4)
    warm_raw = list(itertools.islice(warm_sampler, sizes.train_steps + 1))
    by_id = {c.id: c for c in cached_subset(env, "train", [c.id for cuts in warm_raw for c in cuts])}
    warm_batches = [CutSet.from_cuts(by_id[c.id] for c in cuts) for cuts in warm_raw]
    params = [p for p in model.projector.parameters() if p.requires_grad] + [model.ctc_blank]
    warm_opt = torch.optim.AdamW(params, lr=tc.ctc_warmup_lr)
    per_audio_s: dict[str, list[float]] = {"warmup": [], "joint": []}
    for i, cuts in enumerate(warm_batches):
        start = time.perf_counter()
        batch = dataset[cuts]
        warmup_loss(model, batch, env.cfg.runtime, DEVICE).backward()
        warm_opt.step()
        warm_opt.zero_grad(set_to_none=True)
        if i > 0:  # the first is a warm-up of the kernels
            per_audio_s["warmup"].append((time.perf_counter() - start) / batch["duration"])
    for _, cached in pairs[sizes.train_warmup:]:
        audio_s = sum(c.duration for c in cached)
        per_audio_s["joint"].append(sum(timed_step(model, dataset, cached, optimizer, env)) / audio_s)
    warm_section = {
        "ratios": {"joint_over_warmup_s_per_audio_s": statistics.fmean(per_audio_s["joint"])
                   / statistics.fmean(per_audio_s["warmup"])},
        "raw": {"s_per_audio_s": {k: _stats(v) for k, v in per_audio_s.items()},
                "warmup_batch_s": tc.ctc_warmup_max_duration, "joint_batch_s": tc.max_duration},
    }
    return {"ctc_classes": ctc_section, "ctc_warmup": warm_section}


# -- 6: peak memory, one fresh process per probe (see benchmarks.run) --------------------------
MEMORY_PROBES = ("train_cached", "train_in_step", "decode_greedy", "decode_beam4")


def memory_probe(env: Env, probe: str) -> dict[str, float]:
    """RSS after building the model, then the peak over the work alone (peak mark reset)."""
    if probe.startswith("train"):
        in_step = probe == "train_in_step"
        model = training_model(env, with_encoder=in_step)
        optimizer = make_optimizer(model, env.cfg)
        dataset = AudioTextDataset(model.tokenizer, model.encoder if in_step else None)
        pairs = train_batches(env, env.sizes.memory_steps)
        loaded, was_reset = rss_mb(), reset_peak()
        for raw, cached in pairs:
            train_step(model, dataset[raw if in_step else cached], optimizer, env, encoded=not in_step)
        work = {"steps": len(pairs), "utterances": sum(len(c) for c, _ in pairs)}
    else:
        model, _ = decoding_model(env)
        dataset = AudioTextDataset(model.tokenizer, None)
        cuts = decode_batch_cuts(env)
        loaded, was_reset = rss_mb(), reset_peak()
        _transcriber(env, model, dataset)(cuts, 4 if probe == "decode_beam4" else 1)
        work = {"utterances": len(cuts)}
    peak = peak_rss_mb()
    return {"rss_loaded_mb": loaded, "peak_mb": peak, "work_mb": max(0.0, peak - loaded),
            "peak_reset": was_reset, **work}


MEMORY_RATIOS = (("train_in_step_over_cached_peak", "train_in_step", "train_cached"),
                 ("decode_beam4_over_greedy_peak", "decode_beam4", "decode_greedy"),
                 ("train_over_decode_peak", "train_cached", "decode_greedy"))


def memory_section(probes: dict[str, dict[str, float]]) -> dict[str, Section]:
    ratios = {key: probes[a]["peak_mb"] / probes[b]["peak_mb"]
              for key, a, b in MEMORY_RATIOS if a in probes and b in probes}
    return {"memory": {"ratios": ratios, "raw": probes}}


# -- OpenMP: thread count and wait policy, one fresh process per setting (see benchmarks.run) ----
def threads_probe(env: Env, against_one_thread: bool) -> dict[str, Any]:
    """Best time of a cached training step on one batch (after a warm-up step on it) with the
    configured threads and, alternating with it, with one thread (the wait policy is fixed per
    process, the thread count is not)."""
    import os

    model = training_model(env, with_encoder=False)
    optimizer = make_optimizer(model, env.cfg)
    dataset = AudioTextDataset(model.tokenizer, None)
    batch = dataset[train_batches(env, 1)[0][1]]
    threads = torch.get_num_threads()
    train_step(model, batch, optimizer, env, encoded=True)  # warm-up
    times: dict[int, list[float]] = {threads: [], 1: []}
    for _ in range(env.sizes.thread_reps):
        for n in (threads, 1) if against_one_thread else (threads,):
            torch.set_num_threads(n)
            start = time.perf_counter()
            train_step(model, batch, optimizer, env, encoded=True)
            times[n].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    out = {"threads": threads, "step_s_best": min(times[threads]), "step_s": times[threads],
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "rows": len(batch["ids"])}
    if against_one_thread:
        out |= {"one_thread_step_s_best": min(times[1]), "one_thread_step_s": times[1]}
    return out


def threads_section(probes: dict[str, dict[str, Any]]) -> dict[str, Section]:
    ratios = {}
    if "default" in probes and "passive" in probes:
        ratios["default_over_passive_policy"] = (probes["default"]["step_s_best"]
                                                 / probes["passive"]["step_s_best"])
    for name, probe in probes.items():
        if "one_thread_step_s_best" in probe and probe["threads"] > 1:
            ratios[f"{name}_policy_over_one_thread"] = probe["step_s_best"] / probe["one_thread_step_s_best"]
    return {"threads": {"ratios": ratios, "raw": probes}}


# -- profile of the training step --------------------------------------------------------------
# Self-time buckets for the profile summary, first match wins (substrings of the aten op name).
CATEGORIES = (
    ("matmul", ("mm", "matmul", "linear", "mkldnn")),
    ("ctc/cross-entropy", ("ctc", "nll_loss", "log_softmax", "cross_entropy")),
    ("attention", ("scaled_dot_product", "flash_attention", "softmax")),
    ("optimizer/clipping", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "vector_norm", "clip_grad")),
    ("copies/casts/indexing", ("copy", "_to_", "clone", "contiguous", "cat", "stack", "index", "masked",
                               "fill", "zero", "pad", "where", "empty", "item", "local_scalar")),
)


def categorise(name: str) -> str:
    op = name.removeprefix("aten::").lower()
    if op == "to":
        return "copies/casts/indexing"
    for category, keys in CATEGORIES:
        if any(k in op for k in keys):
            return category
    return "elementwise/other"


def bench_profile(env: Env, top: int = 10) -> dict[str, Section]:
    """torch.profiler over cached training steps: ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    model = training_model(env, with_encoder=False)
    optimizer = make_optimizer(model, env.cfg)
    dataset = AudioTextDataset(model.tokenizer, None)
    pairs = train_batches(env, 1 + env.sizes.profile_steps)
    train_step(model, dataset[pairs[0][1]], optimizer, env, encoded=True)  # warm-up
    batches = [dataset[cached] for _, cached in pairs[1:]]
    start = time.perf_counter()
    for batch in batches:
        train_step(model, batch, optimizer, env, encoded=True)
    plain = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for batch in batches:
            train_step(model, batch, optimizer, env, encoded=True)
        profiled = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000 / len(batches),
             "self_pct": 100 * e.self_cpu_time_total / total, "calls": e.count // len(batches),
             "category": categorise(e.key)} for e in events[:top]]
    shares: dict[str, float] = {}
    for e in events:
        c = categorise(e.key)
        shares[c] = shares.get(c, 0.0) + 100 * e.self_cpu_time_total / total
    return {"profile": {
        "ratios": {"profiled_over_plain_step_time": profiled / plain},
        "raw": {"steps": len(batches), "top_ops": rows, "category_self_pct": dict(sorted(
            shares.items(), key=lambda kv: -kv[1])), "self_cpu_ms_per_step": total / 1000 / len(batches),
            "step_s_plain": plain / len(batches)},
    }}
