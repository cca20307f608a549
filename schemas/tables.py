"""Versioned Arrow schemas of the label job's three tables: ``tracks``, ``track_summary``, ``videos``.

Every Parquet file we write carries its table name and schema version in the Arrow schema
metadata (``daq_label.table``, ``daq_label.schema_version``) and in the Parquet key-value metadata,
so a reader (or ``daq-label validate``) can tell what a file is without its path.

Versioning rule: adding a nullable column at the end is a minor change that keeps the version;
renaming, removing or retyping a column, or changing what a value means, bumps the version. The
validator accepts exactly the versions listed in :data:`SCHEMAS`.

Column meanings are documented in the ``description`` field metadata of each column (readable
with ``schema.field(name).metadata``) and in README.md ("Outputs").
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TABLE_KEY = b"daq_label.table"
VERSION_KEY = b"daq_label.schema_version"

#: OUTPUT layout: ``<table>/<video_id>.parquet`` per table, plus these (see pipeline/storage.py).
DONE_DIR = "_done"
TMP_DIR = "_tmp"
PROVENANCE_FILE = "_provenance.json"
CLAIMS_DIR = "_claims"  # who labels a video now (pipeline/claims.py)
ATTEMPTS_DIR = "_attempts"  # starts of a video not finished yet (pipeline/claims.py)

#: Status values of ``videos.status``.
STATUSES = ("ok", "partial", "failed")


def _f(name: str, type_: pa.DataType, nullable: bool, description: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"description": description.encode()})


BBOX_TYPE = pa.list_(pa.float32(), 4)
RLE_TYPE = pa.struct([
    pa.field("size", pa.list_(pa.int32(), 2), nullable=False),
    pa.field("counts", pa.string(), nullable=False),
])

_PROVENANCE = _f("provenance_key", pa.string(), False,
                 "hash of (model name, checkpoint sha256, config hash, package version) of the run "
                 "that wrote this row; rows of different runs never share a key")

_TRACK_ID = _f("track_id", pa.int32(), False,
               "id of the labelled instance within its video: the index of the (track, class) entry "
               "in the model's final result (0 = highest score)")
_TRACKER_ID = _f("tracker_track_id", pa.int64(), False,
                 "the online tracker's id of the track this instance comes from (-1: offline "
                 "candidate that no tracker track backs); two instances may share it with "
                 "different categories")
_CATEGORY_ID = _f("category_id", pa.int32(), False,
                  "category id: the model's contiguous class label + 1 (COCO style, 0 unused)")
_CATEGORY_NAME = _f("category_name", pa.string(), False,
                    "class name from the model config (class_<label> when it has none)")
_SCORE = _f("score", pa.float32(), False,
            "the instance's video-level score from the model's final result")

TRACKS_V1 = pa.schema(
    [
        _f("video_id", pa.string(), False, "stable id of the source video (see videos.source_url)"),
        _TRACK_ID,
        _TRACKER_ID,
        _f("frame_index", pa.int32(), False, "0-based index of the decoded frame"),
        _f("timestamp_s", pa.float64(), False,
           "presentation time of the frame in seconds on the container's clock "
           "(frame_index / fps when the frame has no timestamp)"),
        _CATEGORY_ID,
        _CATEGORY_NAME,
        _SCORE,
        _f("frame_score", pa.float32(), True,
           "the tracker's foreground score of this track in this frame (null when no tracker "
           "entry backs the mask)"),
        _f("tracker_valid", pa.bool_(), True,
           "whether the tracker judged the object present in this frame (false: carried while "
           "absent); null when no tracker entry backs the mask"),
        _f("bbox", BBOX_TYPE, False, "tight box of the mask, [x, y, width, height] in pixels"),
        _f("area", pa.int64(), False, "mask area in pixels (> 0: rows exist only for non-empty masks)"),
        _f("mask", RLE_TYPE, False,
           "COCO RLE of the binary mask: size = [height, width] of the displayed frame, counts = "
           "compressed RLE string (pycocotools.mask.decode({'size': ..., 'counts': ...}))"),
        _PROVENANCE,
    ],
    metadata={TABLE_KEY: b"tracks", VERSION_KEY: b"1"},
)

TRACK_SUMMARY_V1 = pa.schema(
    [
        _f("video_id", pa.string(), False, "stable id of the source video"),
        _TRACK_ID,
        _TRACKER_ID,
        _CATEGORY_ID,
        _CATEGORY_NAME,
        _SCORE,
        _f("first_frame", pa.int32(), False, "first frame with a non-empty mask"),
        _f("last_frame", pa.int32(), False, "last frame with a non-empty mask"),
        _f("frames_present", pa.int32(), False, "frames with a non-empty mask (rows in tracks)"),
        _f("first_timestamp_s", pa.float64(), False, "timestamp_s of first_frame"),
        _f("last_timestamp_s", pa.float64(), False, "timestamp_s of last_frame"),
        _f("mean_frame_score", pa.float32(), False,
           "mean over present frames of frame_score (score where frame_score is null)"),
        _f("max_frame_score", pa.float32(), False,
           "max over present frames of frame_score (score where frame_score is null)"),
        _f("mean_area", pa.float64(), False, "mean mask area in pixels over present frames"),
        _PROVENANCE,
    ],
    metadata={TABLE_KEY: b"track_summary", VERSION_KEY: b"1"},
)

VIDEOS_V1 = pa.schema(
    [
        _f("video_id", pa.string(), False, "stable id: sha256 of the canonical source URL, 20 hex"),
        _f("source_url", pa.string(), False, "canonical URL the video was read from"),
        _f("status", pa.string(), False,
           "ok: every frame labelled; partial: labelled the frames that decode, some are missing "
           "or damaged; failed: nothing labelled (see error_type)"),
        _f("error_type", pa.string(), True,
           "why partial/failed: empty_file, unreadable, not_a_video, no_video_stream, "
           "unsupported_codec, no_frames_decoded, truncated, corrupt_packets, model_error; limits: "
           "file_too_large, frame_too_small, frame_too_large, aspect_ratio, too_long, pixel_budget; ..."),
        _f("error_message", pa.string(), True, "human-readable reason, naming the file"),
        _f("frames_decoded", pa.int32(), False, "frames decoded and labelled"),
        _f("frames_expected", pa.int32(), True,
           "frames the container announces (header count, else round(duration x fps))"),
        _f("frames_expected_source", pa.string(), True, "header | duration (how frames_expected was got)"),
        _f("decode_errors", pa.int32(), False, "packets whose decode failed, plus demux errors"),
        _f("width", pa.int32(), True, "width of the labelled (displayed) frames and masks"),
        _f("height", pa.int32(), True, "height of the labelled (displayed) frames and masks"),
        _f("rotation", pa.int32(), True,
           "display rotation applied to the coded frames, degrees counter-clockwise"),
        _f("fps", pa.float64(), True, "average frame rate of the video stream"),
        _f("duration_s", pa.float64(), True, "duration of the video stream (or container) in seconds"),
        _f("codec", pa.string(), True, "decoder used for the first video stream"),
        _f("container_format", pa.string(), True, "demuxer name"),
        _f("file_bytes", pa.int64(), True, "size of the source file"),
        _f("model_name", pa.string(), False, "name of the model (config name or model card)"),
        _f("checkpoint_sha256", pa.string(), False, "sha256 of the checkpoint file"),
        _f("config_hash", pa.string(), False, "DAQConfig.config_hash() of the model config"),
        _f("package_version", pa.string(), False, "daq-label version that wrote the row"),
        _PROVENANCE,
        _f("decode_seconds", pa.float64(), False, "wall time spent opening and decoding (measured)"),
        _f("model_seconds", pa.float64(), False, "wall time spent in the model (measured)"),
        _f("num_tracks", pa.int32(), False, "instances with at least one non-empty mask"),
        _f("num_tracker_tracks", pa.int32(), False, "distinct tracker tracks among them"),
        _f("short_fragments", pa.int32(), False,
           "instances present in fewer than min(5, frames_decoded) frames"),
        _f("appear_events", pa.int32(), False,
           "absent-to-present transitions over all instances, not counting presence at frame 0"),
        _f("disappear_events", pa.int32(), False,
           "present-to-absent transitions over all instances, not counting presence at the last frame"),
        _f("mean_score", pa.float32(), True, "mean instance score (null without instances)"),
        _f("tracker_tracks_started", pa.int32(), True, "tracks the online tracker created (model stats)"),
        _f("source_width", pa.int32(), True,
           "displayed width of the source frames; larger than width when the frames were "
           "downscaled at decode (--max-frame-side), the masks being at width x height"),
        _f("source_height", pa.int32(), True, "displayed height of the source frames (see source_width)"),
    ],
    metadata={TABLE_KEY: b"videos", VERSION_KEY: b"1"},
)


@dataclass(frozen=True)
class TableSpec:
    """A table we write: its name (also its directory under OUTPUT) and current schema."""

    name: str
    version: int
    schema: pa.Schema


TRACKS = TableSpec("tracks", 1, TRACKS_V1)
TRACK_SUMMARY = TableSpec("track_summary", 1, TRACK_SUMMARY_V1)
VIDEOS = TableSpec("videos", 1, VIDEOS_V1)

#: Every table written per video, in write order (the done marker comes after all of them).
TABLES: tuple[TableSpec, ...] = (TRACKS, TRACK_SUMMARY, VIDEOS)

#: (table name, version) -> schema: every version the validator accepts.
SCHEMAS: dict[tuple[str, int], pa.Schema] = {(t.name, t.version): t.schema for t in TABLES}


def table_spec(name: str) -> TableSpec:
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown table {name!r}; known: {', '.join(t.name for t in TABLES)}")


def schema_identity(schema: pa.Schema) -> tuple[str, int] | None:
    """(table, version) from a schema's metadata, or None if it carries none."""
    meta = schema.metadata or {}
    if TABLE_KEY not in meta or VERSION_KEY not in meta:
        return None
    try:
        return meta[TABLE_KEY].decode(), int(meta[VERSION_KEY])
    except ValueError:
        return None
