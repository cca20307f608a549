"""The YouTube-VIS reader/writer on a small hand-made file in the exact format."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from pycocotools import mask as mask_util

from daq_eval.video_ap import evaluate_video_ap
from daq_eval.ytvis_format import (YTVISFormatError, encode_mask, parse_dataset, read_dataset,
                                   read_predictions, segmentation_to_rle, write_dataset,
                                   write_predictions)

# Two videos (4x5, 3 frames; 4x5, 2 frames). Annotation 1: absent on frame 0, a compressed RLE on
# frame 1 ("92203" = column-major runs 9 off, 2 on, 3 off, 2 on, 4 off -> rows 1-2, columns 2-3), an
# uncompressed RLE on frame 2 (runs [6, 2, 2, 2, 8] -> rows 2-3, columns 1-2). Annotation 2: a
# crowd given as two polygons on frame 0 (the rectangle (0,0)-(3,2) and the square (4,3)-(5,4)),
# absent afterwards. Extra keys as YouTube-VIS 2019 (video licence/urls, annotation
# height/width/length) and OVIS (occlusion) have them.
HAND_MADE = """
{
  "info": {"description": "hand-made", "version": "1.0"},
  "licenses": [{"id": 1, "name": "CC BY 4.0"}],
  "videos": [
    {"id": 1, "width": 5, "height": 4, "length": 3, "license": 1, "coco_url": "", "flickr_url": "",
     "date_captured": "2019-04-11 00:00:00",
     "file_names": ["a/00000.jpg", "a/00005.jpg", "a/00010.jpg"]},
    {"id": 7, "width": 5, "height": 4, "length": 2, "file_names": ["b/00000.jpg", "b/00005.jpg"]}
  ],
  "annotations": [
    {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "height": 4, "width": 5, "length": 1,
     "segmentations": [null, {"size": [4, 5], "counts": "92203"},
                       {"size": [4, 5], "counts": [6, 2, 2, 2, 8]}],
     "areas": [null, 4, 4], "bboxes": [null, [2, 1, 2, 2], [1, 2, 2, 2]],
     "occlusion": [null, "no_occlusion", "slight_occlusion"]},
    {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 1,
     "segmentations": [[[0, 0, 3, 0, 3, 2, 0, 2], [4, 3, 5, 3, 5, 4, 4, 4]], null, null],
     "areas": [7, null, null], "bboxes": [[0, 0, 5, 4], null, null]},
    {"id": 3, "video_id": 7, "category_id": 1, "iscrowd": 0,
     "segmentations": [{"size": [4, 5], "counts": "d0"}, null],
     "areas": [0, null], "bboxes": [[0, 0, 0, 0], null]}
  ],
  "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                 {"id": 2, "name": "crowd thing", "supercategory": "thing"}]
}
"""

PREDICTIONS = """
[{"video_id": 1, "category_id": 1, "score": 0.9,
  "segmentations": [null, {"size": [4, 5], "counts": "92203"}, {"size": [4, 5], "counts": [0, 20]}]},
 {"video_id": 7, "category_id": 2, "score": 0.25, "segmentations": [null, null]}]
