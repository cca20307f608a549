"""``ytvis``: the labels as YouTube-VIS JSON, written with daq_eval's own format code.

* ``dataset.json``: the ground-truth layout (``videos``, ``annotations``, ``categories``): one
  annotation per kept track, so the labels can train or be scored against like any YouTube-VIS
  split;
* ``results.json``: the prediction layout (``video_id``, ``category_id``, ``score``,
  ``segmentations``), what the official evaluation takes.

YouTube-VIS video ids are integers: video ``i`` (1-based, by daq-label ``video_id``) of the
export; each video entry keeps ``daq_video_id`` and ``source_url``, each annotation / result
``daq_video_id``, ``track_id``, ``tracker_track_id`` (and ``score`` for annotations). Masks are
the tracks table's own COCO RLE strings, unchanged; frames without a mask are ``null``.
``file_names`` follow :func:`daq_label.exports.frame_file_name`.
"""

from __future__ import annotations

import logging

from daq_eval.ytvis_format import (Annotation, Category, Dataset, Prediction, Video, dataset_to_json,
                                   predictions_to_json)
from daq_label.exports import Destination, ExportOptions, ExportResult, frame_file_name
from daq_label.filters import Selection

logger = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
RESULTS_FILE = "results.json"


def build(selection: Selection) -> tuple[Dataset, list[Prediction], int]:
    """The dataset and predictions of a selection, and the number of masks in them."""
    videos: list[Video] = []
    annotations: list[Annotation] = []
    predictions: list[Prediction] = []
    masks = 0
    for number, row in enumerate(selection.video_rows(), start=1):
        vid, length = row["video_id"], int(row["frames_decoded"])
        videos.append(Video(number, int(row["width"]), int(row["height"]), length,
                            tuple(frame_file_name(vid, f) for f in range(length)),
                            {"daq_video_id": vid, "source_url": row["source_url"]}))
        table = selection.tracks(vid)
        by_track: dict[int, list[dict]] = {}
        for r in table.select(["track_id", "tracker_track_id", "frame_index", "category_id", "score",
                               "bbox", "area", "mask"]).to_pylist():
            by_track.setdefault(r["track_id"], []).append(r)
        for track_id in selection.track_ids(vid):
            rows = by_track.get(track_id, [])
            if not rows:
                continue
            segs: list = [None] * length
            areas: list = [None] * length
            boxes: list = [None] * length
            for r in rows:
                f = r["frame_index"]
                segs[f] = {"size": list(r["mask"]["size"]), "counts": r["mask"]["counts"]}
                areas[f] = int(r["area"])
                boxes[f] = tuple(float(b) for b in r["bbox"])
            masks += len(rows)
            first = rows[0]
            ids = {"daq_video_id": vid, "track_id": track_id, "tracker_track_id": first["tracker_track_id"]}
            annotations.append(Annotation(len(annotations) + 1, number, int(first["category_id"]), 0,
                                          tuple(segs), tuple(areas), tuple(boxes),
                                          {**ids, "score": float(first["score"])}))
            predictions.append(Prediction(number, int(first["category_id"]), float(first["score"]),
                                          tuple(segs), ids))
    categories = tuple(Category(cid, name) for cid, name in selection.categories())
    dataset = Dataset(tuple(videos), tuple(annotations), categories,
                      {"info": {"description": "daq-label pseudo-labels", "source": selection.output.url,
                                "filter": selection.filter.describe()}})
    return dataset, predictions, masks


def export(selection: Selection, dest: Destination, format_name: str = "ytvis",
           options: ExportOptions = ExportOptions()) -> ExportResult:
    dataset, predictions, masks = build(selection)
    dest.write_json(DATASET_FILE, dataset_to_json(dataset))
    dest.write_json(RESULTS_FILE, predictions_to_json(predictions))
    return ExportResult(format_name, dest.url, list(dest.written), len(dataset.videos),
                        len(predictions), masks)
