"""results.json -> results.md: a markdown table ready for the README, the profile, the notes."""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, str]  # measurement, compared, raw figures, ratio


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    flags = f" ({', '.join(m['cpu_flags'])})" if m.get("cpu_flags") else ""
    load = results.get("load_average", {})
    return (f"{m['cpu']}{flags}, {m['cores']} cores ({m['cores_usable']} usable), "
            f"{m['mem_total_gb']} GB RAM; torch {m['torch']} with {m['torch_threads']} threads, "
            f"OMP_WAIT_POLICY {m.get('omp_wait_policy', 'default')} unless a row says otherwise, "
            f"transformers {m['transformers']}, Python {m['python']}; load average "
            f"{load.get('start', '?')} at the start, {load.get('end', '?')} at the end "
            "(1, 5, 15 min; other processes share the machine).")


def training_rows(s: dict[str, Any]) -> list[Row]:
    r, m = s["raw"], s["raw"]["modes"]
    size = sum(r["batch_sizes"]) / len(r["batch_sizes"])
    cached, in_step = m["cached"], m["in_step"]
    return [(
        f"Training step, SmolLM2 + LoRA, {r['precision']} autocast ({r['steps_per_mode']} batches of "
        f"{size:.1f} utts on average, best of {r['reps_per_step']} runs each)",
        "encoder in the step vs encoder cache",
        f"{_f(in_step['step_s']['mean'])} vs {_f(cached['step_s']['mean'])} s/step; "
        f"epoch of {r['batches_per_epoch']} batches ~{_f(in_step['epoch_minutes_projected'], 1)} vs "
        f"{_f(cached['epoch_minutes_projected'], 1)} min",
        f"**{_f(s['ratios']['in_step_over_cached_step_time'])}x** step time (median over batches; "
        f"{_f(s['ratios']['in_step_over_cached_epoch_time'])}x summed)")]


def whisper_rows(s: dict[str, Any]) -> list[Row]:
    r, ms = s["raw"], s["raw"]["ms_per_utt"]
    agree, wer = r["agreement_on_true_length_prefix"], r["whisper_decoder_wer"]
    pad_total = ms["feat_pad"] + ms["enc_pad"] + ms["dec_pad"]
    true_total = ms["feat_true"] + ms["enc_true"] + ms["dec_true"]
    return [
        (f"Whisper encoder per utterance, batch 1 ({r['clips']} {r['set']} clips, "
         f"{_f(r['mean_duration_s'], 1)} s mean)",
         "padded to 30 s (transformers) vs true length (slam)",
         f"{_f(ms['enc_pad'], 0)} vs {_f(ms['enc_true'], 0)} ms encoder; {_f(pad_total, 0)} vs "
         f"{_f(true_total, 0)} ms features + encoder + Whisper's greedy decoder",
         f"**{_f(s['ratios']['encoder_time_padded_over_true'], 1)}x** encoder, "
         f"{_f(s['ratios']['transcribe_time_padded_over_true'], 2)}x transcription"),
        ("Whisper's own decoder on those encoder outputs", "true length vs padded to 30 s",
         f"WER {_pct(wer['true_length'])} vs {_pct(wer['padded_30s'])} ({wer['ref_words']} words, "
         f"{_pct(wer['identical_hyps'], 0)} identical hyps); without insertions "
         f"{_pct(wer['sub_del_rate_true_length'])} vs {_pct(wer['sub_del_rate_padded_30s'])} "
         f"({wer['insertions_true_length']} vs {wer['insertions_padded_30s']} inserted words); "
         f"encoder outputs on the true-length prefix: cosine {_f(agree['cosine_mean'], 3)} "
         f"(min {_f(agree['cosine_min'], 3)}), rel. L2 {_f(agree['rel_l2_mean'], 3)}",
         f"{wer['difference_points']:+.1f} WER points"),
    ]


