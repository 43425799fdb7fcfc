"""`slam tables` over a real grid of tiny-model runs; dvc.lock tracking; reproducibility.

The grid runs the library's stage functions (cache, train, decode, baseline, score) as the
pipeline does, three times into one MLflow store: A, then B (another projector.k), then A2
(A's config and seed again). So the table must pick A2 over A, and A2 must equal A.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import write_corpus
from mlflow.tracking import MlflowClient

from slam.cli import main as slam_main
from slam.config import SlamConfig
from slam.data.cache import build_cache
from slam.decode.hyps import RUN_FILE
from slam.decode.stage import decode, decode_baseline
from slam.score.stage import score
from slam.track.tables import MISSING, SEVERAL, build_table, parse_spec
from slam.track.tracking import DVC_LOCK_ARTIFACT, DVC_STAGES_ARTIFACT
from slam.train.loop import train

LOCK = {"schema": "2.0", "stages": {
    "train": {"cmd": "python pipelines/train.py",
              "deps": [{"path": "slam/train/loop.py", "hash": "md5", "md5": "0123", "size": 1}],
              "outs": [{"path": "exp/asr/model", "hash": "md5", "md5": "4567.dir", "size": 2}]},
    "score": {"cmd": "python pipelines/score.py"},  # the stage running: its entry is stale
}}


def tiny_config(root: Path, models: dict[str, Path]) -> SlamConfig:
    """As conftest's tiny_cfg, plus short generations: random models never stop on their own."""
    cfg = SlamConfig()
    cfg.encoder.path, cfg.llm.path = str(models["whisper"]), str(models["llm"])
    cfg.corpus.dir, cfg.cache.dir = str(root / "corpus"), str(root / "cache")
    cfg.decode.sets = cfg.baseline.sets = ["test"]
    cfg.decode.max_new_tokens = cfg.baseline.max_new_tokens = 6
    cfg.tracking.uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg.projector.hidden, cfg.peft.r = 64, 4
    cfg.train.max_duration, cfg.train.max_steps, cfg.train.warmup_steps = 6.0, 4, 2
    cfg.train.eval_every = cfg.train.checkpoint_every = 2
    cfg.train.log_every = 1
    cfg.runtime.precision = "fp32"
    write_corpus(Path(cfg.corpus.dir), {"train": 16, "dev": 4, "test": 4})
    return cfg


