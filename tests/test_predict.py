"""daq-label predict: the YouTube-VIS prediction file of a real (random-weight) model on a tiny
synthetic set -- format, GT-shaped masks, the online (track masks) and offline (refiner masks)
paths, class mapping -- and the object subsets of daq-label evaluate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from daq_eval.predict import PredictError, category_map, predict_dataset
from daq_eval.subsets import has_presence_event, object_subset
from daq_eval.video_ap import evaluate_video_ap
from daq_eval.ytvis_format import (Category, Prediction, read_dataset, read_predictions,
                                   segmentation_to_rle, write_predictions)
from daq_model.checkpoint import save_checkpoint
from daq_model.config import ONLINE, get_preset
from daq_model.dvis_daq import DVISDAQ, create_model
from daq_model.outputs import Instance, VideoInfo
from daq_model.predictor import VideoPredictor
from daq_train.synthetic import get_preset as synth_preset
from daq_train.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("predict")
    root = base / "data"
    write_synthetic_dataset(synth_preset("tiny", background="plain"), root, seed=5)
    dataset = read_dataset(root / "annotations.json")
    names = tuple(c.name for c in sorted(dataset.categories, key=lambda c: c.id))
    cfg = get_preset("daq_small_128").with_overrides(
        {"segmenter.num_classes": len(names), "class_names": list(names),
         "input.min_size_test": 64, "input.max_size_test": 128,
         "test.merge_fragments_iou": 0.0})  # the official post-processing; merging: its own test
    torch.manual_seed(0)
    model = DVISDAQ(cfg).eval()
    ckpt = base / "model.pt"
    save_checkpoint(model, ckpt, config=cfg)
    return {"root": root, "dataset": dataset, "cfg": cfg, "ckpt": ckpt, "base": base}


def _predictor(tiny: dict, online: bool) -> VideoPredictor:
    cfg = dataclasses.replace(tiny["cfg"], meta_architecture=ONLINE) if online else tiny["cfg"]
    return VideoPredictor(create_model(cfg, tiny["ckpt"]))


def _frames(root: Path, video) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(root / "JPEGImages" / f).convert("RGB"))
                     for f in video.file_names])


def _check_format(preds: list[Prediction], tiny: dict, path: Path) -> None:
    dataset = tiny["dataset"]
    write_predictions(preds, path)
    again = read_predictions(path, dataset)  # the validating reader accepts the file
    assert len(again) == len(preds) > 0
    cat_ids = {c.id for c in dataset.categories}
    raw = json.loads(path.read_text())
    for p, obj in zip(again, raw):
        assert set(obj) == {"video_id", "category_id", "score", "segmentations"}
        video = dataset.videos_by_id[p.video_id]
        assert p.category_id in cat_ids and 0.0 <= p.score <= 1.0
        assert len(p.segmentations) == video.length
        for seg in p.segmentations:
            if seg is not None:
                assert seg["size"] == [video.height, video.width]
                assert mask_utils.area(segmentation_to_rle(seg, video.height, video.width)) > 0
    by_video = {}
    for p in preds:
        by_video.setdefault(p.video_id, []).append(p.score)
    for scores in by_video.values():  # the model's instance order: descending score
        assert scores == sorted(scores, reverse=True)


def test_online_predictions_are_the_tracks_masks(tiny: dict, tmp_path: Path) -> None:
    preds = predict_dataset(_predictor(tiny, online=True), tiny["dataset"], tiny["root"] / "JPEGImages")
    _check_format(preds, tiny, tmp_path / "online.json")
    # independently: one session over the first video's frames, masks of each instance's track
    video = tiny["dataset"].videos[0]
    predictor = _predictor(tiny, online=True)
    frames = _frames(tiny["root"], video)
    session = predictor.start_video(VideoInfo(video.height, video.width, video.length))
    stream = list(session.push(frames)) + list(session.flush())
    result = session.finish()
    mine = [p for p in preds if p.video_id == video.id]
    assert len(mine) == len(result.instances)
    for p, inst in zip(mine, result.instances):
        assert p.score == pytest.approx(inst.score)
        for frame in stream:
            expected = np.zeros((video.height, video.width), dtype=bool)
            hit = np.flatnonzero(frame.track_ids == inst.track_id)
            if hit.size:
                expected = frame.masks[hit[0]]
            seg = p.segmentations[frame.frame_index]
            got = (np.zeros_like(expected) if seg is None else
                   mask_utils.decode(segmentation_to_rle(seg, video.height, video.width)).astype(bool))
            assert np.array_equal(got, expected)


def test_fragment_merging_applies_to_the_official_predictions(tiny: dict) -> None:
    from daq_eval.predict import merge_fragment_segmentations

    official = _predictor(tiny, online=True)
    merging = VideoPredictor(create_model(
        official.cfg.with_overrides({"test.merge_fragments_iou": 0.3, "test.merge_fragments_agree": 0.3}),
        tiny["ckpt"]))
    dataset = tiny["dataset"]
    plain = predict_dataset(official, dataset, tiny["root"] / "JPEGImages")
    merged = predict_dataset(merging, dataset, tiny["root"] / "JPEGImages")
    assert len(merged) < len(plain)  # random weights: many overlapping tracks of one class
    for video in dataset.videos:
        mine = [p for p in plain if p.video_id == video.id]
        instances = [Instance(i, i, p.category_id, p.score) for i, p in enumerate(mine)]
        _, segs = merge_fragment_segmentations(instances, [list(p.segmentations) for p in mine],
                                               merging.cfg.test)
        assert [list(p.segmentations) for p in merged if p.video_id == video.id] == segs


def test_offline_predictions_are_the_refiners_masks(tiny: dict, tmp_path: Path) -> None:
    preds = predict_dataset(_predictor(tiny, online=False), tiny["dataset"], tiny["root"] / "JPEGImages")
    _check_format(preds, tiny, tmp_path / "offline.json")
    video = tiny["dataset"].videos[1]
    predictor = _predictor(tiny, online=False)
    session = predictor.start_video(VideoInfo(video.height, video.width, video.length))
    for _ in session.push(_frames(tiny["root"], video)):
        pass
    result = session.finish()
    masks = np.stack([f.masks for f in result.iter_frame_masks()], axis=1)  # (N, T, H, W)
    mine = [p for p in preds if p.video_id == video.id]
    assert len(mine) == len(result.instances)
    for i, p in enumerate(mine):
        for t, seg in enumerate(p.segmentations):
            got = (np.zeros(masks.shape[2:], dtype=bool) if seg is None else
                   mask_utils.decode(segmentation_to_rle(seg, video.height, video.width)).astype(bool))
            assert np.array_equal(got, masks[i, t])


def test_category_map_by_name_and_by_order(tiny: dict) -> None:
    dataset = tiny["dataset"]
    cfg = tiny["cfg"]
    by_id = {c.name: c.id for c in dataset.categories}
    assert category_map(cfg, dataset) == [by_id[n] for n in cfg.class_names]
    # shuffled ids: names still map to their own category
    shuffled = dataclasses.replace(dataset, categories=tuple(
        Category(100 - c.id, c.name) for c in dataset.categories))
    assert category_map(cfg, shuffled) == [100 - by_id[n] for n in cfg.class_names]
    other = cfg.with_overrides({"class_names": [f"thing{i}" for i in range(cfg.num_classes)]})
    with pytest.raises(PredictError, match="category-map order"):
        category_map(other, dataset)
    ordered = sorted(c.id for c in dataset.categories)
    assert category_map(other, dataset, "order") == ordered[: cfg.num_classes]
    nameless = cfg.with_overrides({"class_names": [], "segmenter.num_classes": cfg.num_classes + 2})
    assert category_map(nameless, dataset) == ordered + [None, None]


def test_cli_predict_evaluate_and_errors(tiny: dict, tmp_path: Path) -> None:
    from jobs.cli import main

    out, metrics = tmp_path / "p.json", tmp_path / "m.json"
    rc = main(["predict", "--data", str(tiny["root"]), "--checkpoint", str(tiny["ckpt"]),
               "--out", str(out), "--mode", "online", "--videos", "2", "--evaluate",
               "--metrics", str(metrics), "--threads", "1"])
    assert rc == 0
    result = json.loads(metrics.read_text())
    assert 0.0 <= result["AP"] <= 1.0 and result["inputs"]["mode"] == "online"
    assert {p["video_id"] for p in json.loads(out.read_text())} <= {1, 2}
    assert result["tracking"]["objects"] > 0
    # the same file through daq-label evaluate gives the same AP
    rc = main(["evaluate", str(out), str(tiny["root"] / "annotations.json"), "--out", str(tmp_path / "e.json")])
    assert rc == 0
    online_cfg = tmp_path / "online.yaml"
    online_cfg.write_text(dataclasses.replace(tiny["cfg"], meta_architecture=ONLINE).to_yaml())
    rc = main(["predict", "--data", str(tiny["root"]), "--checkpoint", str(tiny["ckpt"]),
               "--config", str(online_cfg), "--mode", "offline", "--out", str(out)])
    assert rc == 2  # an online model has no refiner
    rc = main(["predict", "--data", str(tmp_path / "missing"), "--checkpoint", str(tiny["ckpt"]),
               "--out", str(out)])
    assert rc == 2


def test_appear_disappear_subset_ignores_the_other_objects(tiny: dict) -> None:
    dataset = tiny["dataset"]
    subset, kept = object_subset(dataset, "appear-disappear")
    for ann, sub in zip(dataset.annotations, subset.annotations):
        meta = ann.extra["synth"]
        event = meta["appears_late"] or meta["leaves_early"] or meta["reappearances"] > 0
        video = dataset.videos_by_id[ann.video_id]
        assert has_presence_event(ann, video.height, video.width) == event
        assert sub.iscrowd == (0 if event else 1)
    assert 0 < kept < len(dataset.annotations)
    # exact predictions of every object: those of the persistent (ignored) objects are no false
    # positives, so the subset's AP is 1; predicting the event objects only is also AP 1 there
    perfect = [Prediction(a.video_id, a.category_id, 0.9, a.segmentations)
               for a in dataset.annotations]
    assert evaluate_video_ap(subset, perfect).stats["AP"] == pytest.approx(1.0)
    only_events = [p for p, a in zip(perfect, subset.annotations) if not a.iscrowd]
    assert evaluate_video_ap(dataset, only_events).stats["AR100"] < 1.0
    assert evaluate_video_ap(subset, only_events).stats["AP"] == pytest.approx(1.0)
    persistent, n_persistent = object_subset(dataset, "persistent")
    assert n_persistent == len(dataset.annotations) - kept
