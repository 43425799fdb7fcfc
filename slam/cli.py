"""The ``slam`` command: use a trained model outside the pipeline.

    slam transcribe <assets dir | MLflow run id> audio.wav dir/ cuts.jsonl.gz --out hyps.jsonl
    slam export <assets dir | MLflow run id> exported/    # LoRA merged, standalone
    (a model whose stored config turns on trust_remote_code needs --trust-remote-code)
    slam tables [names...] [--out tables] [--where tag.profile=micro]   # params/tables.yaml
    slam convert {beats,emotion2vec,eat} CHECKPOINT OUT_DIR [--allow-pickle] [--config YAML]
    (a published encoder checkpoint -> the config.json + model.safetensors dir encoder.path names)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from slam.stages import USER_ERRORS

TRUST_HELP = ("let the model's stored config turn on trust_remote_code (runs Python that comes "
              "with the model): only for a model whose source you trust")


def _transcribe(args: argparse.Namespace) -> None:
    from slam.decode.inference import audio_inputs, cuts_from_inputs, load_trained, transcribe, write_results

    inputs = audio_inputs(args.inputs)  # a wrong input fails now, not after loading the model
    cfg, model = load_trained(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    cuts = cuts_from_inputs(inputs, model.encoder.sample_rate)
    rows = transcribe(cfg, model, cuts, batch_size=args.batch_size, num_beams=args.beams)
    write_results(rows, args.out)
    for row in rows:
        print(f"{row['id']}\t{row['hyp']}")
    logging.getLogger("slam").info("%d results written to %s", len(rows), args.out)


def _export(args: argparse.Namespace) -> None:
    from slam.decode.inference import export_merged

    print(export_merged(args.model, args.out, trust_remote_code=args.trust_remote_code))


def _tables(args: argparse.Namespace) -> None:
    from slam.track.tables import make_tables

    tables = make_tables(specs_path=args.specs, out_dir=args.out, tracking_uri=args.tracking_uri,
                         experiment=args.experiment, names=args.names, where=args.where,
                         ui_url=args.ui_url, png=not args.no_png)
    for name, table in tables.items():
        cells = [c for row in table.cells for c in row]
        filled = sum(c.filled for c in cells)
        print(f"{args.out}/{name}.md: {filled} of {len(cells)} cells filled (by a run in the store "
              f"or the committed table), {len(cells) - filled} missing")


def _import(args: argparse.Namespace) -> None:
    from slam.config import SlamConfig
    from slam.track.records import import_records
    from slam.track.tracking import tracking_uri

    uri = args.tracking_uri or tracking_uri(SlamConfig())
    summary = import_records(uri, args.root)
    print(f"{uri}: {summary.imported} runs imported from the records under {args.root}, "
          f"{summary.present} there already")


def _convert(args: argparse.Namespace) -> None:
    # importing slam.model.encoders imports every encoder module, which registers its converters
    from slam.model.encoders.converted import CONFIG_FILE, CONVERTERS, WEIGHTS_FILE
    from slam.registry import UnknownComponentError

    try:
        convert = CONVERTERS.get(args.family)
        report = convert(args.checkpoint, args.out_dir, allow_pickle=args.allow_pickle,
                         config_yaml=args.config)
    except (UnknownComponentError, ValueError, OSError, ModuleNotFoundError) as exc:
        print(f"slam convert: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for line in report.lines():
        print(line)
    print(f"wrote {args.out_dir / CONFIG_FILE} and {args.out_dir / WEIGHTS_FILE}")


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
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    p.set_defaults(run=_transcribe)
    p = commands.add_parser("export", help="merge LoRA into the LLM and write a standalone dir")
    p.add_argument("model", help="trained assets dir or MLflow run id")
    p.add_argument("out", help="output dir: new, empty, or an earlier export (replaced)")
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    p.set_defaults(run=_export)
    p = commands.add_parser("tables", help="rebuild the paper's tables from the MLflow runs")
    p.add_argument("names", nargs="*", help="tables to build (default: every table in the specs)")
    p.add_argument("--specs", default="params/tables.yaml", help="table specs (YAML)")
    p.add_argument("--out", default="tables", help="output dir for <name>.md, .csv, .png")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the repo)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: slam)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="extra filter for every table, e.g. tag.profile=micro (repeatable)")
    p.add_argument("--ui-url", default=None, help="MLflow UI the cells link to (default: the server, "
                   "else http://127.0.0.1:5000 as `make ui` serves it)")
    p.add_argument("--no-png", action="store_true", help="skip the heatmaps")
    p.set_defaults(run=_tables)
    p = commands.add_parser("import", help="load the committed run records into an MLflow store")
    p.add_argument("--root", default="metrics", help="folder searched for <run>/record.json")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the repo)")
    p.set_defaults(run=_import)
    p = commands.add_parser("convert", help="convert a published encoder checkpoint for encoder.path")
    p.add_argument("family", metavar="FAMILY", help="the encoder family: beats, emotion2vec or eat")
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path,
                   help="the published file (.pt; FunASR: model.pt)")
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                   help="the directory to write: new, or an earlier conversion (replaced)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load with torch.load(weights_only=False), which runs code from the file: "
                   "only for a file you trust whose config is pickled (fairseq)")
    p.add_argument("--config", metavar="YAML", type=Path, default=None,
                   help="FunASR config.yaml when it is not beside the checkpoint")
    p.set_defaults(run=_convert)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"slam {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