"""


def mask(rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((4, 5), dtype=np.uint8)
    m[rows, cols] = 1
    return m


@pytest.fixture()
def gt_file(tmp_path: Path) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(HAND_MADE)
    return path


def test_reads_every_segmentation_kind(gt_file: Path) -> None:
    ds = read_dataset(gt_file)
    assert [v.id for v in ds.videos] == [1, 7] and ds.videos[0].length == 3
    assert ds.videos[0].extra["date_captured"] == "2019-04-11 00:00:00"
    assert [c.name for c in ds.categories] == ["person", "crowd thing"]
    a1, a2, a3 = ds.annotations
    assert a1.segmentations[0] is None and a1.areas[0] is None and a1.bboxes[0] is None
    assert a1.extra["occlusion"][1] == "no_occlusion" and a1.extra["height"] == 4
    assert a2.iscrowd == 1 and a3.iscrowd == 0
    decode = lambda seg: mask_util.decode(segmentation_to_rle(seg, 4, 5))  # noqa: E731
    np.testing.assert_array_equal(decode(a1.segmentations[1]), mask(slice(1, 3), slice(2, 4)))
    np.testing.assert_array_equal(decode(a1.segmentations[2]), mask(slice(2, 4), slice(1, 3)))
    crowd = mask(slice(0, 2), slice(0, 3))
    crowd[3, 4] = 1  # the second polygon part, merged into one mask
    np.testing.assert_array_equal(decode(a2.segmentations[0]), crowd)
    assert decode(a3.segmentations[0]).sum() == 0  # present but empty
    assert segmentation_to_rle(None, 4, 5) is None
    assert ds.annotations_by_video[7] == [a3]


def test_round_trip_is_exact(gt_file: Path, tmp_path: Path) -> None:
    ds = read_dataset(gt_file)
    out = tmp_path / "copy.json"
    write_dataset(ds, out)
    assert json.loads(out.read_text()) == json.loads(HAND_MADE)
    assert read_dataset(out) == ds
    preds = read_predictions_text(PREDICTIONS, ds, tmp_path)
    write_predictions(preds, tmp_path / "p2.json")
    assert json.loads((tmp_path / "p2.json").read_text()) == json.loads(PREDICTIONS)


def read_predictions_text(text: str, ds, tmp_path: Path):
    path = tmp_path / "preds.json"
    path.write_text(text)
    return read_predictions(path, ds)


def test_predictions_read_and_evaluate(gt_file: Path, tmp_path: Path) -> None:
    ds = read_dataset(gt_file)
    preds = read_predictions_text(PREDICTIONS, ds, tmp_path)
    assert [p.score for p in preds] == [0.9, 0.25]
    # the person prediction: frame 1 exact (4/4), frame 2 the whole frame against 4 px (4/20):
    # IoU (4 + 4) / (4 + 20) = 1/3 -> no match at .5. Only "person" has non-crowd ground truth.
    r = evaluate_video_ap(ds, preds)
    assert r.stats["AP"] == 0.0 and r.per_category_ap["crowd thing"] == -1.0


def test_encode_mask_is_json_ready() -> None:
    m = mask(slice(1, 3), slice(2, 4))
    assert encode_mask(m) == {"size": [4, 5], "counts": "92203"}


def test_unlabelled_split(tmp_path: Path) -> None:
    obj = json.loads(HAND_MADE)
    obj["annotations"] = None
    path = tmp_path / "test.json"
    path.write_text(json.dumps(obj))
    ds = read_dataset(path)
    assert ds.annotations is None
    with pytest.raises(ValueError, match="no annotations"):
        evaluate_video_ap(ds, [])


def _set(path: list, value) -> Callable[[dict], None]:
    def apply(obj: dict) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


BAD_GT = [
    (_set(["annotations", 0, "segmentations"], [None, None]), r"annotations\[0\] \(id=1\): 'segmentations' has 2 entries but video 1 has length 3"),
    (_set(["annotations", 0, "areas"], [None, 4]), r"annotations\[0\] \(id=1\): 'areas' has 2 entries"),
    (_set(["annotations", 0, "segmentations", 1, "size"], [5, 4]), r"annotations\[0\] \(id=1\) segmentations\[1\]: RLE size \[5, 4\] differs"),
    (_set(["annotations", 0, "segmentations", 2, "counts"], [6, 2, 2, 2, 9]), r"segmentations\[2\]: uncompressed RLE counts sum to 21"),
    (_set(["annotations", 0, "segmentations", 1, "counts"], "zzzz"), r"segmentations\[1\]: compressed RLE counts run past the frame"),
    (_set(["annotations", 1, "segmentations", 0], [[0, 0, 3]]), r"annotations\[1\] \(id=2\) segmentations\[0\]: a polygon"),
    (_set(["annotations", 0, "video_id"], 3), r"annotations\[0\] \(id=1\): video_id 3 is not in 'videos'"),
    (_set(["annotations", 0, "category_id"], 9), r"category_id 9 is not in 'categories'"),
    (_set(["annotations", 0, "iscrowd"], 2), r"'iscrowd' must be 0 or 1"),
    (_set(["annotations", 2, "id"], 1), r"annotations: duplicate id 1"),
    (_set(["annotations", 0, "bboxes", 1], [1, 2, 3]), r"a box must be null or \[x, y, w, h\]"),
    (_set(["annotations", 0, "areas", 1], -3), r"'areas' must not be negative"),
    (_set(["videos", 0, "length"], 4), r"videos\[0\]: 'length' is 4 but 'file_names' has 3"),
    (_set(["videos", 1, "id"], 1), r"videos: duplicate id 1"),
    (_set(["videos", 0, "width"], "5"), r"videos\[0\]: 'width' must be an integer"),
    (_set(["categories", 0], {"id": 1}), r"categories\[0\]: missing key\(s\) \['name'\]"),
    (_set(["videos"], {}), r"top level: 'videos' must be a list"),
]


@pytest.mark.parametrize("mutate,message", BAD_GT)
def test_malformed_ground_truth_names_file_and_entry(tmp_path: Path, mutate, message: str) -> None:
    obj = json.loads(HAND_MADE)
    mutate(obj)
    path = tmp_path / "broken_gt.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(YTVISFormatError, match=str(path).replace(".", r"\.") + ": (.*)?" + message):
        read_dataset(path)


BAD_PREDS = [
    (_set([0, "video_id"], 2), r"\[0\]: video_id 2 is not a video of the ground truth"),
    (_set([1, "segmentations"], [None]), r"\[1\]: 'segmentations' has 1 entries but video 7 has length 2"),
    (_set([0, "score"], "high"), r"\[0\]: 'score' must be a finite number"),
    (lambda p: p[0].pop("score"), r"\[0\]: missing key\(s\) \['score'\]"),
    (_set([0, "segmentations", 1, "size"], [4, 4]), r"\[0\] segmentations\[1\]: RLE size"),
]


@pytest.mark.parametrize("mutate,message", BAD_PREDS)
def test_malformed_predictions_name_file_and_entry(gt_file: Path, tmp_path: Path, mutate, message: str) -> None:
    ds = read_dataset(gt_file)
    obj = json.loads(PREDICTIONS)
    mutate(obj)
    path = tmp_path / "broken_preds.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(YTVISFormatError, match=str(path).replace(".", r"\.") + ": (.*)?" + message):
        read_predictions(path, ds)


def test_not_json_or_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(YTVISFormatError, match="bad.json: not valid JSON"):
        read_dataset(bad)
    with pytest.raises(YTVISFormatError, match="nope.json: no such file"):
        read_dataset(tmp_path / "nope.json")
    with pytest.raises(YTVISFormatError, match="must be a JSON object"):
        parse_dataset([], "list.json")
    ds = parse_dataset(copy.deepcopy(json.loads(HAND_MADE)))
    path = tmp_path / "p.json"
    path.write_text("{}")
    with pytest.raises(YTVISFormatError, match="p.json: top level: a YouTube-VIS prediction file must be a JSON list"):
        read_predictions(path, ds)