def run_system(base: SlamConfig, out: Path, baseline: bool, dvc_root: Path,
               mp: pytest.MonkeyPatch, **projector) -> dict:
    """One pipeline run into ``out``; ``dvc_root`` plays the DVC repo (with or without a lock)."""
    cfg = copy.deepcopy(base)
    for key, value in projector.items():
        setattr(cfg.projector, key, value)
    cfg.train.dir, cfg.score.dir = str(out / "exp"), str(out / "metrics")
    cfg.decode.dir, cfg.baseline.dir = str(out / "exp" / "hyps"), str(out / "exp" / "baseline")
    mp.setenv("DVC_ROOT", str(dvc_root))
    mp.setenv("DVC_STAGE", "score")
    train(cfg)
    decode(cfg)
    if baseline:
        decode_baseline(cfg)
    score(cfg)
    ids = {"llm": json.loads((Path(cfg.decode.dir) / RUN_FILE).read_text())["mlflow_run_id"]}
    if baseline:
        ids["whisper"] = json.loads((Path(cfg.baseline.dir) / RUN_FILE).read_text())["mlflow_run_id"]
    return {"cfg": cfg, "ids": ids,
            "wer": json.loads((Path(cfg.score.dir) / cfg.recipe / "scores.json").read_text())}


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_models) -> dict:
    root = tmp_path_factory.mktemp("grid")
    base = tiny_config(root, tiny_models)
    build_cache(base)  # shared by every run, as DVC's run-cache shares the cache stage
    with_lock, without_lock = root / "dvc-with-lock", root / "dvc-without-lock"
    with_lock.mkdir()
    without_lock.mkdir()
    (with_lock / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    with pytest.MonkeyPatch.context() as mp:
        runs = {"a": run_system(base, root / "a", True, with_lock, mp),
                "b": run_system(base, root / "b", False, without_lock, mp, k=2),
                "a2": run_system(base, root / "a2", False, without_lock, mp)}
    return {"root": root, "uri": base.tracking.uri, "runs": runs}


SPEC = {
    "name": "grid",
    "title": "Tiny grid: WER (%) by projector.k and system",
    "filter": {"tag.recipe": "asr", "param.peft.r": 4},
    "scale": 100,
    "format": "{:.2f}",
    "rows": {"key": "param.projector.k", "values": [5, 2, 3]},
    "columns": [{"label": "LLM test", "match": {"tag.system": "llm"}, "metric": "wer_test_beam1"},
                {"label": "Whisper test", "match": {"tag.system": "whisper"}, "metric": "wer_test_beam1"}],
}
CELL = re.compile(r"^(?P<display>\S+?)(?P<several>†?) \(\[(?P<short>[0-9a-f]{7})\]\((?P<url>[^)]+)\)"
                  r"(?:, \[record\]\((?P<record>[^)]+)\))?\)$")


def read_markdown(path: Path) -> dict[tuple[str, str], str]:
    """(row, column) -> cell text of the first markdown table in ``path``."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    cells = {}
    for line in lines[2:]:
        row, *values = [c.strip() for c in line.strip().strip("|").split(" | ")]
        cells.update({(row, col): value for col, value in zip(header[1:], values)})
    return cells


def test_tables_from_the_grid(grid, tmp_path):
    runs = grid["runs"]
    specs = tmp_path / "tables.yaml"
    specs.write_text(yaml.safe_dump({"tables": [SPEC]}, sort_keys=False))
    out = tmp_path / "tables"
    slam_main(["tables", "--specs", str(specs), "--out", str(out), "--tracking-uri", grid["uri"],
               "--ui-url", "http://mlflow.test"])
    rows = list(csv.DictReader((out / "grid.csv").open()))
    by_cell = {(r["row"], r["column"]): r for r in rows}
    assert len(rows) == 6 and (out / "grid.png").stat().st_size > 0

    def wer(run: str, system: str) -> float:
        return 100 * runs[run]["wer"][system]["test.beam1"]["wer"]

    expected = {  # (row, column) -> (run, system, how many runs matched)
        ("5", "LLM test"): ("a2", "llm", 2),  # A and A2 match: the most recent wins
        ("2", "LLM test"): ("b", "llm", 1),
        ("5", "Whisper test"): ("a", "whisper", 1),
    }
    for key, row in by_cell.items():
        if key not in expected:  # k=3 was never run; B and A2 had no baseline
            assert (row["display"], row["value"], row["run_id"], row["n_runs"]) == (MISSING, "", "", "0")
            continue
        run, system, n = expected[key]
        assert row["run_id"] == runs[run]["ids"][system]
        assert float(row["value"]) == pytest.approx(wer(run, system), abs=1e-9)
        assert row["display"] == f"{wer(run, system):.2f}" and int(row["n_runs"]) == n

    # the markdown says the same, cell by cell, and links each cell to its run
    shown = read_markdown(out / "grid.md")
    assert set(shown) == set(by_cell)
    for key, text in shown.items():
        row = by_cell[key]
        if row["display"] == MISSING:
            assert text == MISSING
            continue
        m = CELL.match(text)
        assert m, text
        assert m["display"] == row["display"] and row["run_id"].startswith(m["short"])
        assert m["url"].startswith("http://mlflow.test/#/experiments/") and m["url"].endswith(row["run_id"])
        assert (m["several"] == SEVERAL) == (int(row["n_runs"]) > 1)
        # and to the run's committed record (DVC_ROOT plays the repo the tables/ folder is in)
        link = os.path.normpath(grid["root"] / "dvc-without-lock" / "tables" / m["record"])
        record = json.loads(Path(link).read_text())
        assert record["run_id"] == row["run_id"]
    assert "most recent finished run" in (out / "grid.md").read_text()


def test_runs_carry_the_dvc_lock(grid, tmp_path):
    client = MlflowClient(grid["uri"])
    runs = grid["runs"]
    for system in ("llm", "whisper"):  # A ran where a dvc.lock exists
        run_id = runs["a"]["ids"][system]
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {DVC_LOCK_ARTIFACT, DVC_STAGES_ARTIFACT, "config.json"} <= names
        stages = json.loads(Path(client.download_artifacts(run_id, DVC_STAGES_ARTIFACT, str(tmp_path)))
                            .read_text())
        assert set(stages) == {"train"}  # the running stage's stale entry is left out
        assert stages["train"]["deps"] == {"slam/train/loop.py": "0123"}
        assert stages["train"]["outs"] == {"exp/asr/model": "4567.dir"}
        assert client.get_run(run_id).data.tags["dvc_lock_md5"]
    # B ran without one: the run is complete, only without the lock
    names = {a.path for a in client.list_artifacts(runs["b"]["ids"]["llm"])}
    assert DVC_LOCK_ARTIFACT not in names and "config.json" in names
    assert client.get_run(runs["b"]["ids"]["llm"]).info.status == "FINISHED"


def test_same_config_and_seed_same_results(grid):
    """A and A2: same config and seed, so the same loss curve, dev metrics and WER."""
    client = MlflowClient(grid["uri"])
    a, a2 = grid["runs"]["a"], grid["runs"]["a2"]
    for metric in ("train_loss", "train_acc", "dev_loss", "dev_acc"):
        curves = [[(m.step, m.value) for m in sorted(client.get_metric_history(r["ids"]["llm"], metric),
                                                     key=lambda m: (m.step, m.timestamp))]
                  for r in (a, a2)]
        assert curves[0] and curves[0] == curves[1], metric
    assert a["wer"]["llm"] == a2["wer"]["llm"]
    csv_a, csv_a2 = (Path(r["cfg"].score.dir) / "asr" / "train_curve.csv" for r in (a, a2))
    loss = lambda p: [row["loss"] for row in csv.DictReader(p.open())]  # noqa: E731
    assert loss(csv_a) == loss(csv_a2)
    # B differs in projector.k only: a different model, so not trivially equal
    assert grid["runs"]["b"]["ids"]["llm"] != a2["ids"]["llm"]


def _fake_run(run_id: str, start: int, status: str = "FINISHED", metrics: dict | None = None,
              **tags: str) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start, status=status,
                                                experiment_id="1"),
                           data=SimpleNamespace(tags=tags, params={}, metrics=metrics or {}))


def test_cells_take_the_latest_finished_run_with_the_metric():
    spec = parse_spec({"name": "t", "metric": "wer", "rows": {"key": "tag.projector",
                                                              "values": ["linear", "*"]}})
    runs = [_fake_run("old", 1, metrics={"wer": 0.5}, projector="linear"),
            _fake_run("new", 2, metrics={"wer": 0.4}, projector="linear"),
            _fake_run("failed", 3, status="FAILED", metrics={"wer": 0.1}, projector="linear"),
            _fake_run("unscored", 4, projector="linear"),
            _fake_run("other", 0, metrics={"wer": 0.9}, projector="qformer")]
    table = build_table(spec, runs)  # type: ignore[arg-type]
    linear, anything = table.cells[0][0], table.cells[1][0]
    assert (linear.run_id, linear.value, linear.n_runs) == ("new", 0.4, 2)
    assert (anything.run_id, anything.n_runs) == ("new", 3)  # "*" matches every projector
    assert table.display(linear) == "0.4"


def test_a_column_metric_takes_the_rows_part():
    # captioning tables: rows are systems (hypothesis labels), columns are metric and set
    spec = parse_spec({"name": "t", "rows": [{"label": "greedy", "match": {"tag.system": "llm"},
                                              "metric": "beam1"},
                                             {"label": "frequent", "match": {"tag.system": "baseline"},
                                              "metric": "most_frequent"}],
                       "columns": [{"label": "CIDEr-D", "metric": "cider_d_test_{row}"},
                                   {"label": "BLEU-4", "metric": "bleu_4_test_{row}"}]})
    runs = [_fake_run("llm", 1, metrics={"cider_d_test_beam1": 0.7, "bleu_4_test_beam1": 0.3}, system="llm"),
            _fake_run("base", 1, metrics={"cider_d_test_most_frequent": 0.1}, system="baseline")]
    table = build_table(spec, runs)  # type: ignore[arg-type]
    assert [[c.value for c in row] for row in table.cells] == [[0.7, 0.3], [0.1, None]]
    assert table.cells[1][1].metric == "bleu_4_test_most_frequent"  # missing, never made up


@pytest.mark.parametrize("bad, message", [
    ({"name": "t", "metric": "m", "rows": {"key": "encoder", "values": ["a"]}}, "tag.<name>"),
    ({"name": "t", "metric": "m", "rows": {"key": "tag.a", "values": ["x", "x"]}}, "duplicate"),
    ({"name": "t", "rows": {"key": "tag.a", "values": ["x"]}}, "no metric"),
    ({"name": "t", "metric": "m", "rows": {"key": "tag.a", "values": ["x"]}, "colour": 1}, "unknown"),
    ({"name": "t", "metric": "m", "rows": {"keys": ["tag.a", "tag.b"], "values": [["x"]]}}, "one value"),
])
def test_bad_specs_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(bad)


def test_the_shipped_specs_parse():
    from slam.track.tables import load_specs

    specs = {s.name: s for s in load_specs(Path(__file__).resolve().parents[2] / "params" / "tables.yaml")}
    assert {"table1_encoder_llm", "table3_decoder", "ablation"} <= set(specs)
    table1 = specs["table1_encoder_llm"]
    assert [r.label for r in table1.rows] == ["whisper-tiny.en", "whisper-base"]
    # the column values are the model dirs the zoo creates, as the encoder/llm tags name them
    llm_dirs = {Path(yaml.safe_load(p.read_text())["path"]).name
                for p in (Path(__file__).resolve().parents[2] / "params" / "llm").glob("*.yaml")}
    assert {c.label for c in table1.columns} <= llm_dirs


@pytest.mark.parametrize("store", ["empty", "imported"])
def test_the_committed_tables_rebuild_byte_for_byte(store, tmp_path):
    """A fresh clone has no MLflow store: `make tables` must leave every committed table as it
    is (md, csv and png), whether the store is empty (every filled cell kept from the committed
    CSV, never "missing") or holds the committed run records (`make tables` imports them)."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "tables"
    out.mkdir()
    for path in (repo / "tables").iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    if store == "imported":
        slam_main(["import", "--root", str(repo / "metrics"), "--tracking-uri", uri])
        assert len(MlflowClient(uri).search_runs(["1"])) >= 20  # the committed records
    slam_main(["tables", "--specs", str(repo / "params" / "tables.yaml"), "--out", str(out),
               "--tracking-uri", uri])
    committed = sorted((repo / "tables").iterdir())
    assert [p.name for p in committed if (out / p.name).read_bytes() != p.read_bytes()] == []


def test_a_run_in_the_store_replaces_the_committed_cell_and_an_empty_one_does_not(tmp_path):
    from slam.track.tables import committed_cells, keep_committed, render_csv

    spec = parse_spec({"name": "t", "metric": "wer",
                       "rows": {"key": "tag.projector", "values": ["linear", "qformer"]}})
    out = tmp_path / "tables"
    out.mkdir()
    before = build_table(spec, [_fake_run("old", 1, metrics={"wer": 0.5}, projector="linear"),  # type: ignore[list-item]
                                _fake_run("q", 1, metrics={"wer": 0.7}, projector="qformer")])
    (out / "t.csv").write_text(render_csv(before))
    after = build_table(spec, [_fake_run("new", 2, metrics={"wer": 0.4}, projector="linear")])  # type: ignore[list-item]
    assert keep_committed(after, committed_cells(out, "t")) == 1
    (linear,), (qformer,) = after.cells
    assert (linear.run_id, linear.value) == ("new", 0.4)  # the store's newer run wins
    assert (qformer.run_id, qformer.value, qformer.experiment_id) == ("q", 0.7, "1")  # kept, not "missing"


def test_the_score_stage_leaves_records_that_a_fresh_store_imports_as_the_same_runs(grid, tmp_path):
    """Each scored system's run is committed as a record beside its metrics; importing the
    records into an empty store gives the same run ids with the same params, tags, metric
    histories and hypothesis files, never the weights; a second import adds nothing."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from slam.track.records import RECORD_ID_TAG, find_records, import_records, load_record

    source = MlflowClient(grid["uri"])
    records = find_records(grid["root"])
    a = grid["runs"]["a"]
    run_ids = {i for run in grid["runs"].values() for i in run["ids"].values()}
    assert {load_record(p)["run_id"] for p in records} == run_ids
    llm_folder = Path(a["cfg"].score.dir) / "asr" / "runs" / "llm"
    record = load_record(llm_folder)
    assert not any(k.startswith("mlflow.") for k in record["tags"])  # no user name, no script path
    assert "hyps/test.beam1.jsonl" in record["artifacts"]
    assert not any(k.startswith("model/") for k in record["artifacts"])  # never the weights
    assert record["artifacts"]["results.md"] == "../../results.md"  # the committed table, not a copy

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert import_records(uri, grid["root"]).imported == len(records)
    fresh = MlflowClient(uri)
    for run_id in a["ids"].values():
        old, new = source.get_run(run_id), fresh.get_run(run_id)
        assert new.data.params == old.data.params and new.data.metrics == old.data.metrics
        own_tags = {k: v for k, v in old.data.tags.items() if not k.startswith("mlflow.")}
        assert own_tags.items() <= new.data.tags.items()
        assert new.data.tags[RECORD_ID_TAG] == run_id and new.info.status == "FINISHED"
        for key in old.data.metrics:
            history = [(m.step, m.value) for m in source.get_metric_history(run_id, key)]
            assert [(m.step, m.value) for m in fresh.get_metric_history(run_id, key)] == history
    # the run's own repository: MLflow caches repositories by run id, and this process has
    # the source store's run of the same id
    repository = get_artifact_repository(fresh.get_run(a["ids"]["llm"]).info.artifact_uri)
    hyps = {f.path for f in repository.list_artifacts("hyps")}
    assert "hyps/test.beam1.jsonl" in hyps
    assert import_records(uri, grid["root"]).imported == 0
    experiment = fresh.get_experiment_by_name(record["experiment"]).experiment_id
    assert len(fresh.search_runs([experiment])) == len(records)


def test_a_decoding_from_another_checkout_is_scored_into_a_new_run(grid, tmp_path, monkeypatch):
    """DVC's run-cache restores a decode stage that ran in another checkout (a scratch clone):
    its run id is in that checkout's MLflow store only. Scoring records it as a new run here,
    with the scores and the record, instead of failing on the unknown id."""
    import shutil

    from slam.track.records import load_record

    b = grid["runs"]["b"]
    cfg = copy.deepcopy(b["cfg"])
    shutil.copytree(Path(cfg.train.dir), tmp_path / "exp")
    cfg.train.dir, cfg.score.dir = str(tmp_path / "exp"), str(tmp_path / "metrics")
    cfg.decode.dir, cfg.baseline.dir = str(tmp_path / "exp" / "hyps"), str(tmp_path / "exp" / "baseline")
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'here.db'}"
    foreign = "0" * 32
    (Path(cfg.decode.dir) / RUN_FILE).write_text(json.dumps({"mlflow_run_id": foreign}))
    monkeypatch.setenv("DVC_ROOT", str(grid["root"] / "dvc-without-lock"))
    monkeypatch.setenv("DVC_STAGE", "score")
    score(cfg)
    record = load_record(tmp_path / "metrics" / "asr" / "runs" / "llm")
    assert record["run_id"] != foreign
    run = MlflowClient(cfg.tracking.uri).get_run(record["run_id"])
    assert run.data.metrics["wer_test_beam1"] == pytest.approx(b["wer"]["llm"]["test.beam1"]["wer"])
    assert run.data.tags["system"] == "llm"


def test_a_broken_record_is_named(tmp_path):
    from slam.track.records import load_record

    (tmp_path / "record.json").write_text('{"format": 1, "run_id": "x"}')
    with pytest.raises(ValueError, match=r"record.json lacks \['experiment', 'params', 'metrics', 'tags'\]"):
        load_record(tmp_path)
