"""Every result file of a run, written from two tables and a little metadata.

:func:`write_reports` is all a run folder needs: the sweep computes ``per_image`` and ``summary``,
this module writes the CSVs, the CTC result CSVs, the spreadsheet and the plots. The metadata goes
to ``report_meta.json`` beside them, so ``tools/rebuild_report.py`` can write identical files again
from a run folder or an MLflow run, without recomputing anything.

A rebuild must give the run's numbers or none: :func:`load_run_tables` checks what it reads (the row count
and sha256 of each table that ``report_meta.json`` records, the columns the reports need, the metadata's
fields and types) and names the file that fails, with what to do (:class:`ReportFilesError`), so a
truncated table never becomes a report with QPs missing.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import re
import typing
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from vcm_eval.columns import STAGE_COLUMNS
from vcm_eval.errors import SettingError
from vcm_eval.evaluation.summary import bd_table
from vcm_eval.reporting.plots import rate_accuracy_plot, rate_split_plot
from vcm_eval.reporting.tables import write_result_tables, write_run_tables
from vcm_eval.reporting.xlsx import write_workbook

log = logging.getLogger(__name__)

PER_IMAGE_CSV, SUMMARY_CSV, META_JSON = "per_image.csv", "summary.csv", "report_meta.json"

#: what to do about damaged report files wherever they came from (a run folder or its MLflow copy)
RERUN_FIX = ("run the sweep's command again (its results are in its store, so nothing is recomputed and the files "
             "are written again)")
#: what to do when a run folder's report files are damaged
REBUILD_FIX = f"rebuild from the run's MLflow copy (tools/rebuild_report.py --mlflow-run <run id>) or {RERUN_FIX}"

METRIC_LABELS = {"map_50": "mAP@0.5", "map_50_95": "mAP@[.5:.95]", "map_75": "mAP@0.75",
                 "segm_map_50": "mask mAP@0.5", "segm_map_50_95": "mask mAP@[.5:.95]", "segm_map_75": "mask mAP@0.75"}

#: summary columns that are accuracy metrics (box mAP ``map_*``, and mask mAP ``segm_map_*`` under segmentation),
#: the columns of the spreadsheet's entry sheets and of the MLflow runs' metrics
METRIC_PREFIXES = ("map_", "segm_map_")


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """The accuracy metric columns of ``summary`` (:data:`METRIC_PREFIXES`), in its order."""
    return [c for c in summary.columns if c.startswith(METRIC_PREFIXES)]


@dataclass
class ReportMeta:
    """What the report files need besides the tables.

    Attributes:
        ctc, dataset, model, codec: names shown in titles and file names.
        metric: the headline accuracy column (``map_50``; ``segm_map_50`` when the task is segmentation).
        anchors: entry names compared against (BD-rate references), in order.
        entries: every entry name, in order.
        bd_min_points, bd_min_overlap, bd_saturation_tolerance: BD validity settings.
        finished: run finish time, ISO format; stamped into the spreadsheet so rebuilds are identical.
        config: the flattened resolved configuration (and provenance), for the ``config`` sheet.
        tables: the row count and sha256 of each table file as :func:`write_reports` wrote it
            (``{"summary.csv": {"rows": 9, "sha256": "..."}, ...}``), so a rebuild can tell the complete file
            from a truncated or changed one; empty in run folders written before it was recorded.
    """

    ctc: str
    dataset: str
    model: str
    codec: str
    metric: str
    anchors: list[str]
    entries: list[str]
    bd_min_points: int = 4
    bd_min_overlap: float = 0.1
    bd_saturation_tolerance: float = 0.0
    finished: str = "2000-01-01T00:00:00"
    config: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> ReportMeta:
        """Read ``report_meta.json``, checking every field is there with its type before anything is built on it.

        Raises:
            ReportFilesError: unreadable, not JSON, or a field missing, unknown or of the wrong type.
        """
        path = Path(path)
        _, text = _read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportFilesError(path, f"is not valid JSON ({exc})") from None
        return cls(**_checked_fields(path, data))


#: fields added after the first run folders were written: those folders may lack them, and the default is
#: what those runs did
_ADDED_LATER = frozenset({"bd_saturation_tolerance", "tables"})


class ReportFilesError(SettingError):
    """A file of a run folder that a rebuild cannot use: missing, unreadable, incomplete or not what was written.

    Its message is one line, ``<path>: <what is wrong>; <what to do>``, so the user knows which file failed and
    how to get the report back; ``path``, ``problem`` and ``fix`` are kept for a caller that names the source
    otherwise (files downloaded from an MLflow run).
    """

    def __init__(self, path: Path | str, problem: str, fix: str = REBUILD_FIX) -> None:
        self.path, self.problem, self.fix = path, " ".join(problem.split()), fix
        super().__init__(f"{path}: {self.problem}; {fix}")


def write_reports(out_dir: Path, per_image: pd.DataFrame, summary: pd.DataFrame,
                  meta: ReportMeta) -> tuple[dict[str, Path], pd.DataFrame]:
    """Write every report file of a run into ``out_dir``; returns the paths by name and the BD table.

    The two tables and ``report_meta.json`` (with the row count and sha256 of each table, which
    :func:`load_run_tables` checks) are written first: everything else is computed from them, so a failure
    while writing the rest (a full disk) still leaves a folder that ``tools/rebuild_report.py`` can finish.
    """
    per_image, summary = normalise(per_image), normalise(summary)
    files = write_run_tables(out_dir, per_image, summary)
    meta = replace(meta, tables={files[name].name: {"rows": len(table), "sha256": _sha256(files[name].read_bytes())}
                                 for name, table in (("per_image", per_image), ("summary", summary))})
    files["report_meta"] = meta.save(out_dir / META_JSON)
    bd = run_bd(summary, meta)
    files.update(write_result_tables(out_dir, summary, bd, dataset=meta.dataset, metric=meta.metric))
    title = f"{meta.ctc} CTC: {meta.dataset}, {meta.model}, {meta.codec}"
    files["rd_plot"] = rate_accuracy_plot(out_dir / "rd_curve.png", summary, metric=meta.metric,
                                          metric_label=meta.metric_label, title=title)
    split = rate_split_plot(out_dir / "rate_split.png", summary, title=f"rate split per level: {title}")
    if split:
        files["rate_split"] = split
    xlsx = out_dir / f"ctc_{meta.ctc}_{meta.dataset}.xlsx"
    write_workbook(xlsx, summary=summary, bd=bd, per_image=per_image, config=meta.config, anchors=meta.anchors,
                   tests=[e for e in meta.entries if e not in meta.anchors], metric=meta.metric,
                   metric_columns=metric_columns(summary))
    files["xlsx"] = _stamp_xlsx(xlsx, meta.finished)
    return files, bd


def run_bd(summary: pd.DataFrame, meta: ReportMeta) -> pd.DataFrame:
    """The BD table of a run: every entry against every anchor, with the run's validity settings."""
    return bd_table(summary, meta.anchors, meta.entries, meta.metric, min_points=meta.bd_min_points,
                    min_overlap=meta.bd_min_overlap, saturation_tolerance=meta.bd_saturation_tolerance)