def padding_rows(s: dict[str, Any]) -> list[Row]:
    r = s["raw"]
    bk, rn = r["bucketing"], r["random_fixed_size"]
    return [(
        f"Padding over one epoch of train ({r['cuts']} cuts; max_duration {r['max_duration']} s, "
        f"{r['num_buckets']} buckets)",
        f"fixed-size random batches ({_f(rn['mean_batch_size'], 1)} cuts) vs dynamic bucketing "
        f"({_f(bk['mean_batch_size'], 1)} cuts mean)",
        f"padded share of encoder frames {_pct(rn['encoder_frames_padding'])} vs "
        f"{_pct(bk['encoder_frames_padding'])}; of LLM positions {_pct(rn['llm_positions_padding'])} vs "
        f"{_pct(bk['llm_positions_padding'])}",
        f"**{_f(s['ratios']['random_over_bucketing_padded_frames'])}x** frames computed, "
        f"{_f(s['ratios']['random_over_bucketing_llm_positions'])}x LLM positions")]


def peak(raw: dict[str, Any], dtype: str) -> float:
    return max(raw[f"matmul_peak_{when}"][dtype]["gflops_best"] for when in ("before", "after"))


def mfu_rows(s: dict[str, Any]) -> list[Row]:
    r = s["raw"]
    return [(
        "Training throughput as model-FLOPs utilisation (cached step)",
        "achieved vs measured torch.matmul peak",
        f"{_f(r['step_gflop_formula'], 1)} GFLOP/step in {_f(r['cached_compute_s_mean'])} s = "
        f"{_f(r['achieved_gflops'], 1)} GFLOP/s; peak {_f(peak(r, 'bf16'), 0)} (bf16) / "
        f"{_f(peak(r, 'fp32'), 0)} (fp32) GFLOP/s",
        f"**{_pct(s['ratios']['mfu_vs_bf16_matmul_peak'])}** of bf16 peak "
        f"({_pct(s['ratios']['mfu_vs_fp32_matmul_peak'])} of fp32)")]


def decode_rows(s: dict[str, Any]) -> list[Row]:
    r, rtf = s["raw"], s["raw"]["rtf"]
    model = "trained model" if r["trained_model"] else f"untrained, max_new_tokens={r['max_new_tokens']}"
    return [
        (f"Decoding real-time factor ({model}; one batch of {r['batch_size']} test utts, then "
         f"{r['single_utterances']} of them one at a time)",
         f"one at a time vs batch {r['batch_size']}",
         f"greedy RTF {_f(rtf['single_beam1'], 3)} vs {_f(rtf['batched_beam1'], 3)}; "
         f"beam 4 {_f(rtf['single_beam4'], 3)} vs {_f(rtf['batched_beam4'], 3)}",
         f"**{_f(s['ratios']['single_over_batched_greedy'], 1)}x** greedy, "
         f"{_f(s['ratios']['single_over_batched_beam4'], 1)}x beam 4"),
        ("Decoding, beam search cost", f"beam 4 vs greedy, batch {r['batch_size']}",
         f"RTF {_f(rtf['batched_beam4'], 3)} vs {_f(rtf['batched_beam1'], 3)}; "
         f"WER {_pct(r['wer']['batched_beam4'])} vs {_pct(r['wer']['batched_beam1'])}",
         f"**{_f(s['ratios']['beam4_over_greedy_batched'], 1)}x**"),
    ] + joint_rows(s)


def joint_rows(s: dict[str, Any]) -> list[Row]:
    """Joint CTC/LLM decoding against the LLM alone, where the model has a CTC head."""
    r, rtf = s["raw"], s["raw"]["rtf"]
    if "joint_greedy_over_greedy" not in s["ratios"]:
        return []
    return [(f"Decoding, joint CTC/LLM (CTC weight {r['joint_ctc_weight']}) vs the LLM alone",
             f"joint greedy and joint beam 4 vs greedy, batch {r['batch_size']}",
             f"RTF {_f(rtf['joint_beam1'], 3)} / {_f(rtf['joint_beam4'], 3)} vs "
             f"{_f(rtf['batched_beam1'], 3)}; "
             f"WER {_pct(r['wer']['joint_beam1'])} / {_pct(r['wer']['joint_beam4'])} vs "
             f"{_pct(r['wer']['batched_beam1'])}",
             f"**{_f(s['ratios']['joint_greedy_over_greedy'], 1)}x** greedy, "
             f"{_f(s['ratios']['joint_beam4_over_greedy'], 1)}x beam 4")]


