"""The paper's tables, rebuilt from the MLflow runs: ``slam tables`` (specs: params/tables.yaml).

A spec is declarative: which runs count (``filter`` on tags/params), the rows and columns the
table must have (each a match on tags/params, a column may bring its own metric), the metric,
its scale and format. A cell is the most recent FINISHED run (by start time) that matches the
filter, its row and its column and has the metric; with none it says "missing", so a table
never shows a number that no run produced. Every cell names its run, so it can be traced
and reproduced (the run's ``config.json``, ``git_commit`` tag and ``dvc.lock`` artifact).

Output per table: ``<out>/<name>.md`` (cells link to the run in the MLflow UI),
``<out>/<name>.csv`` (one line per cell, with its run id) and ``<out>/<name>.png`` (a heatmap).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from slam.track.records import RECORD_FILE, RECORD_PATH_TAG
from slam.utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_SPECS = "params/tables.yaml"
DEFAULT_OUT = "tables"
DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves the local store
MISSING = "missing"
ANY = "*"  # a match value that accepts any value (e.g. projector.k of a Q-Former row)
SEVERAL = "†"  # marks a cell where more than one finished run matched
CSV_FIELDS = ["table", "row", "column", "metric", "value", "display", "run_id", "experiment_id", "n_runs",
              "record"]
_SPEC_KEYS = {"name", "title", "filter", "metric", "scale", "format", "rows", "columns",
              "row_header", "note"}


@dataclass
class Entry:
    """One expected row or column: its label, what a run must carry, optionally its metric."""

    label: str
    match: dict[str, str] = field(default_factory=dict)
    metric: str | None = None


@dataclass
class TableSpec:
    name: str
    title: str
    rows: list[Entry]
    columns: list[Entry]
    filter: dict[str, str] = field(default_factory=dict)
    metric: str | None = None
    scale: float = 1.0
    format: str = "{:.1f}"
    row_header: str = ""
    note: str = ""


@dataclass
class Cell:
    metric: str
    value: float | None = None  # metric x scale; None: no run
    run_id: str = ""  # the run the value comes from ("": none)
    experiment_id: str = ""
    n_runs: int = 0  # finished runs that matched and had the metric
    record: str = ""  # the run's committed record folder (slam.track.records), relative to the repo

    @property
    def filled(self) -> bool:
        return bool(self.run_id)


@dataclass
class Table:
    spec: TableSpec
    cells: list[list[Cell]]  # [row][column]
    source: str  # where the runs came from, for the footnote

    def display(self, cell: Cell) -> str:
        return MISSING if cell.value is None else self.spec.format.format(cell.value)

    def column_labels(self) -> list[str]:
        """A column without a label (the single column of a one-metric table) shows its metric."""
        return [col.label or cell.metric for col, cell in zip(self.spec.columns, self.cells[0])]


# -- specs -------------------------------------------------------------------------------------
def as_match_value(value: Any) -> str:
    """Spec values as MLflow holds tags and params: ``str()`` of the config value."""
    return str(value)


def check_key(key: str, where: str) -> str:
    kind, _, name = str(key).partition(".")
    if kind not in ("tag", "param") or not name:
        raise ValueError(f"{where}: key {key!r} must be tag.<name> or param.<name>")
    return str(key)


def _match(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of tag./param. keys to values, got {raw!r}")
    return {check_key(k, where): as_match_value(v) for k, v in raw.items()}


def _entries(raw: Any, where: str) -> tuple[list[Entry], str]:
    """Rows or columns, and a header naming their keys.

    Either the shorthand ``{key: K, values: [...]}`` / ``{keys: [K1, K2], values: [[..], ..]}``
    (optional ``labels``), or a list of ``{label, match, metric}``. Omitted: one entry that
    matches everything (a table with a single column).
    """
    if raw is None:
        return [Entry(label="")], ""
    if isinstance(raw, dict):
        unknown = set(raw) - {"key", "keys", "values", "labels"}
        if unknown or ("key" in raw) == ("keys" in raw) or "values" not in raw:
            raise ValueError(f"{where}: give key (or keys), values and optionally labels")
        keys = [check_key(k, where) for k in ([raw["key"]] if "key" in raw else raw["keys"])]
        labels = raw.get("labels")
        if labels is not None and len(labels) != len(raw["values"]):
            raise ValueError(f"{where}: {len(labels)} labels for {len(raw['values'])} values")
        entries = []
        for i, value in enumerate(raw["values"]):
            values = value if "keys" in raw and isinstance(value, list) else [value]
            if len(values) != len(keys):
                raise ValueError(f"{where}: value {value!r} does not give one value per key {keys}")
            label = labels[i] if labels else " / ".join(as_match_value(v) for v in values)
            entries.append(Entry(str(label), dict(zip(keys, map(as_match_value, values)))))
        return entries, " / ".join(k.partition(".")[2] for k in keys)
    if isinstance(raw, list):
        entries = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or set(item) - {"label", "match", "metric"} or "label" not in item:
                raise ValueError(f"{where}[{i}]: expected {{label, match, metric}}, got {item!r}")
            entries.append(Entry(str(item["label"]), _match(item.get("match"), f"{where}[{i}]"),
                                 item.get("metric")))
        return entries, ""
    raise ValueError(f"{where}: expected a mapping or a list, got {raw!r}")


def parse_spec(raw: dict[str, Any]) -> TableSpec:
    name = raw.get("name") if isinstance(raw, dict) else None
    if not name:
        raise ValueError(f"table spec without a name: {raw!r}")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"table {name}: unknown keys {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}")
    rows, row_header = _entries(raw.get("rows"), f"table {name} rows")
    columns, _ = _entries(raw.get("columns"), f"table {name} columns")
    if raw.get("rows") is None or not rows or not columns:
        raise ValueError(f"table {name}: no rows or no columns")
    spec = TableSpec(name=str(name), title=str(raw.get("title", name)), rows=rows, columns=columns,
                     filter=_match(raw.get("filter"), f"table {name} filter"),
                     metric=raw.get("metric"), scale=float(raw.get("scale", 1.0)),
                     format=str(raw.get("format", "{:.1f}")),
                     row_header=str(raw.get("row_header", row_header)), note=str(raw.get("note", "")))
    for what, entries in (("row", rows), ("column", columns)):
        labels = [e.label for e in entries]
        if len(set(labels)) != len(labels):
            raise ValueError(f"table {name}: duplicate {what} labels {labels}")
    for row in rows:
        for col in columns:
            if not (col.metric or row.metric or spec.metric):
                raise ValueError(f"table {name}: no metric for row {row.label!r}, column {col.label!r}")
    try:
        spec.format.format(1.0)
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"table {name}: bad format {spec.format!r}: {exc}") from None
    return spec


def load_specs(path: str | Path = DEFAULT_SPECS) -> list[TableSpec]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table specs {path} do not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    specs = [parse_spec(t) for t in raw.get("tables") or []]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate table names {names}")
    return specs


def apply_where(specs: list[TableSpec], where: list[str]) -> None:
    """``key=value`` filters added to (or replacing those of) every table, e.g. tag.profile=micro."""
    for item in where:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--where {item!r}: expected key=value")
        check_key(key, f"--where {item!r}")
        for spec in specs:
            spec.filter[key] = value


# -- runs and cells ----------------------------------------------------------------------------
def fetch_runs(tracking_uri: str, experiment: str) -> list[Run]:
    """Every FINISHED run of the experiment (none if it does not exist yet)."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        log.warning("no experiment %r in %s: every cell will be missing", experiment, tracking_uri)
        return []
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                  max_results=1000, order_by=["attributes.start_time DESC"],
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def run_value(run: Run, key: str) -> str | None:
    kind, _, name = key.partition(".")
    return (run.data.tags if kind == "tag" else run.data.params).get(name)


