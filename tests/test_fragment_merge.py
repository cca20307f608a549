"""daq_model.fragment_merge: which instances are merged, and how a merged instance's frames are
taken (hand-made masks)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from daq_model.config import TestConfig
from daq_model.fragment_merge import fragment_groups, merged_frames


def _rle(x0: int, x1: int) -> dict:
    m = np.zeros((4, 8), np.uint8)
    m[:, x0:x1] = 1
    return mask_utils.encode(np.asfortranarray(m))


OBJ, NEAR, OTHER = _rle(0, 4), _rle(0, 3), _rle(4, 8)  # NEAR: IoU 0.75 with OBJ


def test_groups_link_same_class_instances_that_agree_on_enough_shared_frames() -> None:
    masks = [
        {0: OBJ, 1: OBJ, 2: OBJ},             # 0: first track over the object
        {1: NEAR, 2: NEAR, 3: OBJ, 4: OBJ},   # 1: shadows it, then continues it
        {0: OTHER, 1: OTHER},                 # 2: elsewhere
        {1: OBJ, 2: OBJ},                     # 3: same masks, other class
        {2: OBJ},                             # 4: one shared frame only: never linked
        {3: OBJ, 4: NEAR},                    # 5: links to 1 (not to 0: no shared frame)
    ]
    labels, scores = [0, 0, 0, 1, 0, 0], [0.6, 0.9, 0.5, 0.4, 0.95, 0.3]
    groups = fragment_groups(labels, scores, masks, 0.5, 0.5)
    assert groups == [[1, 0, 5], [2], [3], [4]]  # by first index; members by score
    assert merged_frames(groups[0], masks) == {0: 0, 1: 1, 2: 1, 3: 1, 4: 1}
    assert fragment_groups(labels, scores, masks, 0.8, 0.5) == [[i] for i in range(6)]  # NEAR: 0.75
    assert fragment_groups(labels, scores, masks, 0.0, 0.5) == [[i] for i in range(6)]  # off
    with pytest.raises(ValueError):
        fragment_groups(labels, scores[:2], masks, 0.5, 0.5)


def test_agreement_share_counts_only_frames_both_have() -> None:
    a = {0: OBJ, 1: OBJ, 2: OBJ, 3: OBJ}
    b = {0: OBJ, 1: OBJ, 2: OTHER, 3: OTHER}  # agree on 2 of 4 shared frames
    assert fragment_groups([0, 0], [0.9, 0.8], [a, b], 0.5, 0.5) == [[0, 1]]
    assert fragment_groups([0, 0], [0.9, 0.8], [a, b], 0.5, 0.6) == [[0], [1]]


def test_config_validates_and_keeps_the_hash_when_off() -> None:
    from daq_model.config import get_preset

    with pytest.raises(ValueError, match="merge_fragments_iou"):
        TestConfig(merge_fragments_iou=1.5)
    cfg = get_preset("daq_small")
    assert cfg.with_overrides({"test.merge_fragments_agree": 0.9}).config_hash() == cfg.config_hash()
    assert cfg.with_overrides({"test.merge_fragments_iou": 0.5}).config_hash() != cfg.config_hash()


def _instances():
    from daq_model.outputs import Instance

    return [Instance(0, 7, 0, 0.6), Instance(1, 9, 0, 0.9), Instance(2, 9, 1, 0.5)]


def test_label_rows_of_merged_instances() -> None:
    from pipeline.tracks import MaskRow, merge_fragment_rows

    def row(t: int, rle: dict) -> MaskRow:
        return MaskRow(t, rle["counts"].decode("ascii"), int(mask_utils.area(rle)), (0, 0, 1, 1), 0.5, True)

    rows = [[row(0, OBJ), row(1, OBJ), row(2, OBJ)], [row(1, NEAR), row(2, NEAR), row(3, OBJ)],
            [row(1, OBJ), row(2, OBJ)]]  # instance 2: same track as 1 under another label
    test = TestConfig(merge_fragments_iou=0.5)
    instances, merged = merge_fragment_rows(_instances(), rows, (4, 8), test)
    assert [i.instance_id for i in instances] == [1, 2]  # the merged one keeps its best member's entry
    assert [r.frame_index for r in merged[0]] == [0, 1, 2, 3]
    assert [r.counts for r in merged[0]] == [rows[0][0].counts, rows[1][0].counts, rows[1][1].counts,
                                             rows[1][2].counts]
    assert merged[1] == rows[2]


def test_prediction_segmentations_of_merged_instances() -> None:
    from daq_eval.predict import merge_fragment_segmentations

    def seg(rle: dict) -> dict:
        return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}

    segs = [[seg(OBJ), seg(OBJ), seg(OBJ), None], [None, seg(NEAR), seg(NEAR), seg(OBJ)],
            [None, seg(OBJ), seg(OBJ), None]]
    instances, merged = merge_fragment_segmentations(_instances(), segs, TestConfig(merge_fragments_iou=0.5))
    assert [i.instance_id for i in instances] == [1, 2]
    assert merged[0] == [segs[0][0], segs[1][1], segs[1][2], segs[1][3]]
    assert merged[1] == segs[2]


def test_no_merge_fragments_gives_the_official_post_processing() -> None:
    import argparse

    from jobs import label, predict
    from pipeline.model_source import resolve_model, without_fragment_merging

    shipped = resolve_model(None, None)
    assert shipped.config.test.merge_fragments_iou > 0
    official = without_fragment_merging(shipped)
    assert official.config.test.merge_fragments_iou == 0
    assert official.provenance().config_hash != shipped.provenance().config_hash  # outputs never mix
    assert without_fragment_merging(official) is official
    for module in (label, predict):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert any("--no-merge-fragments" in a.option_strings for a in parser._actions), module
