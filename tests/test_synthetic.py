"""The synthetic video generator: shapes, determinism, annotation consistency, event rates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from daq_eval.tracking_metrics import evaluate_tracking, presence_runs
from daq_eval.video_ap import evaluate_video_ap
from daq_eval.ytvis_format import read_dataset, read_predictions
from daq_train.synthetic import (PRESETS, SynthConfig, get_preset, make_backgrounds, render_video,
                                 video_annotations, write_synthetic_dataset)
from daq_train.synthetic_shapes import SHAPES
from jobs.cli import main as cli_main

FAST = SynthConfig(name="fast", num_videos=4, frames=10, height=48, width=64, objects=(2, 4),
                   background="none", image_format="png", p_late_entry=0.4, p_early_exit=0.4,
                   p_reappear=0.5, gap_frames=(1, 3), min_visible_frames=2)


def test_shapes_fit_the_unit_disc_and_differ() -> None:
    g = np.linspace(-1.2, 1.2, 241)
    u, v = np.meshgrid(g, g)
    r = np.hypot(u, v)
    masks = {}
    for name, shape in SHAPES.items():
        m = shape.inside(u, v)
        assert m.any() and r[m].max() <= 1.0 + 1e-9, name
        if shape.inradius > 0:
            assert m[r <= shape.inradius * 0.999].all(), f"{name}: inradius disc not covered"
        masks[name] = m
    names = list(masks)
    for i, a in enumerate(names):  # distinct outlines: no two shapes overlap by IoU > .85
        for b in names[i + 1:]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.85, (a, b, iou)


def test_config_validation_and_presets() -> None:
    assert {"tiny", "train", "val", "train_appear_disappear", "heldout_appear_disappear"} <= set(PRESETS)
    assert get_preset("train", num_videos=5).num_videos == 5
    with pytest.raises(KeyError, match="unknown synthetic preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="unknown shape"):
        SynthConfig(categories=("disc", "blob"))
    with pytest.raises(ValueError, match="frames must be >="):
        SynthConfig(frames=5)
    with pytest.raises(ValueError, match="p_reappear"):
        SynthConfig(p_reappear=1.5)
    with pytest.raises(ValueError, match="background"):
        SynthConfig(background="webcam")


def test_render_is_deterministic_per_seed_and_video() -> None:
    cfg = get_preset("tiny")  # real-footage backgrounds
    bg = make_backgrounds(cfg)
    a, b = render_video(cfg, 3, 1, bg), render_video(cfg, 3, 1, make_backgrounds(cfg))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.frames, render_video(cfg, 4, 1, bg).frames)
    assert not np.array_equal(a.frames, render_video(cfg, 3, 2, bg).frames)
    assert a.frames.shape == (cfg.frames, cfg.height, cfg.width, 3) and a.frames.dtype == np.uint8


def test_class_hue_gives_each_category_a_colour_family_and_changes_nothing_else() -> None:
    plain = replace(FAST, frames=8, num_videos=1, objects=(3, 4), class_hue=0.0)
    cued = replace(plain, class_hue=0.15)
    assert get_preset("train").class_hue > 0 and get_preset("tiny").class_hue == 0
    with pytest.raises(ValueError, match="class_hue"):
        replace(plain, class_hue=1.5)
    hits, total = 0, 0
    for seed in range(4):
        a, b = render_video(plain, seed, 0), render_video(cued, seed, 0)
        np.testing.assert_array_equal(a.labels, b.labels)  # same objects, motion and events
        assert [o.category for o in a.objects] == [o.category for o in b.objects]
        for k, obj in enumerate(b.objects):
            pixels = b.frames[b.labels == k + 1].astype(np.float64) / 255.0
            if len(pixels) == 0:
                continue
            hi, lo = pixels.max(1), pixels.min(1)
            chroma = hi - lo
            keep = chroma > 0.15  # hue is meaningless for greyish pixels
            r, g, bl = pixels[keep].T
            c = chroma[keep]
            hue = np.where(hi[keep] == r, ((g - bl) / c) % 6, np.where(hi[keep] == g, (bl - r) / c + 2,
                                                                       (r - g) / c + 4)) / 6.0
            centre = FAST.categories.index(obj.category) / len(FAST.categories)
            distance = np.abs((hue - centre + 0.5) % 1.0 - 0.5)
            hits += int((distance <= 0.075 + 0.02).sum())  # band half-width + JPEG-free rounding
            total += int(keep.sum())
    assert total > 100 and hits / total > 0.97, (hits, total)


@pytest.fixture(scope="module")
def fast_dataset(tmp_path_factory) -> tuple[Path, SynthConfig]:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(FAST, root, seed=11)
    return root, FAST


def test_written_dataset_matches_what_was_drawn(fast_dataset) -> None:
    root, cfg = fast_dataset
    ds = read_dataset(root / "annotations.json")  # validates the format
    assert len(ds.videos) == cfg.num_videos and [c.name for c in ds.categories] == list(cfg.categories)
    assert ds.extra["info"]["seed"] == 11
    for video in ds.videos:
        rendered = render_video(cfg, 11, video.id - 1)
        assert (video.height, video.width, video.length) == (cfg.height, cfg.width, cfg.frames)
        for t, name in enumerate(video.file_names):
            img = np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB"))
            np.testing.assert_array_equal(img, rendered.frames[t])  # png: lossless
        # nothing drawn is missing from the masks: outside them is the flat background only
        outside = rendered.frames[rendered.labels == 0]
        assert len(np.unique(outside, axis=0)) == 1
        anns = ds.annotations_by_video[video.id]
        annotated = []
        for ann in anns:
            masks = [None if s is None else mask_util.decode(s).astype(bool) for s in ann.segmentations]
            first = next(t for t, m in enumerate(masks) if m is not None)
            (k,) = np.unique(rendered.labels[first][masks[first]])  # one drawn object per annotation
            annotated.append(int(k))
            for t, m in enumerate(masks):
                drawn = rendered.labels[t] == k
                if m is None:
                    assert not drawn.any() and ann.areas[t] is None and ann.bboxes[t] is None
                    continue
                np.testing.assert_array_equal(m, drawn)
                assert ann.areas[t] == int(m.sum()) > 0
                assert list(ann.bboxes[t]) == pytest.approx(mask_util.toBbox(ann.segmentations[t]).tolist())
                ys, xs = np.nonzero(m)
                assert list(ann.bboxes[t]) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            meta = ann.extra["synth"]
            runs = presence_runs(np.array([m is not None for m in masks]))
            assert (meta["first_frame"], meta["last_frame"]) == (runs[0][0], runs[-1][1] - 1)
            assert meta["appears_late"] == (runs[0][0] > 0)
            assert meta["leaves_early"] == (runs[-1][1] < cfg.frames)
            assert meta["reappearances"] == len(runs) - 1
            assert all((f is None) == (m is None) for f, m in zip(meta["visible_fraction"], masks))
            assert all(0 < f <= 1 for f in meta["visible_fraction"] if f is not None)
        # every object visible somewhere has exactly one annotation
        assert sorted(annotated) == sorted(int(k) for k in np.unique(rendered.labels) if k)


def test_ground_truth_as_predictions_scores_perfectly(fast_dataset) -> None:
    root, _ = fast_dataset
    gt = json.loads((root / "annotations.json").read_text())
    preds = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
              "segmentations": a["segmentations"]} for a in gt["annotations"]]
    (root / "preds.json").write_text(json.dumps(preds))
    ds = read_dataset(root / "annotations.json")
    p = read_predictions(root / "preds.json", ds)
    stats = evaluate_video_ap(ds, p).stats
    for k in ("AP", "AP50", "AP75", "APs", "AR10", "AR100", "ARs"):
        assert stats[k] == pytest.approx(1.0), k
    assert stats["APm"] == -1 and stats["APl"] == -1  # 48x64 frames: every object is small
    tr = evaluate_tracking(ds, p)
    assert tr["id_switches"] == 0 and tr["matched_frame_fraction"] == 1.0
    assert tr["pickup_new_objects"]["mean_latency_frames"] in (0.0, None)
    assert tr["reappearance"]["same_identity"] == tr["reappearance"]["events"]


def _realized(cfg: SynthConfig, seed: int, scripted_only: bool = True) -> tuple[int, float, float, float]:
    n = late = early = back = 0
    for i in range(cfg.num_videos):
        for a in video_annotations(render_video(cfg, seed, i), cfg, i + 1, 1):
            if scripted_only and a.extra["synth"]["role"] != "scripted":
                continue
            runs = presence_runs(np.array([s is not None for s in a.segmentations]))
            n += 1
            late += runs[0][0] > 0
            early += runs[-1][1] < cfg.frames
            back += len(runs) > 1
    return n, late / n, early / n, back / n


def test_event_rates_follow_the_config() -> None:
    cfg = SynthConfig(name="rates", num_videos=150, frames=16, height=48, width=48, objects=(2, 4),
                      background="plain", p_late_entry=0.5, p_early_exit=0.3, p_reappear=0.4,
                      gap_frames=(2, 3))
    n, late, early, back = _realized(cfg, seed=0)
    assert n > 400
    # measured from the null pattern of the annotations themselves; ~3 sigma of a binomial
    assert late == pytest.approx(0.5, abs=0.07)
    assert early == pytest.approx(0.3, abs=0.07)
    assert back == pytest.approx(0.4, abs=0.07)
    # extremes are exact: a lone object is never hidden by accident
    lone = replace(cfg, num_videos=30, objects=(1, 1))
    assert _realized(replace(lone, p_late_entry=0, p_early_exit=0, p_reappear=0), 1)[1:] == (0, 0, 0)
    assert _realized(replace(lone, p_late_entry=1, p_early_exit=1, p_reappear=1), 1)[1:] == (1, 1, 1)


def test_occlusion_gaps_hide_the_object_completely() -> None:
    cfg = replace(get_preset("heldout_appear_disappear"), num_videos=25, background="none",
                  height=96, width=96, p_reappear=1.0, p_gap_by_occlusion=1.0)
    occlusions = 0
    for i in range(cfg.num_videos):
        video = render_video(cfg, 5, i)
        for k, obj in enumerate(video.objects):
            for g0, g1, cause in obj.gaps:
                if cause == "occlusion":
                    occlusions += 1
                    assert not (video.labels[g0:g1] == k + 1).any()
                    assert video.full_areas[k, g0:g1].min() > 0  # drawn, but behind another object
    assert occlusions >= 15


def test_cli_synth_then_evaluate(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    args = ["synth", str(out), "--preset", "tiny", "--videos", "2", "--seed", "1", "--size", "48x40",
            "--background", "plain"]
    assert cli_main(args) == 0
    ds = read_dataset(out / "annotations.json")
    assert len(ds.videos) == 2 and (ds.videos[0].height, ds.videos[0].width) == (48, 40)
    assert (out / "JPEGImages" / ds.videos[0].file_names[0]).is_file()
    assert cli_main(args) == 2  # refuses to overwrite
    assert cli_main(args + ["--overwrite"]) == 0
    gt = json.loads((out / "annotations.json").read_text())
    preds = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
              "segmentations": a["segmentations"]} for a in gt["annotations"]]
    (tmp_path / "p.json").write_text(json.dumps(preds))
    capsys.readouterr()
    assert cli_main(["evaluate", str(tmp_path / "p.json"), str(out / "annotations.json"),
                     "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["tracking"]["id_switches"] == 0
    assert "Video AP" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("[{}]")
    assert cli_main(["evaluate", str(tmp_path / "bad.json"), str(out / "annotations.json")]) == 2
