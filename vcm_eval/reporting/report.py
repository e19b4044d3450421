"""Every result file of a run, written from two tables and a little metadata.

:func:`write_reports` is all a run folder needs: the sweep computes ``per_image`` and ``summary``,
this module writes the CSVs, the CTC result CSVs, the spreadsheet and the plots. The metadata goes
to ``report_meta.json`` beside them, so ``tools/rebuild_report.py`` can write identical files again
from a run folder or an MLflow run, without recomputing anything.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from vcm_eval.evaluation.summary import bd_table
from vcm_eval.reporting.plots import rate_accuracy_plot, rate_split_plot
from vcm_eval.reporting.tables import write_tables
from vcm_eval.reporting.xlsx import write_workbook

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

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> ReportMeta:
        return cls(**json.loads(Path(path).read_text()))


def write_reports(out_dir: Path, per_image: pd.DataFrame, summary: pd.DataFrame,
                  meta: ReportMeta) -> tuple[dict[str, Path], pd.DataFrame]:
    """Write every report file of a run into ``out_dir``; returns the paths by name and the BD table."""
    per_image, summary = normalise(per_image), normalise(summary)
    bd = bd_table(summary, meta.anchors, meta.entries, meta.metric, min_points=meta.bd_min_points,
                  min_overlap=meta.bd_min_overlap, saturation_tolerance=meta.bd_saturation_tolerance)
    files = write_tables(out_dir, per_image, summary, bd, dataset=meta.dataset, metric=meta.metric)
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
    files["report_meta"] = meta.save(out_dir / "report_meta.json")
    return files, bd


def normalise(table: pd.DataFrame) -> pd.DataFrame:
    """QP as a nullable integer (empty for the uncompressed reference), so tables written, read back
    and written again give the same text."""
    table = table.copy()
    if "qp" in table:
        table["qp"] = pd.array(table["qp"], dtype="Int64")
    return table


def load_run_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, ReportMeta]:
    """The two tables and the metadata of a finished run folder."""
    run_dir = Path(run_dir)
    missing = [n for n in ("per_image.csv", "summary.csv", "report_meta.json") if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: not a finished vcm_eval run folder (missing {', '.join(missing)})")
    # round_trip: pandas' default float parser can miss the last bit of what to_csv wrote
    per_image = pd.read_csv(run_dir / "per_image.csv", dtype={"image_id": str}, float_precision="round_trip")
    summary = pd.read_csv(run_dir / "summary.csv", float_precision="round_trip")
    return normalise(per_image), normalise(summary), ReportMeta.load(run_dir / "report_meta.json")


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