def matches(run: Run, match: dict[str, str]) -> bool:
    return all(want == ANY or run_value(run, key) == want for key, want in match.items())


def build_table(spec: TableSpec, runs: list[Run], source: str = "") -> Table:
    wanted = [r for r in runs if r.info.status == "FINISHED" and matches(r, spec.filter)]
    cells = []
    for row in spec.rows:
        line = []
        for col in spec.columns:
            metric = col.metric or row.metric or spec.metric or ""
            # a column's metric may name a per-row part: "cider_d_test_{row}" + row metric "refine"
            metric = metric.replace("{row}", row.metric or "")
            found = [r for r in wanted if matches(r, row.match) and matches(r, col.match)
                     and metric in r.data.metrics]
            # most recent first; the run id breaks ties so the choice is deterministic
            found.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id), reverse=True)
            cell = Cell(metric=metric, n_runs=len(found))
            if found:
                cell.run_id, cell.experiment_id = found[0].info.run_id, found[0].info.experiment_id
                cell.record = found[0].data.tags.get(RECORD_PATH_TAG, "")
                cell.value = found[0].data.metrics[metric] * spec.scale
            line.append(cell)
        cells.append(line)
    return Table(spec, cells, source)


def committed_cells(out_dir: Path, name: str) -> dict[tuple[str, str], Cell]:
    """The filled cells of the table as written before (``<name>.csv``), by (row, column).

    An MLflow store holds the runs of one machine; the committed tables are all a fresh clone
    has of the others'. Tables written before the CSV kept experiment ids take them from the
    markdown's links."""
    path = out_dir / f"{name}.csv"
    if not path.is_file():
        return {}
    md = (out_dir / f"{name}.md").read_text() if (out_dir / f"{name}.md").is_file() else ""
    cells = {}
    for row in csv.DictReader(io.StringIO(path.read_text())):
        if not row.get("run_id") or not row.get("value"):
            continue
        experiment = row.get("experiment_id") or next(
            iter(re.findall(rf"/experiments/([^/]+)/runs/{re.escape(row['run_id'])}\b", md)), "")
        cells[row["row"], row["column"]] = Cell(row["metric"], float(row["value"]), row["run_id"], experiment,
                                                int(row.get("n_runs") or 1),
                                                row.get("record") or "")  # fmt: skip
    return cells


