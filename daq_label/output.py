"""Read a label job's OUTPUT: its three tables as Arrow tables, and its masks as NumPy arrays.

    from daq_label import open_output

    out = open_output("out/samples")              # any fsspec URL: gs://..., s3://...
    videos = out.videos()                           # pyarrow.Table, one row per video
    tracks = out.tracks(video_ids=[videos["video_id"][0].as_py()])
    mask = out.decode_mask(video_id, track_id, frame_index)   # (height, width) bool array
    for frame in out.iter_frames(video_id):                     # every decoded frame, in order
        frame.masks                                             # (n, height, width) bool

A video's rows are read from its own files (``<table>/<video_id>.parquet``), so asking for a few
videos of a large OUTPUT reads only those. Videos are listed from ``videos/``: the job writes that
table last, so a video listed there has all three tables (``_done/`` markers come after them).
pandas and DuckDB are optional: :meth:`Output.pandas` and :meth:`Output.duckdb` import them only
when called.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pycocotools import mask as mask_utils

from pipeline.storage import OutputLayout
from schemas.tables import TABLES, table_spec

logger = logging.getLogger(__name__)

TABLE_NAMES = tuple(t.name for t in TABLES)


class OutputError(ValueError):
    """OUTPUT is not a label job's output, or a video / track / frame asked for is not in it."""


@dataclass(frozen=True)
class FrameMasks:
    """The masks of one decoded frame: row ``i`` of ``masks`` belongs to ``track_ids[i]``."""

    video_id: str
    frame_index: int
    track_ids: np.ndarray        # (n,) int32, ascending
    category_ids: np.ndarray     # (n,) int32
    category_names: tuple[str, ...]
    scores: np.ndarray           # (n,) float32, the instances' video-level scores
    masks: np.ndarray            # (n, height, width) bool; n may be 0


def decode_rle(rle: dict) -> np.ndarray:
    """(height, width) bool mask of one ``mask`` value of the tracks table (COCO compressed RLE)."""
    counts = rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]),
                              "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
                             ).astype(bool)


