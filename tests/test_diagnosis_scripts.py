"""scripts/id_switch_causes.py: every id change of an object is classified by hand-made frames."""

from __future__ import annotations

import numpy as np

from daq_model.outputs import FrameTracks
from scripts.id_switch_causes import classify


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
