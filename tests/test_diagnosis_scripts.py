"""research/id_switch_causes.py: every id change of an object is classified by hand-made frames."""

from __future__ import annotations

import numpy as np

from daq_model.outputs import FrameTracks
from research.id_switch_causes import classify


def _box(x0: int, x1: int) -> np.ndarray:
    m = np.zeros((4, 8), bool)
    m[:, x0:x1] = True
    return m


def _frame(t: int, entries: list[tuple[int, bool, np.ndarray]]) -> FrameTracks:
    n = len(entries)
    return FrameTracks(frame_index=t, track_ids=np.array([e[0] for e in entries], np.int64),
                       valid=np.array([e[1] for e in entries], bool), scores=np.ones(n, np.float32),
                       labels=np.zeros(n, np.int64),
                       masks=np.stack([e[2] for e in entries]) if entries else np.zeros((0, 4, 8), bool))


def test_classify_names_what_happened_to_the_old_track_and_where_the_new_one_came_from() -> None:
    obj, elsewhere = _box(0, 4), _box(4, 8)
    tracks = [
        _frame(0, [(1, True, obj), (2, True, elsewhere)]),
        _frame(1, [(1, True, _box(0, 3)), (3, True, obj)]),        # 1 -> 3: duplicate, 1 still covers
        _frame(2, [(1, False, elsewhere), (3, False, elsewhere)]),  # nobody covers: no change counted
        _frame(3, [(2, True, obj), (3, False, elsewhere)]),         # 3 -> 2: 3 lost it, 2 is old
        _frame(4, []),                                              # 2 killed
        _frame(5, [(4, True, obj)]),                                # 2 -> 4: killed, 4 new
        _frame(6, [(4, True, obj)]),                                # same id: no change
    ]
    masks = [obj] * 7
    masks[6] = None  # not visible: skipped
    assert classify(tracks, masks, min_area=1) == [
        ("A valid, still covers", "B new"),
        ("A invalid, lost the object", "B old"),
        ("A killed", "B new"),
    ]
    assert classify(tracks, masks, min_area=100) == []  # object too small everywhere


def test_ap_error_breakdown_kinds_and_fixes() -> None:
    from daq_eval.ytvis_format import encode_mask, parse_dataset, parse_predictions
    from research.ap_error_breakdown import classify, fixed_predictions, localization_split

    def seg(x0: int, x1: int, present: bool = True):
        return encode_mask(_box(x0, x1)) if present else None

    left, right = [seg(0, 2)] * 3, [seg(4, 8)] * 3  # two objects in all three frames
    gt = parse_dataset({
        "videos": [{"id": 1, "width": 8, "height": 4, "length": 3, "file_names": ["a", "b", "c"]}],
        "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": left,
             "areas": [8] * 3, "bboxes": [None] * 3},
            {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0, "segmentations": right,
             "areas": [16] * 3, "bboxes": [None] * 3},
        ]})
    preds = parse_predictions([
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": left},           # correct
        {"video_id": 1, "category_id": 1, "score": 0.8, "segmentations": left},           # duplicate
        {"video_id": 1, "category_id": 1, "score": 0.7, "segmentations": right},          # class
        {"video_id": 1, "category_id": 2, "score": 0.6,                                   # fragment
         "segmentations": [seg(4, 8), None, None]},
        {"video_id": 1, "category_id": 2, "score": 0.5, "segmentations": [seg(4, 5)] * 3},  # poor mask
        {"video_id": 1, "category_id": 2, "score": 0.4, "segmentations": [seg(2, 4)] * 3},  # background
    ], gt)
    classified, missed = classify(gt, preds)
    kinds = [k for _, k, _ in classified]
    assert kinds == ["correct", "duplicate", "class", "localization", "localization", "background"]
    assert missed == 1  # the right-hand object has no correct prediction
    assert localization_split(gt, classified) == {"fragment": 1, "mask": 1}
    relabelled = fixed_predictions(classified, "class")
    assert [p.category_id for p in relabelled] == [1, 1, 2, 2, 2, 2]
    repaired = fixed_predictions(classified, "localization")  # first repaired, second then removed
    assert len(repaired) == 5 and repaired[3].segmentations == tuple(right)
    assert len(fixed_predictions(classified, "localization", only="taken")) == 6  # none over a found object
    assert len(fixed_predictions(classified, "duplicate")) == 5