def decode_rles(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
    """(n, height, width) bool masks of several ``mask`` values (one pycocotools call)."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    coco = [{"size": list(r["size"]),
             "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]}
            for r in rles]
    return np.ascontiguousarray(mask_utils.decode(coco).transpose(2, 0, 1)).astype(bool)


class Output:
    """A label job's OUTPUT directory (read only). Use :func:`open_output` to make one."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.layout = OutputLayout(url, storage_options)
        self.fs = self.layout.fs
        self.url = self.layout.url
        if not self.fs.exists(posixpath.join(self.layout.root, "videos")):
            raise OutputError(f"{url} is not a daq-label output: it has no videos/ table "
                              f"(run 'daq-label label INPUT {url}' first)")
        self._video_ids: list[str] | None = None
        self._cached_video: tuple[str, dict[tuple[int, int], dict], pa.Table] | None = None

    def __repr__(self) -> str:
        return f"Output({self.url!r})"

    # ------------------------------------------------------------------ tables

    def video_ids(self) -> list[str]:
        """Ids of every video with its tables written, sorted."""
        if self._video_ids is None:
            directory = posixpath.join(self.layout.root, "videos")
            self._video_ids = sorted(posixpath.basename(p)[: -len(".parquet")]
                                     for p in self.fs.find(directory) if p.endswith(".parquet"))
        return list(self._video_ids)

    def provenance(self) -> dict[str, Any]:
        """The run's ``_provenance.json`` (model name, checkpoint sha256, config, version)."""
        with self.fs.open(self.layout.provenance_path, "rb") as handle:
            return json.loads(handle.read().decode())

    def table(self, name: str, video_ids: Iterable[str] | None = None,
              columns: Sequence[str] | None = None, filter: ds.Expression | None = None) -> pa.Table:
        """Table ``name`` (``tracks``, ``track_summary`` or ``videos``) as one Arrow table with its
        versioned schema, for ``video_ids`` (default: every video). ``columns`` and ``filter``
        (a ``pyarrow.dataset`` expression, e.g. ``ds.field("score") > 0.5``) are pushed down."""
        if name not in TABLE_NAMES:
            raise OutputError(f"unknown table {name!r}; tables: {', '.join(TABLE_NAMES)}")
        schema = table_spec(name).schema
        ids = self.video_ids() if video_ids is None else self._known(video_ids)
        paths = [self.layout.table_path(name, vid) for vid in ids]
        if not paths:
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns is not None else empty
        dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=self.fs)
        return dataset.to_table(columns=list(columns) if columns is not None else None, filter=filter)

    def videos(self, video_ids: Iterable[str] | None = None, **kwargs: Any) -> pa.Table:
        """One row per video: source, status and reason, decode facts, label-health figures."""
        return self.table("videos", video_ids, **kwargs)

    def tracks(self, video_ids: Iterable[str] | None = None, **kwargs: Any) -> pa.Table:
        """One row per (video, track, frame) with a non-empty mask."""
        return self.table("tracks", video_ids, **kwargs)

    def track_summary(self, video_ids: Iterable[str] | None = None, **kwargs: Any) -> pa.Table:
        """One row per (video, track): category, score, first/last frame, frames present, area."""
        return self.table("track_summary", video_ids, **kwargs)

    def pandas(self, name: str, video_ids: Iterable[str] | None = None, **kwargs: Any) -> Any:
        """Table ``name`` as a pandas DataFrame (needs ``pip install pandas``)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("Output.pandas needs pandas: pip install pandas") from None
        return self.table(name, video_ids, **kwargs).to_pandas()

    def duckdb(self, name: str, video_ids: Iterable[str] | None = None,
               connection: Any = None, **kwargs: Any) -> Any:
        """Table ``name`` as a DuckDB relation (needs ``pip install duckdb``)."""
        try:
            import duckdb
        except ImportError:
            raise ImportError("Output.duckdb needs duckdb: pip install duckdb") from None
        con = connection if connection is not None else duckdb.connect()
        return con.from_arrow(self.table(name, video_ids, **kwargs))

    # ------------------------------------------------------------------ masks

    def frame_size(self, video_id: str) -> tuple[int, int]:
        """(height, width) of the video's labelled frames."""
        row = self._video_row(video_id)
        if row["height"] is None or row["width"] is None:
            raise OutputError(f"video {video_id} has no frame size (status {row['status']}: "
                              f"{row['error_message']})")
        return int(row["height"]), int(row["width"])

    def decode_mask(self, video_id: str, track_id: int, frame_index: int) -> np.ndarray:
        """The (height, width) bool mask of one track in one frame. A frame of the video where
        the track has no mask gives an all-False mask; an unknown video or track, or a frame
        outside the decoded frames, raises :class:`OutputError`."""
        masks, _ = self._video_masks(video_id)
        track_ids = {t for t, _ in masks}
        if int(track_id) not in track_ids:
            raise OutputError(f"video {video_id} has no track {track_id} "
                              f"(tracks: {sorted(track_ids) or 'none'})")
        frames = int(self._video_row(video_id)["frames_decoded"])
        if not 0 <= int(frame_index) < frames:
            raise OutputError(f"frame {frame_index} is outside video {video_id}'s "
                              f"{frames} decoded frame(s)")
        rle = masks.get((int(track_id), int(frame_index)))
        if rle is None:
            return np.zeros(self.frame_size(video_id), dtype=bool)
        return decode_rle(rle)

    def iter_frames(self, video_id: str, track_ids: Iterable[int] | None = None) -> Iterator[FrameMasks]:
        """Every decoded frame of the video in order (frames without masks included, with n = 0),
        with the masks of its tracks (``track_ids`` to keep some only)."""
        row = self._video_row(video_id)
        frames = int(row["frames_decoded"])
        if frames == 0:
            return
        height, width = self.frame_size(video_id)
        _, table = self._video_masks(video_id)
        if track_ids is not None:
            table = table.filter(pc.is_in(table["track_id"], pa.array(sorted(set(map(int, track_ids))),
                                                                       pa.int32())))
        table = table.sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
        frame_col = table["frame_index"].to_numpy()
        starts = np.searchsorted(frame_col, np.arange(frames + 1))
        track_col = table["track_id"].to_numpy()
        cat_col = table["category_id"].to_numpy()
        name_col = table["category_name"].to_pylist()
        score_col = table["score"].to_numpy()
        mask_col = table["mask"].to_pylist()
        for f in range(frames):
            lo, hi = int(starts[f]), int(starts[f + 1])
            yield FrameMasks(video_id, f, track_col[lo:hi], cat_col[lo:hi], tuple(name_col[lo:hi]),
                             score_col[lo:hi], decode_rles(mask_col[lo:hi], height, width))

    # ------------------------------------------------------------------ internals

    def _known(self, video_ids: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(str(v) for v in video_ids))
        known = set(self.video_ids())
        missing = [v for v in wanted if v not in known]
        if missing:
            raise OutputError(f"{self.url} has no video(s) {', '.join(missing[:10])}"
                              f"{' ...' if len(missing) > 10 else ''}")
        return wanted

    def _video_row(self, video_id: str) -> dict[str, Any]:
        rows = self.videos([video_id]).to_pylist()
        if not rows:
            raise OutputError(f"video {video_id}: its videos file is empty")
        return rows[0]

    def _video_masks(self, video_id: str) -> tuple[dict[tuple[int, int], dict], pa.Table]:
        """(track_id, frame_index) -> RLE of one video, cached for the last video asked."""
        if self._cached_video is None or self._cached_video[0] != video_id:
            table = self.tracks([video_id], columns=["track_id", "frame_index", "category_id",
                                                     "category_name", "score", "mask"])
            masks = {(t, f): m for t, f, m in zip(table["track_id"].to_pylist(),
                                                  table["frame_index"].to_pylist(),
                                                  table["mask"].to_pylist())}
            self._cached_video = (video_id, masks, table)
        return self._cached_video[1], self._cached_video[2]


def open_output(url: str, storage_options: dict[str, Any] | None = None) -> Output:
    """Open a label job's OUTPUT (a local path or any fsspec URL) for reading."""
    return Output(url, storage_options)
