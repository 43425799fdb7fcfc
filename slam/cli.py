"""The ``slam`` command: use a trained model outside the pipeline.

    slam transcribe <assets dir | MLflow run id> audio.wav dir/ cuts.jsonl.gz --out hyps.jsonl
    slam export <assets dir | MLflow run id> exported/    # LoRA merged, standalone
"""

from __future__ import annotations

import argparse
import logging
import sys

from slam.stages import USER_ERRORS


def _transcribe(args: argparse.Namespace) -> None:
    from slam.inference import cuts_from_inputs, load_trained, transcribe, write_results

    cfg, model = load_trained(args.model, device=args.device)
    cuts = cuts_from_inputs(args.inputs)
    rows = transcribe(cfg, model, cuts, batch_size=args.batch_size, num_beams=args.beams)
    write_results(rows, args.out)
    for row in rows:
        print(f"{row['id']}\t{row['hyp']}")
    logging.getLogger("slam").info("%d results written to %s", len(rows), args.out)


def _export(args: argparse.Namespace) -> None:
    from slam.inference import export_merged

    print(export_merged(args.model, args.out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("transcribe", help="transcribe / caption audio files or manifests")
    p.add_argument("model", help="trained assets dir (e.g. exp/asr/model) or MLflow run id")
    p.add_argument("inputs", nargs="+", help="audio files, directories or Lhotse manifests")
    p.add_argument("--out", default="results.jsonl", help="results file (one JSON per line)")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="override runtime.device, e.g. cuda:0")
    p.set_defaults(run=_transcribe)
    p = commands.add_parser("export", help="merge LoRA into the LLM and write a standalone dir")
    p.add_argument("model", help="trained assets dir or MLflow run id")
    p.add_argument("out", help="output dir")
    p.set_defaults(run=_export)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"slam {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
