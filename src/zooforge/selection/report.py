"""Self-contained reports of a ranking or an audit: tables, score-vs-GMACs plots, provenance.

``.html`` gives one file with the plots embedded (base64 PNG); ``.md`` gives Markdown with the PNGs
written next to it in ``<stem>_files/``. Provenance: the library versions, each dataset's
fingerprint, the estimators and their settings (bootstrap rounds, seed, subsampling), and for an audit
the plan it ran and the versions it ran with (``<folder>.plan.json`` beside the audit folder).
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from zooforge.errors import ZooforgeError
from zooforge.formatting import format_value

__all__ = ["write_report", "ranking_report", "audit_report"]

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.best td{background:#eef8ee}.err{color:#b00}.dim{color:#777}
img{max-width:100%}code{background:#f5f5f5;padding:0 .2em}
.scroll{overflow-x:auto;max-width:100%}td{white-space:nowrap}td.l{white-space:normal;min-width:12em}"""


def _metrics_of(table: pl.DataFrame) -> list[str]:
    return [c[:-len("_rank")] for c in table.columns if c.endswith("_rank") and c != "mean_rank"]


class _Doc:
    """Accumulates sections and renders them as HTML or Markdown."""

    def __init__(self, title: str):
        self.title, self.blocks = title, []

    def heading(self, text: str, level: int = 2):
        self.blocks.append(("h", level, text))

    def para(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]], best: list[bool] | None = None):
        self.blocks.append(("t", header, rows, best or [False] * len(rows)))

    @staticmethod
    def _numeric(rows: list[list[str]], col: int) -> bool:
        """Right-align a column whose cells are all numbers, intervals or blanks."""
        def number(text: str) -> bool:
            try:
                float(text.strip("[]").split(",")[0])
                return True
            except ValueError:
                return text in ("–", "", "yes")
        return bool(rows) and all(number(r[col]) for r in rows)

    def image(self, png: bytes, name: str, alt: str):
        self.blocks.append(("i", png, name, alt))

    def pre(self, text: str):
        self.blocks.append(("pre", text))

    def html(self) -> str:
        out = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.title)}</title><style>{_CSS}</style>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "pre":
                out.append(f"<pre>{html.escape(b[1])}</pre>")
            elif b[0] == "i":
                out.append(f"<img alt='{html.escape(b[3])}' src='data:image/png;base64,{base64.b64encode(b[1]).decode()}'>")
            else:
                _, header, rows, best = b
                cls = ["" if self._numeric(rows, i) else "l" for i in range(len(header))]
                out.append("<div class='scroll'><table><tr>" + "".join(f"<th class='{c}'>{html.escape(h)}</th>" for c, h in zip(cls, header)) + "</tr>")
                for row, is_best in zip(rows, best):
                    out.append(f"<tr class='{'best' if is_best else ''}'>" +
                               "".join(f"<td class='{c}'>{html.escape(v)}</td>" for c, v in zip(cls, row)) + "</tr>")
                out.append("</table></div>")     # a wide table scrolls inside the page, not past it
        return "\n".join(out) + "\n"

    def markdown(self, assets: Path, link_prefix: str) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "pre":
                out += ["```", b[1], "```", ""]
            elif b[0] == "i":
                assets.mkdir(parents=True, exist_ok=True)
                from zooforge.zoo.cache import atomic_write_bytes

                atomic_write_bytes(assets / b[2], b[1])
                out += [f"![{b[3]}]({link_prefix}/{b[2]})", ""]
            else:
                _, header, rows, best = b
                esc = lambda s: s.replace("|", "\\|")                      # noqa: E731
                out.append("| " + " | ".join(map(esc, header)) + " |")
                out.append("|" + "|".join("---:" if self._numeric(rows, i) else "---" for i in range(len(header))) + "|")
                for row, is_best in zip(rows, best):
                    cells = [esc(c) for c in row]
                    if is_best:
                        cells[0] = f"**{cells[0]}**"
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
        return "\n".join(out)


