"""daq-label's user-facing Python API: read a label job's OUTPUT, filter it, export it.

    from daq_label import open_output
    out = open_output("out/samples")
    out.videos(), out.tracks(), out.track_summary()    # pyarrow Tables
    out.decode_mask(video_id, track_id, frame_index)   # (height, width) bool array

See daq_label/output.py (reading) and daq_label/exports/ (YouTube-VIS, MOTS, CVAT, Label Studio).
"""

from daq_label.output import FrameMasks, Output, OutputError, decode_rle, open_output

__all__ = ["FrameMasks", "Output", "OutputError", "decode_rle", "open_output"]