def normalise(table: pd.DataFrame) -> pd.DataFrame:
    """QP as a nullable integer (empty for the uncompressed reference), so tables written, read back
    and written again give the same text."""
    table = table.copy()
    if "qp" in table:
        table["qp"] = pd.array(table["qp"], dtype="Int64")
    return table


def load_run_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, ReportMeta]:
    """The two tables and the metadata of a finished run folder, checked before a report is built on them.

    Each table must be the file :func:`write_reports` wrote (its row count and sha256 in ``report_meta.json``)
    and hold the columns the reports are computed from. Folders written before those facts were recorded are
    checked for their columns only, with a warning that their completeness cannot be.

    Raises:
        ReportFilesError: a file missing or damaged, naming it and what to do.
    """
    run_dir = Path(run_dir)
    missing = [n for n in (PER_IMAGE_CSV, SUMMARY_CSV, META_JSON) if not (run_dir / n).is_file()]
    if missing:
        raise ReportFilesError(run_dir, f"not a finished vcm_eval run folder (missing {', '.join(missing)})")
    meta = ReportMeta.load(run_dir / META_JSON)
    if not meta.tables:
        log.warning("%s records no row counts or checksums of the tables (written by an older vcm_eval): their "
                    "columns are checked, but whether they are complete cannot be", run_dir / META_JSON)
    per_image = _read_table(run_dir / PER_IMAGE_CSV, meta.tables.get(PER_IMAGE_CSV),
                            text=("image_id", "entry", "role"), numbers=("qp",), dtype={"image_id": str})
    summary = _read_table(run_dir / SUMMARY_CSV, meta.tables.get(SUMMARY_CSV), text=("entry", "role"),
                          numbers=("qp", "num_images", "avg_bpp", meta.metric, *STAGE_COLUMNS))
    return per_image, summary, meta


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_text(path: Path) -> tuple[bytes, str]:
    """The bytes of a report input file and their text, or the error naming it (empty, not UTF-8, unreadable)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportFilesError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise ReportFilesError(path, "is empty")
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportFilesError(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") \
            from None


def _read_table(path: Path, facts: dict[str, Any] | None, *, text: tuple[str, ...], numbers: tuple[str, ...],
                **read_options: Any) -> pd.DataFrame:
    """One table of a run folder, normalised, after checking it is the file that was written (``facts``: its
    recorded row count and sha256; None for an older folder) and holds the columns ``text`` and ``numbers``."""
    data, content = _read_text(path)
    try:
        # round_trip: pandas' default float parser can miss the last bit of what to_csv wrote
        table = pd.read_csv(io.StringIO(content), float_precision="round_trip", **read_options)
    except ValueError as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        table, problem = None, f"is not a CSV table ({exc})"
    else:
        problem = _columns_problem(table, text, numbers)
    if facts is not None and _sha256(data) != facts["sha256"]:
        if table is not None and len(table) != facts["rows"]:
            problem = f"has {len(table)} rows where {META_JSON} records {facts['rows']} (truncated or edited)"
        problem = problem or f"is not the file that was written (its sha256 differs from the one {META_JSON} records)"
    if problem:
        raise ReportFilesError(path, problem)
    try:
        return normalise(table)
    except (TypeError, ValueError):  # a QP that is not a whole number
        raise ReportFilesError(path, "column qp holds values that are not whole numbers") from None


def _columns_problem(table: pd.DataFrame, text: tuple[str, ...], numbers: tuple[str, ...]) -> str | None:
    """What keeps the reports from being computed from ``table`` (a column missing, or not numbers; no rows)."""
    lacking = [c for c in text + numbers if c not in table.columns]
    if lacking:
        return f"lacks column(s) {', '.join(lacking)}"
    not_numbers = [c for c in numbers if not pd.api.types.is_numeric_dtype(table[c])]
    if not_numbers:
        return f"column(s) {', '.join(not_numbers)} hold values that are not numbers"
    return "has no rows" if table.empty else None


def _checked_fields(path: Path, data: object) -> dict[str, Any]:
    """The fields of ``report_meta.json`` (parsed as ``data``) for :class:`ReportMeta`, after checking each is
    there (but those of :data:`_ADDED_LATER`) with the type the dataclass declares."""
    if not isinstance(data, dict):
        raise ReportFilesError(path, f"is not a JSON object (found {_shown(data)})")
    declared = {f.name: f for f in fields(ReportMeta)}
    hints = typing.get_type_hints(ReportMeta)
    missing = [n for n in declared if n not in data and n not in _ADDED_LATER]
    if missing:
        raise ReportFilesError(path, f"lacks field(s) {', '.join(missing)}")
    unknown = [k for k in data if k not in declared]
    if unknown:
        raise ReportFilesError(path, f"has unknown field(s) {', '.join(unknown)} (written by a newer vcm_eval?)")
    checked = {}
    for name, value in data.items():
        if not _is_a(value, hints[name]):
            raise ReportFilesError(path, f"field {name} must be {declared[name].type} (found {_shown(value)})")
        checked[name] = float(value) if hints[name] is float else value
    try:  # what _stamp_xlsx needs; a zip file holds no time before 1980
        finished_ok = datetime.datetime.strptime(checked["finished"][:19], "%Y-%m-%dT%H:%M:%S").year >= 1980
    except ValueError:
        finished_ok = False
    if not finished_ok:
        raise ReportFilesError(path, f"field finished must be a time like 2026-11-26T08:21:18, from 1980 on "
                                     f"(found {_shown(checked['finished'])})")
    tables = checked.get("tables", {})
    facts_ok = all(isinstance(f, dict) and set(f) == {"rows", "sha256"} and _is_a(f["rows"], int) and f["rows"] >= 0
                   and isinstance(f["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", f["sha256"])
                   for f in tables.values())
    if tables and (set(tables) != {PER_IMAGE_CSV, SUMMARY_CSV} or not facts_ok):
        raise ReportFilesError(path, f"field tables must give rows and sha256 of {PER_IMAGE_CSV} and {SUMMARY_CSV} "
                                     f"(found {_shown(tables)})")
    return checked


def _is_a(value: object, hint: object) -> bool:
    """Whether a value parsed from JSON is of the (ReportMeta field) type ``hint``; an int passes for a float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(_is_a(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items())
    if hint is Any:
        return True
    if isinstance(value, bool):  # JSON's true and false are not numbers
        return hint is bool
    return isinstance(value, (int, float) if hint is float else hint)


def _shown(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _stamp_xlsx(path: Path, timestamp: str) -> Path:
    """Give the workbook a fixed modification time (in its properties and its zip entries), so writing
    the same tables twice gives the same bytes; openpyxl stamps the current time otherwise."""
    stamp = timestamp[:19]
    date_time = tuple(int(x) for x in re.split(r"[-T:]", stamp))
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info, data in entries:
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(<)",
                              rb"\g<1>" + stamp.encode() + rb"Z\g<2>", data)
            fixed = zipfile.ZipInfo(info.filename, date_time=date_time)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            zout.writestr(fixed, data)
    return path
