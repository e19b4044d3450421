#!/usr/bin/env python
"""Score a detection CSV with the Open Images Challenge detection metric (no TensorFlow).

Reads Open Images files and writes the metrics CSV in the layout of the TF Object Detection API's
``oid_challenge_evaluation.py`` (``OpenImagesDetectionChallenge_Precision/mAP@0.5IOU,<value>``, then
one ``OpenImagesDetectionChallenge_PerformanceByCategory/AP@0.5IOU/<class>,<value>`` row per class),
so results can be compared with other tools line by line.

Examples::

    # MPEG VCM files (flat COCO names; the classes are the labels found in the ground truth)
    python tools/oi_eval.py --boxes detection_validation_5k_bbox.csv \\
        --labels detection_validation_labels_5k.csv --detections dets.csv --output metrics.csv

    # Official Open Images files, expanded along the class hierarchy first
    python tools/oi_eval.py --boxes validation-annotations-bbox.csv \\
        --labels validation-annotations-human-imagelabels-boxable.csv --detections dets.csv \\
        --hierarchy bbox_labels_600_hierarchy.json --class-descriptions oidv6-class-descriptions-boxable.csv

Odd rows are reported on stderr with counts (see vcm_eval.evaluation.openimages_files); rows that
would change the score without being the reference's behaviour are errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vcm_eval.evaluation.openimages import DEFAULT_IOU, evaluate_tables, reference_rows
from vcm_eval.evaluation.openimages_files import (
    InputCounts,
    LabelHierarchy,
    OpenImagesFormatError,
    categories_from_labels,
    check_labels_known,
    drop_unknown_detection_labels,
    expand_boxes,
    expand_image_labels,
    read_class_descriptions,
    read_detections,
    read_gt_boxes,
    read_image_labels,
    read_labelmap,
    write_metrics_csv,
)


def build_parser() -> argparse.ArgumentParser:
    head, _, tail = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=tail, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", required=True, type=Path,
                   help="ground-truth boxes: ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf (more columns allowed)")
    p.add_argument("--labels", required=True, type=Path,
                   help="image-level labels: ImageID,LabelName,Confidence (1 present, 0 absent)")
    p.add_argument("--detections", required=True, type=Path,
                   help="detections: ImageID,LabelName,Score,XMin,XMax,YMin,YMax (normalised coordinates)")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--labelmap", type=Path, help="TF label map (.pbtxt): the classes and their order")
    classes.add_argument("--class-descriptions", type=Path,
                         help="Open Images class descriptions CSV (<MID>,<name>[,LabelmapId]): the classes; "
                              "default: the labels found in the ground truth, sorted")
    p.add_argument("--hierarchy", type=Path,
                   help="Open Images hierarchy JSON: expand the ground truth first (boxes and positive labels "
                        "to every ancestor, negative labels to every descendant)")
    p.add_argument("--iou", type=float, default=DEFAULT_IOU, help="IoU (and group-of IoA) threshold (default 0.5)")
    p.add_argument("--duplicate-boxes", choices=("error", "keep", "drop"), default="error",
                   help="repeated ground-truth box rows in --boxes: each copy is one more instance to find "
                        "(the reference keeps them); default: error. Files already expanded along a hierarchy "
                        "legitimately repeat boxes (e.g. one object boxed as Man and Person): use keep")
    p.add_argument("--allow-out-of-range", action="store_true",
                   help="score detection coordinates outside [0, 1] as the reference does instead of failing")
    p.add_argument("--tie-order", choices=("later_first", "earlier_first"), default="later_first",
                   help="order of equal scores (default: the reference's, later input first)")
    p.add_argument("--output", type=Path, help="metrics CSV to write (default: standard output)")
    return p


def run(args: argparse.Namespace) -> InputCounts:
    counts = InputCounts()
    boxes = read_gt_boxes(args.boxes, duplicates=args.duplicate_boxes, counts=counts)
    labels = read_image_labels(args.labels, counts=counts)
    if args.hierarchy is not None:
        hierarchy = LabelHierarchy.from_file(args.hierarchy)
        boxes = expand_boxes(boxes, hierarchy, args.boxes)
        labels = expand_image_labels(labels, hierarchy, args.labels)
    if args.labelmap is not None:
        categories = read_labelmap(args.labelmap)
    elif args.class_descriptions is not None:
        categories = read_class_descriptions(args.class_descriptions)
    else:
        categories = categories_from_labels(list(boxes.LabelName) + list(labels.LabelName))
    names = [c.name for c in categories]
    check_labels_known(boxes, names, args.boxes, "box")
    check_labels_known(labels, names, args.labels, "image-level")
    detections = drop_unknown_detection_labels(
        read_detections(args.detections, allow_out_of_range=args.allow_out_of_range), names, args.detections, counts)
    result = evaluate_tables(boxes, labels, detections, categories, iou_threshold=args.iou, tie_order=args.tie_order)
    counts.merge(result.counts)
    rows = reference_rows(result, categories, args.iou)
    if args.output is None:
        write_metrics_csv(sys.stdout, rows)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            write_metrics_csv(f, rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        counts = run(args)
    except OpenImagesFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = counts.nonzero()
    if summary:
        print("counts: " + ", ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr)
    if args.output is not None:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