MEMORY_LABELS = {
    "train_in_step_over_cached_peak": ("train_in_step", "train_cached",
                                       "Peak RSS of training steps: encoder in the step vs cache"),
    "decode_beam4_over_greedy_peak": ("decode_beam4", "decode_greedy",
                                      "Peak RSS of decoding a batch: beam 4 vs greedy"),
    "train_over_decode_peak": ("train_cached", "decode_greedy",
                               "Peak RSS: training step (cached) vs greedy decoding"),
}


def memory_rows(s: dict[str, Any]) -> list[Row]:
    p, out = s["raw"], []
    for key, (a, b, what) in MEMORY_LABELS.items():
        if key in s["ratios"]:
            out.append((what, "fresh process each",
                        f"{_f(p[a]['peak_mb'], 0)} vs {_f(p[b]['peak_mb'], 0)} MiB peak "
                        f"(+{_f(p[a]['work_mb'], 0)} vs +{_f(p[b]['work_mb'], 0)} MiB over the loaded model)",
                        f"**{_f(s['ratios'][key])}x**"))
    return out


def threads_rows(s: dict[str, Any]) -> list[Row]:
    p, r, out = s["raw"], s["ratios"], []
    what = "Cached training step on one batch of {} utts (best of {})"
    if "default_over_passive_policy" in r:
        a, b = p["default"], p["passive"]
        out.append((what.format(a["rows"], len(a["step_s"])) + ", a fresh process for each policy",
                    f"OpenMP's default wait policy vs OMP_WAIT_POLICY=PASSIVE, {a['threads']} threads",
                    f"{_f(a['step_s_best'])} vs {_f(b['step_s_best'])} s/step",
                    f"**{_f(r['default_over_passive_policy'])}x**"))
    if "default_policy_over_one_thread" in r:
        a = p["default"]
        out.append((what.format(a["rows"], len(a["step_s"])) + ", alternating in one process",
                    f"{a['threads']} threads vs 1 thread, OpenMP's default wait policy",
                    f"{_f(a['step_s_best'])} vs {_f(a['one_thread_step_s_best'])} s/step",
                    f"**{_f(r['default_policy_over_one_thread'])}x**"))
    return out


def ctc_classes_rows(s: dict[str, Any]) -> list[Row]:
    r, t = s["raw"], s["raw"]["step_s"]
    return [(f"Hot path: the auxiliary CTC loss in a cached training step "
             f"({t['training_tokens']['n']} batches, alternating)",
             f"before: CTC over the whole vocabulary ({r['classes']['full_vocab']} classes) vs after: over "
             f"the training transcripts' tokens ({r['classes']['training_tokens']})",
             f"{_f(t['full_vocab']['mean'])} vs {_f(t['training_tokens']['mean'])} s/step",
             f"**{_f(s['ratios']['full_over_training_tokens_step_time'])}x** (median of paired ratios)")]


def ctc_warmup_rows(s: dict[str, Any]) -> list[Row]:
    r = s["raw"]
    joint, warm = r["s_per_audio_s"]["joint"]["mean"], r["s_per_audio_s"]["warmup"]["mean"]
    return [(f"CTC warm-up step ({r['warmup_batch_s']:.0f} s batches: projector + CTC, no LLM) vs joint "
             f"step ({r['joint_batch_s']:.0f} s batches)",
             "compute seconds per second of audio: joint vs warm-up",
             f"{_f(joint, 3)} vs {_f(warm, 3)} s/s",
             f"**{_f(s['ratios']['joint_over_warmup_s_per_audio_s'], 1)}x** cheaper per second of audio")]


