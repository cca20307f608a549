"""DVIS-DAQ streaming inference on CPU: frames/s, peak RSS, and long-video memory growth.

Runs every scenario in its own subprocess (so each peak RSS is that run's alone), one after the
other, and prints the figures side by side:

* ``reference-online`` / ``reference-offline``: the reference case's tiny models (the bundled
  ``tests/data/reference_case1`` weights and configs) on its real frames (136x242), played back
  and forth to ``--frames`` frames;
* ``r50-360p``: the full-size R50 YTVIS19 online architecture at 360p
  (``input.min_size_test = 360``, synthetic frames). Its weights are random: every query stays
  valid, so it starts 100 tracks per frame (far more than a trained model); the "segm f/s" column
  (backbone + pixel decoder + decoder alone) is the figure a trained model with few tracks
  approaches;
* ``long-short`` / ``long``: the reference case's offline model on ``--short-frames`` and
  ``--long-frames`` frames at a 68-pixel short side, with a ``--feature-cache-mb`` mask-feature
  cache (both runs outgrow it, so ``finish`` replays the frames), every final mask decoded; the
  ratio of their peak RSS is the long-video memory figure (target <= 1.2). The tiny model's
  weights were made to start and stop many tracks; the long runs raise its start/keep thresholds
  (``LONG_RUN_OVERRIDES``) so that it tracks a handful of objects with births and deaths, as a
  trained model does, instead of ~150 at a time.

Usage::

    .venv/bin/python benchmarks/model_throughput.py                  # defaults: a few minutes
    .venv/bin/python benchmarks/model_throughput.py --long-frames 1000 --skip r50-360p
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CASE = REPO / "tests" / "data" / "reference_case1"
SCENARIOS = ("reference-online", "reference-offline", "r50-360p", "long-short", "long")
LONG_RUN_OVERRIDES = {"tracker.aux_inference_select_threshold": 0.3,
                      "tracker.inference_select_threshold": 0.4, "input.min_size_test": 68}

logger = logging.getLogger("benchmarks.model_throughput")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PingPongVideo:
    """``count`` frames playing ``frames`` forwards and backwards (a smooth long video), made
    batch by batch like a decoder would (the whole video is never in memory)."""

    def __init__(self, frames: np.ndarray, count: int) -> None:
        self.frames = frames
        self.count = count
        self.cycle = (np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
                      if len(frames) > 2 else np.arange(len(frames)))
        self.shape = (count, *frames.shape[1:])

    def __len__(self) -> int:
        return self.count

    def batches(self, size: int):
        for start in range(0, self.count, size):
            index = self.cycle[np.arange(start, min(start + size, self.count)) % len(self.cycle)]
            yield self.frames[index]


def _case_model(mode: str, cache_mb: float, overrides: dict | None = None):
    import torch

    from daq_model.config import load_config
    from daq_model.dvis_daq import create_model
    from daq_model.predictor import VideoPredictor

    weights = CASE / mode / "weights.pt"
    if mode == "offline":  # the slim copy stores the 4 tensors that differ from online
        state = torch.load(CASE / "online" / "weights.pt", weights_only=True)
        state.update(torch.load(CASE / "offline" / "weights_delta.pt", weights_only=True))
        weights = Path("/tmp") / "daq_benchmark_offline_weights.pt"
        torch.save(state, weights)
    cfg = load_config(CASE / mode / "config.yaml").with_overrides(overrides or {})
    return VideoPredictor(create_model(cfg, weights), feature_cache_mb=cache_mb)


def _run_child(spec: dict) -> dict:
    """One scenario in this process; returns its figures."""
    import torch

    from daq_model.outputs import VideoInfo

    torch.set_num_threads(spec["threads"])
    name = spec["name"]
    with np.load(CASE / "input.npz") as data:
        case_frames = data["frames"]
    if name == "r50-360p":
        from daq_model.config import get_preset
        from daq_model.dvis_daq import create_model
        from daq_model.predictor import VideoPredictor

        cfg = get_preset("ytvis19_online_r50").with_overrides({"input.min_size_test": 360})
        torch.manual_seed(0)
        predictor = VideoPredictor(create_model(cfg))
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (2, 360, 640, 3), dtype=np.uint8)
        frames = PingPongVideo(base, spec["r50_frames"])
    else:
        mode = "online" if name == "reference-online" else "offline"
        predictor = _case_model(mode, spec["cache_mb"],
                                LONG_RUN_OVERRIDES if name.startswith("long") else None)
        count = {"reference-online": spec["frames"], "reference-offline": spec["frames"],
                 "long-short": spec["short_frames"], "long": spec["long_frames"]}[name]
        frames = PingPongVideo(case_frames, count)
    # warm-up (first-call allocations, kernel selection) in a throwaway session
    warm = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2]))
    list(warm.push(next(frames.batches(2))))
    list(warm.flush())
    del warm
    rss_loaded = _peak_rss_mb()
    session = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2],
                                              num_frames=len(frames)))
    push = max(1, predictor.cfg.inference.frame_batch_size)
    max_tracks = 0
    start = time.perf_counter()
    for batch in frames.batches(push):
        for frame_tracks in session.push(batch):
            max_tracks = max(max_tracks, len(frame_tracks))
    streamed = time.perf_counter() - start
    state_bytes = session.state_nbytes()
    result = session.finish(replay=lambda: frames.batches(push))
    masks = 0
    if result.frame_masks is not None:
        for frame_masks in result.iter_frame_masks():
            masks += int(frame_masks.masks.sum() > 0)
    total = time.perf_counter() - start
    # the per-frame segmenter alone (what a trained model with few tracks is dominated by)
    seg_frames = next(frames.batches(min(len(frames), push)))
    with torch.inference_mode():
        clock = time.perf_counter()
        pre = predictor.model.preprocess(seg_frames)
        predictor.model.forward_features(pre.images, pre.image_size)
        seg_fps = len(seg_frames) / (time.perf_counter() - clock)
    return {"seg_fps": seg_fps, "name": name, "frames": int(len(frames)), "size": list(session.geometry.image),
            "stream_fps": len(frames) / streamed, "total_s": total, "fps": len(frames) / total,
            "peak_rss_mb": _peak_rss_mb(), "rss_after_load_mb": rss_loaded,
            "state_mb": state_bytes / 2 ** 20, "max_tracks_per_frame": max_tracks,
            "instances": len(result.instances), "released_records": float(
                session.tracker.hub.num_released)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48, help="frames of the reference runs")
    parser.add_argument("--r50-frames", type=int, default=6, help="frames of the R50 360p run")
    parser.add_argument("--short-frames", type=int, default=300)
    parser.add_argument("--long-frames", type=int, default=3000)
    parser.add_argument("--feature-cache-mb", type=float, default=16.0,
                        help="offline mask-feature cache of the runs (default 16 MB)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument("--skip", nargs="*", default=[], choices=SCENARIOS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("daq_model", "jobs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.child:
        print("RESULT " + json.dumps(_run_child(json.loads(args.child))), flush=True)
        return 0
    results: dict[str, dict] = {}
    for name in SCENARIOS:
        if name in args.skip:
            continue
        spec = {"name": name, "frames": args.frames, "r50_frames": args.r50_frames,
                "short_frames": args.short_frames, "long_frames": args.long_frames,
                "cache_mb": args.feature_cache_mb, "threads": args.threads}
        logger.info("running %s ...", name)
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO,
                              capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            logger.error("%s failed:\n%s", name, proc.stderr[-4000:])
            return 1
        results[name] = json.loads(line[len("RESULT "):])
    print(f"\n{'scenario':18s} {'frames':>6s} {'model in':>9s} {'stream f/s':>10s} {'total f/s':>9s} "
          f"{'segm f/s':>8s} {'peak RSS MB':>11s} {'state MB':>8s} {'max trk':>7s}")
    for r in results.values():
        print(f"{r['name']:18s} {r['frames']:6d} {r['size'][0]:4d}x{r['size'][1]:<4d} "
              f"{r['stream_fps']:10.2f} {r['fps']:9.2f} {r['seg_fps']:8.2f} {r['peak_rss_mb']:11.0f} "
              f"{r['state_mb']:8.2f} {r['max_tracks_per_frame']:7d}")
    if "long" in results and "long-short" in results:
        long_r, short_r = results["long"], results["long-short"]
        ratio = long_r["peak_rss_mb"] / short_r["peak_rss_mb"]
        above = ((long_r["peak_rss_mb"] - long_r["rss_after_load_mb"])
                 / max(short_r["peak_rss_mb"] - short_r["rss_after_load_mb"], 1e-9))
        print(f"\npeak RSS {long_r['frames']} frames / {short_r['frames']} frames: {ratio:.3f}x "
              f"(target <= 1.2x; above the loaded-model baseline: {above:.2f}x)")
    if "reference-online" in results and "r50-360p" in results:
        print(f"R50 360p vs reference-case model: "
              f"{results['reference-online']['fps'] / results['r50-360p']['fps']:.1f}x slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