def _ranking_section(doc: _Doc, table: pl.DataFrame, title: str, budget_gmacs: float | None, slug: str) -> None:
    from zooforge.selection.plot import plot_ranking

    metrics = _metrics_of(table)
    header = ["rank", "model", "params (M)", "GMACs"]
    for m in metrics:
        header += [m] + ([f"{m} 90%"] if f"{m}_lo" in table.columns else [])
    p_col = "p_top1" if "p_top1" in table.columns else (f"{metrics[0]}_p_top1" if metrics else None)
    header += ["mean rank", "ensemble z", "Pareto"] + (["P(top-1)"] if p_col in table.columns else [])
    rows, best = [], []
    for r in table.iter_rows(named=True):
        cells = [format_value(r["rank"]), r["model"], format_value(r["params_m"], 3), format_value(r["gmacs"], 3)]
        for m in metrics:
            cells.append(format_value(r[m]))
            if f"{m}_lo" in table.columns:
                cells.append(f"[{format_value(r[f'{m}_lo'], 3)}, {format_value(r[f'{m}_hi'], 3)}]" if r[f"{m}_lo"] is not None else "–")
        cells += [format_value(r["mean_rank"], 3), format_value(r["ensemble_z"], 3), format_value(r.get("pareto"))]
        if header[-1] == "P(top-1)":
            cells.append(format_value(r.get(p_col), 2))
        rows.append(cells)
        best.append(bool(r.get("best_within_budget")))
    doc.table(header, rows, best)
    notes = [f"{r['model']}: {r['error']}" for r in table.iter_rows(named=True) if r.get("error")]
    notes += [f"{r['model']} skipped {r['skipped']}" for r in table.iter_rows(named=True) if r.get("skipped") and not r.get("error")]
    left_out = table["skipped_files"].max() if "skipped_files" in table.columns and table.height else 0
    if left_out:
        notes.append(f"{left_out} unreadable image file(s) were left out of the dataset (--skip-bad-files); "
                     f"every model was scored without them")
    if notes:
        doc.pre("\n".join(notes))
    if metrics and table.filter(pl.col(metrics[0]).is_not_null() & pl.col("gmacs").is_not_null()).height:
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_ranking(table, Path(tmp) / "plot.png", metrics[0], budget_gmacs, title)
            doc.image(png.read_bytes(), f"{slug}.png", f"{metrics[0]} vs GMACs")


def _provenance_section(doc: _Doc, provenance: dict) -> None:
    from zooforge.zoo.features import library_versions

    doc.heading("Provenance")
    settings = provenance.get("settings", {})
    if settings:
        doc.table(["setting", "value"], [[k, json.dumps(v)] for k, v in settings.items()])
    fingerprints = provenance.get("datasets", {})
    if fingerprints:
        doc.table(["dataset", "fingerprint (sha256)"], [[k, v or "–"] for k, v in fingerprints.items()])
    versions = provenance.get("versions") or library_versions()
    doc.table(["library", "version"], [[k, v] for k, v in versions.items()])
    if provenance.get("plan"):
        doc.para("Audit plan:")
        doc.pre(json.dumps(provenance["plan"], indent=2, default=str))
    doc.para(f"Report written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by zooforge.")


def _write(doc: _Doc, path: Path) -> Path:
    from zooforge.zoo.cache import atomic_write_bytes

    path = Path(path)
    if path.suffix == ".html":
        atomic_write_bytes(path, doc.html().encode())
    elif path.suffix == ".md":
        assets = path.with_name(f"{path.stem}_files")
        atomic_write_bytes(path, doc.markdown(assets, assets.name).encode())
    else:
        raise ZooforgeError(f"unsupported report type {path.suffix!r}: use .html or .md.")
    return path


def ranking_report(table: pl.DataFrame, path: str | Path, *, title: str | None = None, settings: dict | None = None,
                   budget_gmacs: float | None = None) -> Path:
    """A report of one ranking table (:func:`zooforge.selection.rank`)."""
    dataset = table["dataset"][0] if "dataset" in table.columns and table.height else None
    title = title or f"zooforge ranking{f' on {dataset}' if dataset else ''}"
    doc = _Doc(title)
    doc.para(f"{table.height} model(s); estimators: {', '.join(_metrics_of(table))}. Higher scores are better; "
             f"rows are ordered by {table['ordering'][0] if 'ordering' in table.columns and table.height else 'mean rank'}. "
             "The shaded row is the best model within budget.")
    _ranking_section(doc, table, title, budget_gmacs, "ranking")
    fingerprints = {}
    if "dataset_fingerprint" in table.columns and table.height:
        fingerprints[dataset or "dataset"] = table["dataset_fingerprint"][0]
    _provenance_section(doc, {"settings": settings or {}, "datasets": fingerprints})
    return _write(doc, path)


