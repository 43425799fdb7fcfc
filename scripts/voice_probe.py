"""How natural a TTS voice sounds, by proxy: Whisper's own decoder's WER on its renders.

    python scripts/voice_probe.py pico:en-US pico:en-GB espeak:en-us+m1 --sentences 20 \\
        --out metrics/experiments/ENC2PICO/voice_probe.jsonl

Every 2nd sentence of ``--corpus`` (the default corpus's synthetic test set) up to
``--sentences``, rendered by each ``engine:voice`` at its normal speed and the middle of its
pitch range (slam.data.corpora.tts, the corpus's own rendering and sox finishing), transcribed
greedily by ``--whisper`` on its 30 s window (as it was trained; ``slam.zoo.transcribe``);
WER after the english_v1 normaliser, and the render speed. Whisper's decoder was trained on
real speech, so a voice it reads well is one closer to real speech: piper's reads at ~10 %,
espeak-ng's at ~60 % on the test set. One JSON line per voice.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lhotse import load_manifest_lazy

from slam.data.corpora.tts import TTS_ENGINES, RenderJob, render
from slam.score.metrics import score_wer
from slam.zoo import transcribe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("voices", nargs="+", help="engine:voice, e.g. pico:en-US")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--corpus", default="data/asr/corpus/test.jsonl.gz")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--out", type=Path, help="JSON lines file for the results")
    args = parser.parse_args()
    texts = [c.supervisions[0].text for c in load_manifest_lazy(args.corpus)][::2][: args.sentences]
    rows = []
    for spec in args.voices:
        name, voice = spec.split(":", 1)
        engine = TTS_ENGINES.build(name)
        low, high = engine.pitch_range(voice)
        pitch = (low + high) / 2
        jobs = [RenderJob(id=f"{i:03d}", split="test", text=text, engine=name, voice=voice, pitch=pitch)
                for i, text in enumerate(texts)]  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            start = time.monotonic()
            report = render(jobs, Path(tmp), {name: engine}, num_workers=1)
            seconds = time.monotonic() - start
            refs = {job.id: job.text for job in jobs if job.id in report.done}
            hyps = {job_id: transcribe(args.whisper, report.done[job_id]) for job_id in refs}
        wer = score_wer(refs, hyps, "english_v1")["summary"]["wer"] if refs else None
        row = {"voice": spec, "sentences": len(refs), "failed": len(report.failed), "whisper_wer": wer,
               "whisper": Path(args.whisper).name,
               "realtime_factor": round(report.audio_seconds / seconds, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
