"""Open Images annotation files: strict readers, the label map, the class hierarchy and its expansion.

Everything the Open Images Challenge metric (:mod:`vcm_eval.evaluation.openimages`) reads from disk
goes through here, so bad input is caught once, with the file, the line and the fix in the message.

Tables are pandas DataFrames with fixed columns (extra CSV columns are ignored):

* boxes: ``ImageID, LabelName, XMin, XMax, YMin, YMax, IsGroupOf, Line`` (coordinates normalised
  to [0, 1], ``IsGroupOf`` bool, ``Line`` the source line for messages);
* image-level labels: ``ImageID, LabelName, Confidence, Line`` (``Confidence`` 1 = verified present,
  0 = verified absent);
* detections: ``ImageID, LabelName, Score, XMin, XMax, YMin, YMax, Line``.

Values are parsed with Python's ``float``, which gives the same float64 as the ``pandas.read_csv``
the reference CLI uses. ImageIDs stay strings (pandas would turn an all-digit id into a number).

What counts as bad input and what happens to it:

* a row with the wrong number of fields, an empty or non-numeric value, NaN/inf, ``IsGroupOf`` or
  ``Confidence`` other than 0/1, a ground-truth box outside [0, 1] or with ``XMin > XMax`` /
  ``YMin > YMax``, a detection box outside [0, 1]: :class:`OpenImagesFormatError`;
* duplicated ground-truth box rows change the score (an extra instance to find): error, keep, or
  drop, as the caller chooses (``duplicates=``); the number found is always counted;
* duplicated or contradictory image-level label rows do not change the score (a class is verified
  by any label row): kept and counted;
* detections with ``XMin >= XMax`` or ``YMin >= YMax`` are kept here; the metric drops them, as the
  reference does, and counts them.

Counts go into a :class:`InputCounts` the caller passes in; callers report them.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from vcm_eval.errors import SettingError

log = logging.getLogger(__name__)

BOX_COLUMNS: tuple[str, ...] = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf")
LABEL_COLUMNS: tuple[str, ...] = ("ImageID", "LabelName", "Confidence")
DETECTION_COLUMNS: tuple[str, ...] = ("ImageID", "LabelName", "Score", "XMin", "XMax", "YMin", "YMax")
_COORDS: tuple[str, ...] = ("XMin", "XMax", "YMin", "YMax")

#: How many offending lines an error message quotes before "and N more".
_SHOW = 5


class OpenImagesFormatError(SettingError):
    """An Open Images file is malformed or inconsistent; the message names the file, lines and fix."""


@dataclass
class InputCounts:
    """Counts of noteworthy rows met while reading and scoring (for warnings and results tables).

    Keys used: ``gt_box_duplicates``, ``gt_box_duplicates_dropped``, ``label_duplicates``,
    ``label_conflicts``, ``detections_unknown_label``, and the metric's own ``detections_*`` counts.
    """

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def merge(self, other: Mapping[str, int]) -> None:
        for key, n in other.items():
            self.add(key, n)

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.counts.items()) if v}


# ----------------------------------------------------------------------------------------------
# CSV reading


def _lines_message(path: Path, lines: Sequence[int], what: str, fix: str) -> str:
    shown = ", ".join(str(n) for n in lines[:_SHOW])
    more = f" and {len(lines) - _SHOW} more" if len(lines) > _SHOW else ""
    return f"{path}: {what} (line {shown}{more}). {fix}"


def _read_csv_rows(path: str | Path, required: Sequence[str], what: str) -> tuple[Path, dict[str, list], list]:
    """Read a CSV with a header; return its required columns as lists of strings plus line numbers.

    Blank lines are skipped (they carry no rows). Every other row must have as many fields as the
    header.
    """
    path = Path(path)
    if not path.is_file():
        raise OpenImagesFormatError(f"{path}: no such {what} file; check the path")
    columns: dict[str, list] = {c: [] for c in required}
    lines: list[int] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise OpenImagesFormatError(f"{path}: empty file; a {what} CSV starts with the header "
                                        f"{','.join(required)}")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise OpenImagesFormatError(
                f"{path}: the header lacks column(s) {missing}; a {what} CSV needs the columns "
                f"{','.join(required)} (found {','.join(header)})")
        index = [header.index(c) for c in required]
        bad: list[int] = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                bad.append(reader.line_num)
                continue
            for c, i in zip(required, index):
                columns[c].append(row[i])
            lines.append(reader.line_num)
        if bad:
            raise OpenImagesFormatError(_lines_message(
                path, bad, f"rows without exactly {len(header)} comma-separated fields",
                "Fix or remove those rows (a field holding a comma must be quoted)"))
    return path, columns, lines


def _parse_floats(path: Path, name: str, values: list[str], lines: list[int]) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    bad: list[int] = []
    for k, text in enumerate(values):
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            bad.append(lines[k])
        out[k] = v
    if bad:
        raise OpenImagesFormatError(_lines_message(path, bad, f"{name} is empty, not a number, NaN or inf",
                                                   f"Give every row a finite {name}"))
    return out


def _parse_flags(path: Path, name: str, values: list[str], lines: list[int]) -> np.ndarray:
    """0/1 column (``IsGroupOf``, ``Confidence``); "1.0"-style spellings are accepted."""
    out = np.empty(len(values), dtype=np.int64)
    bad: list[int] = []
    for k, text in enumerate(values):
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if v not in (0.0, 1.0):
            bad.append(lines[k])
            continue
        out[k] = int(v)
    if bad:
        raise OpenImagesFormatError(_lines_message(path, bad, f"{name} is not 0 or 1",
                                                   f"{name} must be 0 or 1 in every row"))
    return out


def _check_strings(path: Path, name: str, values: list[str], lines: list[int]) -> None:
    bad = [lines[k] for k, v in enumerate(values) if not v.strip()]
    if bad:
        raise OpenImagesFormatError(_lines_message(path, bad, f"{name} is empty", f"Give every row a {name}"))


def _check_coordinates(path: Path, frame: pd.DataFrame, *, allow_inverted: bool,
                       allow_out_of_range: bool = False) -> None:
    if not allow_out_of_range:
        coords = frame[list(_COORDS)].to_numpy()
        outside = ((coords < 0.0) | (coords > 1.0)).any(axis=1)
        if outside.any():
            raise OpenImagesFormatError(_lines_message(
                path, frame.Line[outside].tolist(), "box coordinates outside [0, 1]",
                "Open Images coordinates are fractions of the image width/height; convert pixel "
                "coordinates by dividing by the image size"))
    if not allow_inverted:
        inverted = (frame.XMin > frame.XMax) | (frame.YMin > frame.YMax)
        if inverted.any():
            raise OpenImagesFormatError(_lines_message(
                path, frame.Line[inverted].tolist(), "XMin > XMax or YMin > YMax",
                "The column order is XMin,XMax,YMin,YMax; check that the columns are not swapped"))


def read_gt_boxes(path: str | Path, *, duplicates: str = "error", counts: InputCounts | None = None) -> pd.DataFrame:
    """Read a ground-truth box CSV (``ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf``, more columns allowed).

    Args:
        path: the CSV file.
        duplicates: what to do with rows whose ImageID, LabelName, box and IsGroupOf repeat an
            earlier row: ``"error"``, ``"keep"`` (the reference evaluator counts each copy as an
            instance; hierarchy expansion legitimately makes such copies), or ``"drop"`` (keep the
            first). The number found is counted as ``gt_box_duplicates`` either way.
        counts: where to add the counts.

    Raises:
        OpenImagesFormatError: naming the file and lines, for any bad row (see the module docstring).
    """
    if duplicates not in ("error", "keep", "drop"):
        raise SettingError(f"duplicates must be 'error', 'keep' or 'drop', got {duplicates!r}")
    path, cols, lines = _read_csv_rows(path, BOX_COLUMNS, "ground-truth box")
    for name in ("ImageID", "LabelName"):
        _check_strings(path, name, cols[name], lines)
    frame = pd.DataFrame({
        "ImageID": pd.Series(cols["ImageID"], dtype=object),
        "LabelName": pd.Series(cols["LabelName"], dtype=object),
        **{c: _parse_floats(path, c, cols[c], lines) for c in _COORDS},
        "IsGroupOf": _parse_flags(path, "IsGroupOf", cols["IsGroupOf"], lines).astype(bool),
        "Line": np.asarray(lines, dtype=np.int64),
    })
    _check_coordinates(path, frame, allow_inverted=False)
    dup = frame.duplicated(list(BOX_COLUMNS), keep="first")
    n_dup = int(dup.sum())
    if counts is not None:
        counts.add("gt_box_duplicates", n_dup)
    if n_dup:
        if duplicates == "error":
            raise OpenImagesFormatError(_lines_message(
                path, frame.Line[dup].tolist(), f"{n_dup} box row(s) repeat an earlier row",
                "Each copy would count as one more object to detect; remove the copies. A file already "
                "expanded along a class hierarchy repeats boxes legitimately: then allow them "
                "(tools/oi_eval.py --duplicate-boxes keep; dataset.duplicate_boxes=keep)"))
        if duplicates == "drop":
            frame = frame[~dup].reset_index(drop=True)
            if counts is not None:
                counts.add("gt_box_duplicates_dropped", n_dup)
            log.warning("%s: dropped %d duplicated box row(s)", path, n_dup)
        else:
            log.warning("%s: %d box row(s) repeat an earlier row; each copy counts as an instance", path, n_dup)
    return frame


def read_image_labels(path: str | Path, *, counts: InputCounts | None = None) -> pd.DataFrame:
    """Read an image-level label CSV (``ImageID,LabelName,Confidence``, more columns allowed).

    Duplicated rows and contradictory rows (the same class both 0 and 1 on one image) are kept and
    counted (``label_duplicates``, ``label_conflicts``): either way the class is verified on the
    image, which is all the metric uses.

    Raises:
        OpenImagesFormatError: naming the file and lines, for any bad row.
    """
    path, cols, lines = _read_csv_rows(path, LABEL_COLUMNS, "image-level label")
    for name in ("ImageID", "LabelName"):
        _check_strings(path, name, cols[name], lines)
    frame = pd.DataFrame({
        "ImageID": pd.Series(cols["ImageID"], dtype=object),
        "LabelName": pd.Series(cols["LabelName"], dtype=object),
        "Confidence": _parse_flags(path, "Confidence", cols["Confidence"], lines),
        "Line": np.asarray(lines, dtype=np.int64),
    })
    n_dup = int(frame.duplicated(["ImageID", "LabelName", "Confidence"]).sum())
    n_conflict = int(frame.drop_duplicates(["ImageID", "LabelName", "Confidence"])
                     .duplicated(["ImageID", "LabelName"]).sum())
    if counts is not None:
        counts.add("label_duplicates", n_dup)
        counts.add("label_conflicts", n_conflict)
    if n_dup or n_conflict:
        log.warning("%s: %d duplicated and %d contradictory label row(s); kept (a class is verified "
                    "on an image by any label row)", path, n_dup, n_conflict)
    return frame


def read_detections(path: str | Path, *, allow_out_of_range: bool = False) -> pd.DataFrame:
    """Read a detection CSV (``ImageID,LabelName,Score,XMin,XMax,YMin,YMax``, more columns allowed).

    Args:
        allow_out_of_range: accept coordinates outside [0, 1] and score them as the reference
            evaluator does (it never checks); by default they are an error, since they usually
            mean pixel coordinates.

    Raises:
        OpenImagesFormatError: naming the file and lines, for any bad row.
    """
    path, cols, lines = _read_csv_rows(path, DETECTION_COLUMNS, "detection")
    for name in ("ImageID", "LabelName"):
        _check_strings(path, name, cols[name], lines)
    frame = pd.DataFrame({
        "ImageID": pd.Series(cols["ImageID"], dtype=object),
        "LabelName": pd.Series(cols["LabelName"], dtype=object),
        "Score": _parse_floats(path, "Score", cols["Score"], lines),
        **{c: _parse_floats(path, c, cols[c], lines) for c in _COORDS},
        "Line": np.asarray(lines, dtype=np.int64),
    })
    _check_coordinates(path, frame, allow_inverted=True, allow_out_of_range=allow_out_of_range)
    return frame


def check_labels_known(frame: pd.DataFrame, known: Iterable[str], path: str | Path, what: str) -> None:
    """Raise naming the file, lines and labels when ``frame.LabelName`` holds a label not in ``known``."""
    known = set(known)
    unknown = ~frame.LabelName.isin(known)
    if unknown.any():
        names = sorted(set(frame.LabelName[unknown]))
        raise OpenImagesFormatError(_lines_message(
            Path(path), frame.Line[unknown].tolist(), f"{what} label(s) {names[:_SHOW]} are not in the class list",
            "Use the class list (label map / class descriptions) that belongs to these annotations"))


def drop_unknown_detection_labels(frame: pd.DataFrame, known: Iterable[str], path: str | Path,
                                  counts: InputCounts | None = None) -> pd.DataFrame:
    """Drop detections whose label is not a class, counting them (``detections_unknown_label``).

    This cannot change the score: ground truth only holds known classes, so such a detection is
    never verified on its image and the metric would drop it anyway.
    """
    known = set(known)
    unknown = ~frame.LabelName.isin(known)
    n = int(unknown.sum())
    if counts is not None:
        counts.add("detections_unknown_label", n)
    if n:
        names = sorted(set(frame.LabelName[unknown]))
        log.warning("%s: %d detection(s) of label(s) not in the class list %s dropped (never verified, "
                    "so the score is unchanged)", path, n, names[:_SHOW])
    return frame[~unknown].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Class lists


@dataclass(frozen=True)
class Category:
    """One evaluated class: its label map id (>= 1), its label (MID or name), an optional display name."""

    id: int
    name: str
    display_name: str = ""


def check_categories(categories: Sequence[Category], source: str = "class list") -> list[Category]:
    """Sorted by id; raises on ids < 1 and on repeated ids or names."""
    cats = sorted(categories, key=lambda c: c.id)
    if not cats:
        raise OpenImagesFormatError(f"{source}: no classes")
    if cats[0].id < 1:
        raise OpenImagesFormatError(f"{source}: class ids start at 1, got {cats[0].id}")
    ids = [c.id for c in cats]
    names = [c.name for c in cats]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        rep = sorted({x for x in ids if ids.count(x) > 1}) or sorted({x for x in names if names.count(x) > 1})
        raise OpenImagesFormatError(f"{source}: repeated class id or name {rep[:_SHOW]}; each class once")
    return cats


_PBTXT_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}:])|([^\s{}:#"\']+))')


def read_labelmap(path: str | Path) -> list[Category]:
    """Read a TF ``StringIntLabelMap`` text proto: ``item { name: "<label>" id: <int> display_name: "..." }``.

    Raises:
        OpenImagesFormatError: for a file that does not parse, an item without ``name`` or ``id``,
            or repeated ids/names.
    """
    path = Path(path)
    if not path.is_file():
        raise OpenImagesFormatError(f"{path}: no such label map file; check the path")
    text = path.read_text(encoding="utf-8")
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _PBTXT_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise OpenImagesFormatError(f"{path}: cannot parse the label map near {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group(1):
            continue
        tokens.append(m.group(2) or m.group(3) or m.group(4))
    cats: list[Category] = []
    k = 0

    def unquote(tok: str) -> str:
        if tok[:1] in "\"'":
            return re.sub(r"\\(.)", r"\1", tok[1:-1])
        return tok

    while k < len(tokens):
        if tokens[k] != "item" or tokens[k + 1:k + 2] != ["{"]:
            raise OpenImagesFormatError(f"{path}: expected 'item {{' but found {tokens[k]!r}; is this a label map?")
        k += 2
        fields: dict[str, str] = {}
        while k < len(tokens) and tokens[k] != "}":
            if k + 2 >= len(tokens) or tokens[k + 1] != ":":
                raise OpenImagesFormatError(f"{path}: expected 'key: value' in an item, found {tokens[k]!r}")
            fields[tokens[k]] = unquote(tokens[k + 2])
            k += 3
        if k >= len(tokens):
            raise OpenImagesFormatError(f"{path}: an item is not closed with '}}'")
        k += 1
        if "name" not in fields or "id" not in fields:
            raise OpenImagesFormatError(f"{path}: every item needs name and id, got {fields}")
        try:
            cid = int(fields["id"])
        except ValueError:
            raise OpenImagesFormatError(f"{path}: item id {fields['id']!r} is not an integer") from None
        cats.append(Category(cid, fields["name"], fields.get("display_name", "")))
    return check_categories(cats, str(path))


def read_class_descriptions(path: str | Path) -> list[Category]:
    """Read an Open Images class-descriptions CSV: ``<MID>,<display name>[,LabelmapId]``.

    The official files (``oidv6-class-descriptions-boxable.csv``) have no header; a first row whose
    first field does not look like a MID (``/m/...`` or ``/g/...``) is taken as a header. Ids come
    from a ``LabelmapId`` column when the header has one, otherwise from the row order (1, 2, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise OpenImagesFormatError(f"{path}: no such class-descriptions file; check the path")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(n, r) for n, r in enumerate(csv.reader(f), 1) if r and any(c.strip() for c in r)]
    if not rows:
        raise OpenImagesFormatError(f"{path}: empty class-descriptions file")
    id_col = None
    if not rows[0][1][0].startswith(("/m/", "/g/")):
        header = [h.strip() for h in rows[0][1]]
        id_col = header.index("LabelmapId") if "LabelmapId" in header else None
        rows = rows[1:]
    cats = []
    for k, (line, row) in enumerate(rows):
        if len(row) < 2:
            raise OpenImagesFormatError(f"{path}: line {line} needs '<MID>,<display name>'")
        cid = k + 1
        if id_col is not None:
            try:
                cid = int(row[id_col])
            except (ValueError, IndexError):
                raise OpenImagesFormatError(f"{path}: line {line}: LabelmapId is not an integer") from None
        cats.append(Category(cid, row[0], row[1]))
    return check_categories(cats, str(path))