def keep_committed(table: Table, committed: dict[tuple[str, str], Cell]) -> int:
    """Fill each cell the store has no run for from the committed table (same row, column and
    metric), so an empty or partial store never turns a filled cell into "missing". Returns
    how many cells were kept."""
    kept = 0
    for row, cells in zip(table.spec.rows, table.cells):
        for j, (label, cell) in enumerate(zip(table.column_labels(), cells)):
            old = committed.get((row.label, label))
            if not cell.filled and old is not None and old.metric == cell.metric:
                cells[j] = old
                kept += 1
    return kept


# -- rendering ---------------------------------------------------------------------------------
def run_url(ui_url: str, cell: Cell) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{cell.experiment_id}/runs/{cell.run_id}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(table: Table, ui_url: str = DEFAULT_UI) -> str:
    spec = table.spec
    col_labels = table.column_labels()
    lines = [f"## {_md(spec.title)}", "",
             "| " + " | ".join(_md(h) for h in [spec.row_header or "", *col_labels]) + " |",
             "|---" * (1 + len(col_labels)) + "|"]
    for row, cells in zip(spec.rows, table.cells):
        shown = []
        for cell in cells:
            if not cell.filled:
                shown.append(MISSING)
                continue
            mark = SEVERAL if cell.n_runs > 1 else ""
            record = f", [record](../{cell.record}/{RECORD_FILE})" if cell.record else ""
            link = f"[{cell.run_id[:7]}]({run_url(ui_url, cell)})"
            shown.append(f"{table.display(cell)}{mark} ({link}{record})")
        lines.append("| " + " | ".join([_md(row.label), *shown]) + " |")
    metrics = sorted({c.metric for cells in table.cells for c in cells})
    scale = f" × {spec.scale:g}" if spec.scale != 1 else ""
    filters = ", ".join(f"{k} = {v}" for k, v in spec.filter.items()) or "none"
    lines += ["", f"Metric: {', '.join(f'`{m}`' for m in metrics)}{scale}. "
              f"Runs: FINISHED runs of {table.source or 'the MLflow store'} with {filters}; "
              f"each row and column adds its own tags/params (params/tables.yaml, `{spec.name}`).",
              "",
              f"Each cell is the most recent finished run (by start time) that matches, with its "
              f"run id (its page in `make ui`) and its committed record; {SEVERAL} marks cells "
              f"where several runs matched (count in `{spec.name}.csv`). "
              f"\"{MISSING}\": no finished run matches."]
    if spec.note:
        lines += ["", spec.note.strip()]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row, cells in zip(table.spec.rows, table.cells):
        for label, cell in zip(table.column_labels(), cells):
            writer.writerow({"table": table.spec.name, "row": row.label, "column": label,
                             "metric": cell.metric, "value": "" if cell.value is None else repr(cell.value),
                             "display": table.display(cell), "run_id": cell.run_id,
                             "experiment_id": cell.experiment_id, "n_runs": cell.n_runs,
                             "record": cell.record})
    return out.getvalue()


