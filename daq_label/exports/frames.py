"""``--with-frames``: the decoded frames of the exported videos as JPEG files, named as the
exports refer to them (``images/<video_id>/<frame_index:06d>.jpg``), decoded by the label job's
own decoder (same frame indices, display rotation applied, and the same downscale where the label
job scaled large frames down: ``--max-frame-side``, see :mod:`pipeline.limits`), so a labelling
tool opens the export with its images."""

from __future__ import annotations

import io
import logging

from PIL import Image

from daq_label.exports import Destination, frame_file_name
from daq_label.filters import Selection
from pipeline.decode import StreamingDecoder

logger = logging.getLogger(__name__)

IMAGES_DIR = "images"
JPEG_QUALITY = 95


def _labelled_max_side(row: dict) -> int | None:
    """The ``max_side`` the label job scaled this video's frames down to, or None if it did not
    (the downscale is a function of the source size and the longer side only)."""
    width, height = row.get("width"), row.get("height")
    source_w, source_h = row.get("source_width"), row.get("source_height")
    if not (width and height and source_w and source_h):
        return None
    return max(width, height) if max(source_w, source_h) > max(width, height) else None


def write_frames(selection: Selection, dest: Destination, storage_options: dict | None = None) -> int:
    """Write every labelled frame of the selection's videos; returns the number written.
    Raises ValueError if a video now decodes to frames of another size than it was labelled at."""
    written = 0
    for row in selection.video_rows():
        vid, frames = row["video_id"], int(row["frames_decoded"])
        size = (int(row["height"]), int(row["width"]))
        done = 0
        with StreamingDecoder(row["source_url"], batch_size=8, storage_options=storage_options,
                              max_side=_labelled_max_side(row)) as decoder:
            for batch in decoder.batches():
                for offset, image in enumerate(batch.frames):
                    index = batch.start_index + offset
                    if index >= frames:
                        break
                    if image.shape[:2] != size:
                        raise ValueError(f"{row['source_url']}: frame {index} decodes at "
                                         f"{image.shape[1]}x{image.shape[0]}, labelled at {size[1]}x{size[0]}")
                    buffer = io.BytesIO()
                    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
                    dest.write_bytes(f"{IMAGES_DIR}/{frame_file_name(vid, index)}", buffer.getvalue())
                    done += 1
        if done < frames:
            logger.warning("%s: %d of %d labelled frames decoded now", row["source_url"], done, frames)
        written += done
    return written