def test_merge_track_fragments_links_tracks_that_follow_one_object_in_turn() -> None:
    from daq_eval.ytvis_format import encode_mask, parse_dataset, parse_predictions
    from research.merge_track_fragments import merge

    obj = encode_mask(_box(0, 4))
    near = encode_mask(_box(0, 3))  # IoU 0.75 with obj
    other = encode_mask(_box(4, 8))
    gt = parse_dataset({"videos": [{"id": 1, "width": 8, "height": 4, "length": 5, "file_names": list("abcde")}],
                        "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], "annotations": None})
    preds = parse_predictions([
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [obj, obj, obj, None, None]},
        {"video_id": 1, "category_id": 1, "score": 0.6, "segmentations": [None, near, near, obj, obj]},
        {"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [other] * 5},  # elsewhere
        {"video_id": 1, "category_id": 2, "score": 0.4, "segmentations": [None, obj, obj, obj, None]},  # class 2
        {"video_id": 1, "category_id": 1, "score": 0.3, "segmentations": [None, None, obj, None, None]},  # 1 frame
    ], gt)
    merged = merge(gt, preds)
    assert [(p.category_id, p.score) for p in merged] == [(1, 0.9), (1, 0.5), (2, 0.4), (1, 0.3)]
    head = merged[0]
    assert head.segmentations == (obj, obj, obj, obj, obj)  # the first track, continued by the second
    assert merge(gt, preds, iou=0.8) == list(preds)  # IoU 0.75 where they overlap: nothing merged


def test_missed_objects_kinds_by_hand() -> None:
    """One hand-made 8-frame video per kind of miss; the found objects are not listed."""
    from daq_eval.ytvis_format import encode_mask, parse_dataset, parse_predictions
    from research.missed_objects import best_video_iou, classify_missed, hops

    left, right, middle = encode_mask(_box(0, 2)), encode_mask(_box(5, 8)), encode_mask(_box(3, 4))

    def frames(mask, present: range) -> list:
        return [mask if t in present else None for t in range(8)]

    objects = {  # video id -> [(annotation id, frames)]
        1: [(10, frames(left, range(8)))],                                  # no prediction
        2: [(20, frames(left, range(8)))],                                  # split over two
        3: [(30, frames(left, range(4))), (31, frames(right, range(4, 8)))],  # hop from 30 to 31
        4: [(40, frames(left, range(8)))],                                  # held 2 of 8 frames
        5: [(50, frames(left, range(2)))],                                  # masks beyond it
    }
    preds = {
        1: [frames(middle, range(8))],  # background only: 10 is never covered
        2: [frames(left, range(0, 2)), frames(left, range(2, 4))],
        3: [frames(left, range(1, 4))[:4] + frames(right, range(4, 8))[4:]],
        4: [frames(left, range(2))],
        5: [frames(left, range(2))[:2] + frames(middle, range(2, 8))[2:]],
    }
    gt = parse_dataset({
        "videos": [{"id": v, "width": 8, "height": 4, "length": 8, "file_names": [f"{v}/{t}" for t in range(8)]}
                   for v in objects],
        "categories": [{"id": 1, "name": "shape"}],
        "annotations": [{"id": a, "video_id": v, "category_id": 1, "iscrowd": 0, "segmentations": segs,
                         "areas": [8 if s else None for s in segs], "bboxes": [None] * 8}
                        for v, anns in objects.items() for a, segs in anns]})
    predictions = parse_predictions([{"video_id": v, "category_id": 1, "score": 0.9, "segmentations": segs}
                                     for v, ps in preds.items() for segs in ps], gt)
    assert best_video_iou(gt, predictions)[31] >= 0.5  # the hopping track finds the second object
    assert classify_missed(gt, predictions) == {
        10: "never covered", 20: "split", 30: "hop", 40: "partial", 50: "extra frames"}
    # one hop, in video 3: to an object of the same class, once the first had left the view
    assert hops(gt, predictions) == {(True, False): 1}


def test_minvis_baseline_follows_each_query_by_its_embedding() -> None:
    import torch

    from daq_model.offline import MinVISLinker
    from research.minvis_baseline import linked_masks

    left, right = _box(0, 4), _box(4, 8)
    a, b = torch.tensor([1.0, 0.0, 0.2]), torch.tensor([0.0, 1.0, 0.2])
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    # frame 0: query 0 = object a (left); frame 1: the queries swap, object a is now query 1 and has
    # moved right; frame 2: back in the first order
    frames = [(torch.stack([a, b]), np.stack([left, right])),
              (torch.stack([b, a]), np.stack([left, right])),
              (torch.stack([a, b]), np.stack([left, right]))]
    linker = MinVISLinker()
    for embeds, _ in frames:
        linker.add(embeds, logits)
    link = linker.link()
    masks = np.stack([m for _, m in frames])
    followed_a = linked_masks(masks, link, 0)
    assert [bool((m == left).all()) for m in followed_a] == [True, False, True]
    assert bool((followed_a[1] == right).all())
    followed_b = linked_masks(masks, link, 1)
    assert [bool((m == right).all()) for m in followed_b] == [True, False, True]
    # the linked sequences' logits are means over the frames they hold
    assert torch.allclose(link.mean_logits[0], torch.tensor([4 / 3, 2 / 3]))


def test_mask_resolution_ceiling_keeps_large_shapes_and_loses_thin_ones() -> None:
    from research.mask_resolution_ceiling import perfect_model_ap, video_iou

    block = np.zeros((32, 32), bool)
    block[8:24, 8:24] = True  # 16 px: 4 cells of the 1/4 grid at test size 32
    assert video_iou([block], 32) > 0.95  # only the corners round off
    line = np.zeros((32, 32), bool)
    line[8:24, 15] = True  # one pixel wide: a quarter of a cell, lost below threshold 0.5
    assert video_iou([line], 32) < 0.5
    assert video_iou([line], 128) > 0.5  # four times the test size: a cell per pixel
    # every object at IoU 1 -> AP 1; one object at 0.72 -> it counts for the thresholds 0.50-0.70
    assert perfect_model_ap(np.array([1.0, 1.0])) == 1.0
    assert abs(perfect_model_ap(np.array([0.72])) - 0.5) < 1e-9