def audit_report(audit: str | Path, path: str | Path, *, title: str | None = None) -> Path:
    """A report of an audit folder: one ranking per dataset, a model x dataset summary, failures,
    and the plan and versions it ran with."""
    from zooforge.selection.audit import audit_generations, audit_tables, read_audit, read_provenance

    audit = Path(audit)
    table = read_audit(audit)                  # the latest plan's cells: earlier generations stay on disk
    provenance = read_provenance(audit)
    older = audit_generations(audit)[1]
    if table.height == 0:
        raise ZooforgeError(f"the audit at {audit} has no finished cells yet.")
    tables = audit_tables(table)
    doc = _Doc(title or f"zooforge audit: {table['model'].n_unique()} models × {len(tables)} datasets")
    ok = table.filter(pl.col("status") == "ok").height
    failed = table.filter(pl.col("status") == "error").select("model", "dataset", "reason").unique(maintain_order=True)
    if older:
        doc.para(f"This report covers the latest plan's cells (settings {provenance.get('settings_digest')}); "
                 f"{len(older)} part(s) of earlier plans (other settings, models or datasets) stay in the folder "
                 f"and are left out: read them with read_audit(..., generation='all').")
    doc.para(f"{table.select('model', 'dataset').unique().height} cell(s), {ok} estimator score(s), "
             f"{failed.height} failed cell(s). Summary: each model's mean rank across estimators, per dataset "
             "(1 = best; – = failed or unscored).")
    models = sorted(table["model"].unique().to_list())
    header = ["model", *tables, "average"]
    rows = []
    for m in models:
        ranks = [t.filter(pl.col("model") == m)["mean_rank"].to_list() for t in tables.values()]
        values = [r[0] if r and r[0] is not None and r[0] == r[0] else None for r in ranks]
        finite = [v for v in values if v is not None]
        rows.append([m, *[format_value(v, 3) for v in values], format_value(sum(finite) / len(finite), 3) if finite else "–"])
    doc.table(header, rows)
    if failed.height:
        doc.heading("Failed cells")
        doc.table(["model", "dataset", "error"], [list(r) for r in failed.iter_rows()])
    for i, (dataset, t) in enumerate(tables.items()):
        doc.heading(f"Ranking on {dataset}")
        _ranking_section(doc, t, dataset, None, f"dataset-{i}")
    provenance["datasets"] = {d: next((f for f in table.filter(pl.col("dataset") == d)["dataset_fingerprint"].to_list()
                                       if f), None) for d in tables}
    _provenance_section(doc, provenance)
    return _write(doc, path)


def select_report(folder: str | Path, path: str | Path, *, title: str | None = None) -> Path:
    """A report of a ``select --out`` folder: the choice and the compute spent, every round, the
    validation accuracy by round, and the ranking it started from."""
    from zooforge.selection.plot import plot_rounds
    from zooforge.selection.rank import read_table
    from zooforge.selection.select import decision_sentence

    folder = Path(folder)
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError) as exc:
        raise ZooforgeError(f"{folder}/result.json: not readable ({exc}); give a folder written by `zooforge select --out`.") from None
    doc = _Doc(title or "zooforge select")
    doc.heading("Choice")
    doc.para(f"Chose {result['model']} (validation accuracy {format_value(result['val_accuracy'])}) after "
             f"{len(result['rounds'])} trial(s) over {len(result['entrants'])} entrant(s) "
             f"({', '.join(result['entrants'])}); spent {100 * result['spent_fraction']:.1f}% of the compute of fully "
             f"fine-tuning every model ({result['spent']:.4g} of {result['fine_tune_all']:.4g} GMAC), "
             f"{result['seconds']:.1f} s. Validation: 20% of the training data; no test split was read. "
             f"{decision_sentence(result.get('decision') or {})}")
    doc.table(["round", "model", "epochs", "validation accuracy", "seconds"],
              [[str(r["round"]), r["model"], str(r["epochs"]), format_value(r["val_accuracy"]),
                format_value(r.get("seconds"), 3)] for r in result["rounds"]],
              [r["model"] == result["model"] for r in result["rounds"]])
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_rounds(result["rounds"], Path(tmp) / "rounds.png", chosen=result["model"])
        doc.image(png.read_bytes(), "rounds.png", "validation accuracy by round")
    if (folder / "ranking.parquet").is_file():
        doc.heading("The ranking it started from")
        _ranking_section(doc, read_table(folder / "ranking.parquet", "ranking"), "ranking", None, "ranking")
    _provenance_section(doc, {})
    return _write(doc, path)


def write_report(source: pl.DataFrame | str | Path, path: str | Path, **kwargs) -> Path:
    """A report of a ranking table (a frame, or a .csv/.json/.parquet file), an audit folder or a
    ``select --out`` folder."""
    if isinstance(source, pl.DataFrame):
        return ranking_report(source, path, **kwargs)
    source = Path(source)
    if source.is_dir() and (source / "result.json").is_file() and (source / "trials.jsonl").exists():
        return select_report(source, path, **kwargs)
    if source.is_dir():
        return audit_report(source, path, **kwargs)
    from zooforge.selection.rank import TABLE_READERS, read_table

    if source.suffix not in TABLE_READERS or not source.is_file():
        raise ZooforgeError(f"{source}: give a ranking table (.csv/.json/.parquet) or an audit folder.")
    table = read_table(source, "ranking")
    needed = {"model", "rank", "mean_rank"} - set(table.columns)
    if needed:
        raise ZooforgeError(f"{source}: not a ranking (no column(s) {sorted(needed)}); give a table written by "
                            f"`zooforge rank --out` or an audit folder.")
    return ranking_report(table, path, **kwargs)