def categories_from_labels(labels: Iterable[str]) -> list[Category]:
    """Classes named by the ground truth, sorted, with ids 1..n (what the MPEG VCM label map is)."""
    return [Category(i, name, name) for i, name in enumerate(sorted(set(labels)), 1)]


# ----------------------------------------------------------------------------------------------
# Class hierarchy and its expansion


@dataclass(frozen=True)
class LabelHierarchy:
    """An Open Images class hierarchy, flattened.

    Attributes:
        root: the root label (``/m/0bl9f`` "Entity" in Open Images); it has no entry below and is
            never added by expansion.
        ancestors: label -> every label above it (transitively, over all its parents), root excluded.
        descendants: label -> every label below it (transitively).
    """

    root: str
    ancestors: Mapping[str, frozenset[str]]
    descendants: Mapping[str, frozenset[str]]

    @classmethod
    def from_json(cls, tree: Mapping) -> LabelHierarchy:
        """Flatten the JSON tree (``{"LabelName": ..., "Subcategory": [...]}``).

        A class may sit under several parents (it then has all of their ancestors), as in
        ``oid_hierarchical_labels_expansion.py``.
        """
        if not isinstance(tree, Mapping) or "LabelName" not in tree:
            raise OpenImagesFormatError("hierarchy: the top node needs a LabelName")
        ancestors: dict[str, set[str]] = {}
        descendants: dict[str, set[str]] = {}
        # Iterative walk: deep hierarchies must not hit Python's recursion limit.
        stack: list[tuple[Mapping, tuple[str, ...]]] = [(child, ()) for child in tree.get("Subcategory", [])]
        while stack:
            node, path = stack.pop()
            if not isinstance(node, Mapping) or "LabelName" not in node:
                raise OpenImagesFormatError(f"hierarchy: a node under {path[-1:] or tree['LabelName']} "
                                            "has no LabelName")
            label = node["LabelName"]
            if label in path:
                raise OpenImagesFormatError(f"hierarchy: {label} is its own ancestor")
            ancestors.setdefault(label, set()).update(path)
            descendants.setdefault(label, set())
            for above in path:
                descendants[above].add(label)
            stack.extend((child, (*path, label)) for child in node.get("Subcategory", []))
        return cls(root=tree["LabelName"],
                   ancestors={k: frozenset(v) for k, v in ancestors.items()},
                   descendants={k: frozenset(v) for k, v in descendants.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> LabelHierarchy:
        path = Path(path)
        if not path.is_file():
            raise OpenImagesFormatError(f"{path}: no such hierarchy file; check the path")
        try:
            tree = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise OpenImagesFormatError(f"{path}: not valid JSON ({exc})") from exc
        try:
            return cls.from_json(tree)
        except OpenImagesFormatError as exc:
            raise OpenImagesFormatError(f"{path}: {exc}") from exc

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(self.ancestors)


def _explode(frame: pd.DataFrame, targets: pd.Series) -> pd.DataFrame:
    """Each row followed by one copy per label in its ``targets`` list (labels replaced)."""
    lists = [[label, *sorted(extra)] for label, extra in zip(frame.LabelName, targets)]
    out = frame.assign(LabelName=pd.Series(lists, index=frame.index, dtype=object)).explode("LabelName")
    return out.reset_index(drop=True)


def _check_in_hierarchy(frame: pd.DataFrame, hierarchy: LabelHierarchy, source: str | Path | None) -> None:
    unknown = ~frame.LabelName.isin(hierarchy.labels)
    if unknown.any():
        names = sorted(set(frame.LabelName[unknown]))
        raise OpenImagesFormatError(_lines_message(
            Path(source or "<annotations>"), frame.Line[unknown].tolist(),
            f"label(s) {names[:_SHOW]} are not in the hierarchy (the root {hierarchy.root} cannot be expanded)",
            "Use the hierarchy file that belongs to these annotations"))


def expand_boxes(boxes: pd.DataFrame, hierarchy: LabelHierarchy, source: str | Path | None = None) -> pd.DataFrame:
    """Ground-truth boxes with one copy of every box for each ancestor of its class.

    The same rule as ``oid_hierarchical_labels_expansion.py --annotation_type=1``: every row is kept
    and followed by its copies (``IsGroupOf`` copied too). Copies follow in sorted label order; the
    reference's order follows a Python ``set`` and varies with the hash seed, but the order of rows
    *within one class* -- the only order the metric can see -- is the same.
    """
    _check_in_hierarchy(boxes, hierarchy, source)
    return _explode(boxes, boxes.LabelName.map(hierarchy.ancestors))


def expand_image_labels(labels: pd.DataFrame, hierarchy: LabelHierarchy,
                        source: str | Path | None = None) -> pd.DataFrame:
    """Image-level labels expanded along the hierarchy.

    As ``oid_hierarchical_labels_expansion.py --annotation_type=2``: a positive label (Confidence 1)
    gets a copy for every ancestor (an image with a Dog has an Animal); a negative label
    (Confidence 0) gets a copy for every descendant (no Animal means no Dog), never upwards.
    """
    _check_in_hierarchy(labels, hierarchy, source)
    targets = [hierarchy.ancestors[lab] if conf == 1 else hierarchy.descendants[lab]
               for lab, conf in zip(labels.LabelName, labels.Confidence)]
    return _explode(labels, pd.Series(targets, index=labels.index, dtype=object))


# ----------------------------------------------------------------------------------------------
# Metrics CSV in the reference layout

METRIC_PREFIX = "OpenImagesDetectionChallenge_"


def reference_metric_names(iou_threshold: float) -> tuple[str, str]:
    """(mAP row name, per-class row prefix) as the TF evaluator names them, e.g. for 0.5:
    ``OpenImagesDetectionChallenge_Precision/mAP@0.5IOU`` and
    ``OpenImagesDetectionChallenge_PerformanceByCategory/AP@0.5IOU/``."""
    iou = f"{iou_threshold}"
    return (f"{METRIC_PREFIX}Precision/mAP@{iou}IOU", f"{METRIC_PREFIX}PerformanceByCategory/AP@{iou}IOU/")


def write_metrics_csv(out: IO[str], rows: Iterable[tuple[str, float]]) -> None:
    """``name,value`` rows as the reference CLI writes them (``csv.writer``, ``\\r\\n``, ``str(value)``)."""
    writer = csv.writer(out)
    for name, value in rows:
        writer.writerow([name, str(float(value))])


def read_metrics_csv(path: str | Path) -> list[tuple[str, float]]:
    """Rows of a metrics CSV written by :func:`write_metrics_csv` or the reference CLI."""
    with open(path, newline="", encoding="utf-8") as f:
        return [(row[0], float(row[1])) for row in csv.reader(f) if row]


def iter_list_file(path: str | Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a list file, stripped, with their line numbers."""
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line.strip()
