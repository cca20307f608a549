"""Long videos in chunks against the whole video, with the shipped model on synthetic videos
whose true objects are known (pipeline/chunk_label.py + pipeline/stitching.py).

For each video: labelled whole (pipeline.labeler.label_video) and in chunks (plan_chunks, one
session per chunk, stitch). A track "follows" the true object it overlaps best (mean mask IoU over
its frames >= 0.3). Figures:

* ``stitch accuracy``: of the boundary crossings (a true object followed by tracks with masks in
  the shared frames on both sides of a chunk boundary), the fraction where such tracks got one
  global id (:func:`pipeline.stitching.crossing_accuracy`); ``false joins``: true objects beyond
  the first among the chunk tracks under one global id;
* ``ids per object``: distinct output track ids following each found true object (1 is ideal),
  whole and chunked: what cutting the video costs the tracking;
* tracks written and model seconds, whole and chunked.

Usage::

    .venv/bin/python benchmarks/long_video_stitching.py --videos 6 --frames 120 --chunk 48 --overlap 12
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from pycocotools import mask as mask_utils

from daq_train.synthetic import get_preset, make_backgrounds, render_video
from pipeline.chunk_label import ChunkTask, label_chunk
from pipeline.chunking import ChunkSettings, plan_chunks, shared_frames
from pipeline.handler import load_predictor
from pipeline.inputs import make_ref
from pipeline.labeler import LabelSettings, label_video
from pipeline.model_source import resolve_model
from pipeline.stitching import ChunkTracks, crossing_accuracy, stitch
from pipeline.tables import tracks_table

logger = logging.getLogger("long_video_stitching")


def write_video(frames: np.ndarray, path: Path, fps: int = 25) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "fast"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def follows(rows: list[dict], labels: np.ndarray, min_iou: float = 0.3) -> int | None:
    """The true object (label value) a track's rows follow, or None."""
    best, best_iou = None, min_iou
    for k in range(1, int(labels.max()) + 1):
        ious = []
        for row in rows:
            truth = mask_utils.encode(np.asfortranarray((labels[row["frame_index"]] == k).astype(np.uint8)))
            mask = {"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode("ascii")}
            ious.append(float(mask_utils.iou([mask], [truth], [0])[0][0]))
        if ious and float(np.mean(ious)) > best_iou:
            best, best_iou = k, float(np.mean(ious))
    return best


def by_track(table) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in table.to_pylist():
        out.setdefault(row["track_id"], []).append(row)
    return out


def ids_per_object(tracks: dict[int, int | None]) -> list[int]:
    """For each true object followed by some track: how many track ids follow it."""
    counts: dict[int, int] = {}
    for obj in tracks.values():
        if obj is not None:
            counts[obj] = counts.get(obj, 0) + 1
    return list(counts.values())


def one_video(index: int, args: argparse.Namespace, loaded, provenance, workdir: Path) -> dict:
    config = get_preset("heldout_appear_disappear", frames=args.frames)
    video = render_video(config, seed=args.seed, index=index, backgrounds=make_backgrounds(config))
    ref = make_ref(str(write_video(video.frames, workdir / f"video{index}.mp4")))
    clock = time.perf_counter()
    whole = label_video(ref, loaded.predictor, loaded.config, provenance, LabelSettings(frames_per_push=5))
    whole_s = time.perf_counter() - clock
    whole_follow = {t: follows(rows, video.labels) for t, rows in by_track(whole.tracks).items()}
    chunks = plan_chunks(args.frames, ChunkSettings(args.chunk, args.overlap))
    clock = time.perf_counter()
    parts = [label_chunk(ChunkTask(ref, c), loaded.predictor, loaded.config, provenance.key, 5) for c in chunks]
    chunk_s = time.perf_counter() - clock
    result = stitch([ChunkTracks(p.chunk, p.tracks) for p in parts])
    truth = {(p.chunk.index, t): follows(rows, video.labels) for p in parts for t, rows in by_track(p.tracks).items()}
    crossings = []
    for a, b in zip(parts, parts[1:]):
        shared = set(shared_frames(a.chunk, b.chunk))
        in_a = {r["track_id"] for r in a.tracks.to_pylist() if r["frame_index"] in shared}
        in_b = {r["track_id"] for r in b.tracks.to_pylist() if r["frame_index"] in shared}
        crossings += [((a.chunk.index, x), (b.chunk.index, y)) for x in in_a for y in in_b
                      if truth[(a.chunk.index, x)] is not None
                      and truth[(a.chunk.index, x)] == truth[(b.chunk.index, y)]]
    figures = crossing_accuracy(truth, result, crossings)
    stitched = tracks_table(ref.video_id, result.instances, [], 25.0, provenance.key, *parts[0].size)
    stitched_follow = {t: follows(rows, video.labels) for t, rows in by_track(stitched).items()}
    return {"video": index, "true_objects": int(video.labels.max()), "chunks": len(chunks),
            **{k: figures[k] for k in ("crossings", "stitched_right", "false_joins")},
            "matched": result.report.matched, "mean_matched_iou": result.report.mean_matched_iou,
            "tracks_whole": whole.video_row["num_tracks"], "tracks_chunked": len(result.instances),
            "ids_per_object_whole": ids_per_object(whole_follow),
            "ids_per_object_chunked": ids_per_object(stitched_follow),
            "model_s_whole": round(whole_s, 2), "model_s_chunked": round(chunk_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--chunk", type=int, default=48)
    parser.add_argument("--overlap", type=int, default=12)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    spec = resolve_model(None, None)
    loaded = load_predictor(spec, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.videos):
            rows.append(one_video(index, args, loaded, spec.provenance(), Path(tmp)))
            print(json.dumps(rows[-1]))
    crossings = sum(r["crossings"] for r in rows)
    whole_ids = [n for r in rows for n in r["ids_per_object_whole"]]
    chunk_ids = [n for r in rows for n in r["ids_per_object_chunked"]]
    total = {"videos": len(rows), "frames": args.frames, "chunk": args.chunk, "overlap": args.overlap,
             "crossings": crossings, "stitch_accuracy": sum(r["stitched_right"] for r in rows) / crossings
             if crossings else None, "false_joins": sum(r["false_joins"] for r in rows),
             "mean_ids_per_object_whole": float(np.mean(whole_ids)) if whole_ids else None,
             "mean_ids_per_object_chunked": float(np.mean(chunk_ids)) if chunk_ids else None,
             "objects_found_whole": len(whole_ids), "objects_found_chunked": len(chunk_ids),
             "true_objects": sum(r["true_objects"] for r in rows),
             "tracks_whole": sum(r["tracks_whole"] for r in rows),
             "tracks_chunked": sum(r["tracks_chunked"] for r in rows),
             "model_s_whole": round(sum(r["model_s_whole"] for r in rows), 1),
             "model_s_chunked": round(sum(r["model_s_chunked"] for r in rows), 1)}
    print(json.dumps(total, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"total": total, "videos": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