ROWS = (("cache_vs_instep", training_rows), ("ctc_classes", ctc_classes_rows),
        ("ctc_warmup", ctc_warmup_rows), ("whisper_true_length", whisper_rows), ("padding", padding_rows),
        ("mfu", mfu_rows), ("decode_rtf", decode_rows), ("memory", memory_rows),
        ("threads", threads_rows))


def profile_markdown(section: dict[str, Any]) -> str:
    lines = ["| op | self CPU ms/step | share | calls/step | kind |", "|---|---|---|---|---|"]
    for row in section["raw"]["top_ops"]:
        lines.append(f"| `{row['op']}` | {row['self_cpu_ms']:.1f} | {row['self_pct']:.1f}% | "
                     f"{row['calls']} | {row['category']} |")
    return "\n".join(lines)


def profile_paragraph(results: dict[str, Any]) -> str:
    """What dominates, from the profile's categories and the FLOP formula's parts."""
    section = results["benchmarks"]["profile"]
    prof = section["raw"]
    parts = ", ".join(f"{k} {v:.0f}%" for k, v in prof["category_self_pct"].items())
    overhead = section["ratios"]["profiled_over_plain_step_time"]
    text = (f"Self CPU time of {prof['steps']} cached training step(s) "
            f"({prof['self_cpu_ms_per_step']:.0f} ms of op time per step; profiler overhead {overhead:.2f}x) "
            f"by kind: {parts}.")
    if prof["top_ops"]:
        top = prof["top_ops"][0]
        text += f" The single largest op is `{top['op']}` ({top['self_pct']:.0f}%)."
    if mfu := results["benchmarks"].get("mfu"):
        p = mfu["raw"]["parts_gflop_mean"]
        fwd = p["body"] + p["attn"] + p["head"] + p["ctc"] + p["proj"]
        share = {k: f"{100 * p[k] / fwd:.0f}%" for k in ("body", "attn", "head", "ctc", "proj")}
        text += (f" By the FLOP formula a forward pass is {fwd:.1f} GFLOP: LLM linears {share['body']}, "
                 f"attention {share['attn']}, CTC logits over the vocabulary {share['ctc']}, LM head on the "
                 f"labels {share['head']}, projector {share['proj']}.")
    return text


def render(results: dict[str, Any]) -> str:
    b = results["benchmarks"]
    out = ["## Benchmarks", "",
           f"`python -m benchmarks.run` ({results['mode']} run, {results['created']}, "
           f"{results['total_seconds'] / 60:.1f} min). Each ratio compares two measurements taken in the "
           "same run, interleaved where possible; the raw figures are beside it and in "
           "`benchmarks/results.json`.", "",
           f"Machine: {machine_line(results)}", "",
           f"Assets: {results['assets']['kind']} ({results['assets']['summary']}).", "",
           "| measurement | compared | raw figures | ratio |", "|---|---|---|---|"]
    for key, make in ROWS:
        if key in b:
            out += [f"| {a} | {c} | {r} | {x} |" for a, c, r, x in make(b[key])]
    later = {k: v for k, v in results.get("measured", {}).items() if v.get("created") != results["created"]}
    if later:
        out += ["", "Sections measured in a later run (`--only ... --merge`): " + "; ".join(
            f"{k}: {v['created']}, load average {v['load_average'].get('start')}" for k, v in later.items())]
    if results.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in results["notes"]]
    if results.get("errors"):
        out += ["", "Failed measurements:", ""]
        out += [f"- {k}: {v.splitlines()[-1] if v else v}" for k, v in results["errors"].items()]
    if "mfu" in b:
        raw = b["mfu"]["raw"]
        out += ["", f"FLOP formula (per cached step): {raw['formula']} (`benchmarks/measures.py:step_flops`; "
                "torch's FlopCounterMode on the first batch counts "
                f"{_f(raw['step_gflop_counted_first_batch'], 1)} GFLOP, formula/counted "
                f"{_f(raw['formula_over_counted_first_batch'])})."]
    if "profile" in b:
        out += ["", "### Where a training step spends its time (torch.profiler, top 10 ops by self CPU time)",
                "", profile_markdown(b["profile"]), "", profile_paragraph(results)]
    return "\n".join(out) + "\n"
