"""Tracking metrics on small hand-made videos (10x10 objects in 20x20 frames)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_util

from daq_eval.tracking_metrics import (TrackingParams, evaluate_tracking, presence_runs,
                                       track_records)
from daq_eval.ytvis_format import parse_dataset, parse_predictions

H = W = 20


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


BOX = rect(0, 10, 0, 10)


def rle(m: np.ndarray | None) -> dict | None:
    if m is None:
        return None
    r = mask_util.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": r["counts"].decode("ascii")}


def track(present: str, mask: np.ndarray = BOX) -> list:
    """'xx..x' -> mask on frames marked x, null elsewhere."""
    return [mask if c == "x" else None for c in present]


def run(objects: list[list], preds: list[tuple], params: TrackingParams = TrackingParams(),
        crowd: tuple[int, ...] = (), cats: tuple[int, ...] = ()):
    T = len(objects[0])
    gt = {"videos": [{"id": 1, "width": W, "height": H, "length": T, "file_names": [f"{t}.jpg" for t in range(T)]}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": i + 1, "video_id": 1, "category_id": cats[i] if cats else 1,
                           "iscrowd": int(i in crowd), "segmentations": [rle(m) for m in o],
                           "areas": [None if m is None else int(m.sum()) for m in o],
                           "bboxes": [None] * T} for i, o in enumerate(objects)]}
    ds = parse_dataset(gt)
    p = parse_predictions([{"video_id": 1, "category_id": c, "score": s, "segmentations": [rle(m) for m in ms]}
                           for c, s, ms in preds], ds)
    return evaluate_tracking(ds, p, params), track_records(ds, p, params)


def test_presence_runs() -> None:
    assert presence_runs(np.array([0, 1, 1, 0, 0, 1, 0], bool)) == [(1, 3), (5, 6)]
    assert presence_runs(np.array([1, 1], bool)) == [(0, 2)]
    assert presence_runs(np.zeros(3, bool)) == []


def test_pickup_latency_of_a_new_object() -> None:
    # object appears on frame 2; the prediction covers it from frame 4: latency 4 - 2 = 2
    s, (rec,) = run([track("..xxxx")], [(1, 0.9, track("....xx"))])
    assert rec.first_frame == 2 and rec.pickup_latency == 2
    assert s["pickup_new_objects"]["objects"] == 1 and s["pickup_new_objects"]["mean_latency_frames"] == 2.0
    assert s["pickup_first_frame_objects"]["objects"] == 0
    assert s["matched_frame_fraction"] == pytest.approx(2 / 4) and s["id_switches"] == 0


def test_id_switch_while_visible() -> None:
    # seen throughout; prediction A on frames 0-2, prediction B on frames 3-5: one switch at frame 3
    s, (rec,) = run([track("xxxxxx")], [(1, 0.9, track("xxx...")), (1, 0.8, track("...xxx"))])
    assert s["id_switches"] == 1 and s["id_switches_at_reappearance"] == 0
    assert rec.partner.tolist() == [0, 0, 0, 1, 1, 1]
    assert s["pickup_first_frame_objects"]["picked_up_same_frame"] == 1


def test_reappearance_with_and_without_the_same_identity() -> None:
    obj = track("xx..xx")  # leaves after frame 1, back on frame 4
    # a new prediction picks it up when it comes back: a switch, at re-appearance
    s, _ = run([obj], [(1, 0.9, track("xx....")), (1, 0.8, track("....xx"))])
    assert s["id_switches"] == 1 and s["id_switches_at_reappearance"] == 1
    r = s["reappearance"]
    assert (r["events"], r["recovered"], r["mean_latency_frames"]) == (1, 1, 0.0)
    assert (r["same_identity"], r["events_with_prior_match"]) == (0, 1)
    # the same prediction comes back with it: no switch, identity kept
    s, _ = run([obj], [(1, 0.9, track("xx..xx"))])
    assert s["id_switches"] == 0 and s["reappearance"]["same_identity"] == 1
    # found again one frame late (frame 5): re-appearance latency 1, still the same identity
    s, (rec,) = run([obj], [(1, 0.9, track("xx...x"))])
    assert rec.reappearances == ((4, 1, True),) and s["id_switches"] == 0
    # never found again
    s, (rec,) = run([obj], [(1, 0.9, track("xx...."))])
    assert rec.reappearances == ((4, None, None),) and s["reappearance"]["recovered"] == 0


def test_switch_after_a_gap_counts_at_reappearance_even_if_found_late() -> None:
    # back on frame 3, missed on frame 3, found by another prediction on frame 4
    s, _ = run([track("x..xx")], [(1, 0.9, track("x....")), (1, 0.8, track("....x"))])
    assert s["id_switches"] == 1 and s["id_switches_at_reappearance"] == 1


def test_matching_keeps_the_previous_partner() -> None:
    a = rect(0, 8, 0, 10)  # IoU .8 with the object
    # frame 1 adds a better prediction (IoU 1); CLEAR-MOT keeps A, which still overlaps >= .5
    s, (rec,) = run([track("xx")], [(1, 0.9, [a, a]), (1, 0.8, [None, BOX])])
    assert rec.partner.tolist() == [0, 0] and s["id_switches"] == 0
    # if A drops below the threshold the better one takes over: one switch
    low = rect(0, 4, 0, 10)  # IoU .4
    s, (rec,) = run([track("xx")], [(1, 0.9, [a, low]), (1, 0.8, [None, BOX])])
    assert rec.partner.tolist() == [0, 1] and s["id_switches"] == 1


def test_iou_and_score_thresholds() -> None:
    below = rect(0, 7, 0, 7)  # 49 of 100 px: IoU .49
    s, (rec,) = run([track("xxx")], [(1, 0.9, [below] * 3)])
    assert rec.pickup_latency is None and s["pickup_first_frame_objects"]["never_picked_up"] == 1
    exact = [BOX] * 3
    s, _ = run([track("xxx")], [(1, 0.3, exact)])  # below the default score threshold .5
    assert s["matched_object_frames"] == 0
    s, _ = run([track("xxx")], [(1, 0.3, exact)], TrackingParams(score_threshold=0.0))
    assert s["matched_object_frames"] == 3


def test_one_to_one_crowd_and_classes() -> None:
    other = rect(10, 20, 10, 20)
    # two objects, one prediction on the first: the second is never picked up
    s, _ = run([track("xx"), track("xx", other)], [(1, 0.9, [BOX, BOX])])
    assert s["objects"] == 2 and s["matched_object_frames"] == 2
    # crowd annotations are not objects here
    s, _ = run([track("xx"), track("xx", other)], [(1, 0.9, [BOX, BOX])], crowd=(1,))
    assert s["objects"] == 1 and s["matched_frame_fraction"] == 1.0
    # a prediction of another category matches unless class_aware
    s, _ = run([track("xx")], [(2, 0.9, [BOX, BOX])])
    assert s["matched_object_frames"] == 2
    s, _ = run([track("xx")], [(2, 0.9, [BOX, BOX])], TrackingParams(class_aware=True))
    assert s["matched_object_frames"] == 0