def render_png(table: Table, path: Path) -> Path:
    """A heatmap of the cells (grey where missing), each annotated with its value and run."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    spec = table.spec
    values = np.array([[math.nan if c.value is None else c.value for c in cells] for cells in table.cells],
                      dtype=float).reshape(len(spec.rows), len(spec.columns))
    fig, ax = plt.subplots(figsize=(max(5.5, 2.5 + 1.9 * len(spec.columns)), 1.6 + 0.55 * len(spec.rows)))
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#dddddd")  # lower WER reads lighter
    filled = values[~np.isnan(values)]
    vmin, vmax = (float(filled.min()), float(filled.max())) if filled.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", vmin=vmin,
                      vmax=vmax if vmax > vmin else vmin + 1)
    for i, cells in enumerate(table.cells):
        for j, cell in enumerate(cells):
            text = MISSING if not cell.filled else f"{table.display(cell)}\n{cell.run_id[:7]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_xticks(range(len(spec.columns)), table.column_labels(), rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(spec.rows)), [r.label for r in spec.rows], fontsize=8)
    ax.set_ylabel(spec.row_header)
    ax.set_title(spec.title, fontsize=9, wrap=True)
    if filled.size:
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


# -- the command -------------------------------------------------------------------------------
def make_tables(
    specs_path: str | Path = DEFAULT_SPECS,
    out_dir: str | Path = DEFAULT_OUT,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    names: list[str] | None = None,
    where: list[str] | None = None,
    ui_url: str | None = None,
    png: bool = True,
) -> dict[str, Table]:
    """Build every table of ``specs_path`` (or those in ``names``) and write md, csv and png."""
    from slam.config import SlamConfig
    from slam.track.tracking import tracking_uri as default_uri

    specs = load_specs(specs_path)
    if names:
        unknown = set(names) - {s.name for s in specs}
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}; known: {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in names]
    apply_where(specs, where or [])
    defaults = SlamConfig()
    uri = tracking_uri or default_uri(defaults)
    experiment = experiment or defaults.tracking.experiment
    if ui_url is None:  # a server's runs link to that server, a local store to `make ui`
        ui_url = uri if uri.startswith(("http://", "https://")) else DEFAULT_UI
    runs = fetch_runs(uri, experiment)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {}
    for spec in specs:
        table = build_table(spec, runs, source=f"MLflow experiment `{experiment}`")
        kept = keep_committed(table, committed_cells(out, spec.name))
        if kept:
            log.info("%s: %d cells kept from the committed table (no run for them in %s)",
                     spec.name, kept, uri)
        atomic_write_text(out / f"{spec.name}.md", render_markdown(table, ui_url))
        atomic_write_text(out / f"{spec.name}.csv", render_csv(table))
        if png:
            render_png(table, out / f"{spec.name}.png")
        tables[spec.name] = table
    return tables
