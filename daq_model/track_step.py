"""What the per-video tracker did in one frame (:class:`TrackStep`).

Its own module because both per-video trackers hand it out: the DAQ tracker
(:class:`daq_model.tracking.VideoTracker`) and the referring baseline
(:class:`daq_model.referring.ReferringVideoTracker`), and :mod:`daq_model.tracking` picks between
them (:func:`daq_model.tracking.make_video_tracker`), so it imports :mod:`daq_model.referring`,
never the other way round. Re-exported by :mod:`daq_model.tracking`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from daq_model.track_state import FrameDecision
from daq_model.tracker import TrackerFrameOutput


@dataclass
class TrackStep:
    """What the tracker did in one frame."""

    frame_index: int
    output: TrackerFrameOutput
    valid: Tensor  # (R,) bool validity decision per row
    decision: FrameDecision
    active_ids: list[int]  # active list after the frame (next frame's carried tracks)
