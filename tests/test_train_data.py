"""Training data: YouTube-VIS reading, clip sampling, augmentation, targets, curriculum.

``write_tiny_dataset`` (also used by the other training tests) writes a small YouTube-VIS dataset
of moving shapes: class 0 = square, class 1 = disc, some objects entering late or leaving early.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from daq_train.augment import AugmentConfig, augment_clip
from daq_train.data import (
    DataSource,
    DatasetError,
    VideoDataset,
    build_targets,
    decode_segmentation,
    sample_clip_indices,
)
from daq_train.sampler import ClipSampler, ClipSettings, Curriculum

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _shape_mask(kind: int, cy: float, cx: float, r: float, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:
        return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def write_tiny_dataset(root: Path, num_videos: int = 3, num_frames: int = 6, size: tuple[int, int] = (64, 96),
                       seed: int = 0, rle_strings: bool = True) -> Path:
    """Moving squares/discs on a noisy background in ``root`` (YouTube-VIS layout); returns root."""
    rng = np.random.default_rng(seed)
    h, w = size
    videos, annotations = [], []
    colours = {0: (220, 40, 40), 1: (40, 200, 60)}
    ann_id = 1
    for v in range(num_videos):
        name = f"video{v:03d}"
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        objects = []
        for k in range(2 + v % 2):
            kind = int(rng.integers(0, 2))
            start = 0 if k < 2 else 2  # the third object enters late
            end = num_frames if k != 1 or v % 2 == 0 else num_frames - 2  # one leaves early
            objects.append(dict(kind=kind, r=float(rng.uniform(6, 10)), y=float(rng.uniform(12, h - 12)),
                                x=float(rng.uniform(12, w - 12)), dy=float(rng.uniform(-2, 2)),
                                dx=float(rng.uniform(-3, 3)), span=(start, end)))
        segs: list[list] = [[] for _ in objects]
        file_names = []
        for t in range(num_frames):
            img = (rng.normal(110, 12, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
            for i, o in enumerate(objects):
                if not o["span"][0] <= t < o["span"][1]:
                    segs[i].append(None)
                    continue
                m = _shape_mask(o["kind"], o["y"] + o["dy"] * t, o["x"] + o["dx"] * t, o["r"], h, w)
                img[m] = colours[o["kind"]]
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                if rle_strings:
                    rle["counts"] = rle["counts"].decode("ascii")
                    segs[i].append(rle)
                else:  # uncompressed RLE, as some converters write
                    flat = m.T.reshape(-1).astype(np.uint8)
                    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                    segs[i].append({"size": [h, w], "counts": np.diff(np.concatenate([[0], change])).tolist()})
            fname = f"{name}/{t:05d}.jpg"
            Image.fromarray(img).save(root / "JPEGImages" / fname, quality=95)
            file_names.append(fname)
        videos.append({"id": v + 1, "file_names": file_names, "height": h, "width": w,
                       "length": num_frames})
        for i, o in enumerate(objects):
            areas = [None if s is None else float(mask_util.area(
                mask_util.frPyObjects(s, h, w) if isinstance(s["counts"], list) else
                {"size": s["size"], "counts": s["counts"].encode()})) for s in segs[i]]
            annotations.append({"id": ann_id, "video_id": v + 1, "category_id": o["kind"] + 1,
                                "segmentations": segs[i], "areas": areas, "iscrowd": 0})
            ann_id += 1
    data = {"videos": videos, "annotations": annotations,
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def test_reads_dataset_and_decodes_masks(tmp_path: Path) -> None:
    ds = VideoDataset(DataSource.from_root(write_tiny_dataset(tmp_path)))
    assert len(ds) == 3 and ds.class_names == ("square", "disc") and ds.num_classes == 2
    video = ds.videos[1]
    frames = ds.load_frames(video, [0, 3])
    masks = ds.load_masks(video, [0, 3])
    assert frames.shape == (2, 64, 96, 3) and frames.dtype == np.uint8
    assert masks.shape == (len(video.instances), 2, 64, 96)
    assert not masks[2, 0].any() and masks[2, 1].any()  # the late object


def test_uncompressed_rle_equals_compressed(tmp_path: Path) -> None:
    a = VideoDataset(DataSource.from_root(write_tiny_dataset(tmp_path / "a")))
    b = VideoDataset(DataSource.from_root(write_tiny_dataset(tmp_path / "b", rle_strings=False)))
    assert np.array_equal(a.load_masks(a.videos[0], [0, 1]), b.load_masks(b.videos[0], [0, 1]))
    assert not decode_segmentation(None, 4, 5).any()


def test_bad_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        VideoDataset(DataSource.from_root(tmp_path / "nothing"))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "annotations.json").write_text("{\"videos\": []}")
    with pytest.raises(ValueError, match="annotations.json"):
        VideoDataset(DataSource.from_root(tmp_path / "x"))


def test_clip_indices() -> None:
    rng = random.Random(0)
    for _ in range(50):
        idx = sample_clip_indices(10, 5, 2, rng)
        assert idx == list(range(idx[0], idx[0] + 5))
    starts = {sample_clip_indices(10, 5, 2, rng)[0] for _ in range(300)}
    assert starts == set(range(6))
    assert sample_clip_indices(3, 5, 2, rng)[:1] == [0] and len(sample_clip_indices(3, 5, 2, rng)) == 5
    reversed_seen = any(sample_clip_indices(10, 4, 7, rng, reverse_prob=0.5) != sorted(
        sample_clip_indices(10, 4, 7, random.Random(1))) for _ in range(5))
    assert reversed_seen
    idx = sample_clip_indices(20, 3, 7, random.Random(2))
    assert idx == sorted(idx) and len(set(idx)) == 3 and idx[-1] - idx[0] <= 14


def test_targets_flags() -> None:
    masks = np.zeros((3, 4, 8, 8), dtype=bool)
    masks[0, :, :2, :2] = True  # always there
    masks[1, 1:3, 4:, 4:] = True  # appears in frame 1, gone in frame 3
    # instance 2 never present: dropped
    t = build_targets(masks, [0, 1, 1], [10, 11, 12], (32, 32))
    assert t.num_instances == 2 and t.masks.shape == (2, 4, 32, 32)
    assert t.valid[1].tolist() == [False, True, True, False]
    assert t.new[1].tolist() == [False, True, False, False] and t.new[0].tolist() == [True, False, False, False]
    assert t.disappeared[1].tolist() == [False, False, False, True]
    assert t.track_ids[1].tolist() == [-1, 11, 11, -1]
    assert t.masks[:, :, 8:].sum() == 0


def test_augment_same_transform_for_all_frames() -> None:
    frames = np.zeros((3, 40, 60, 3), dtype=np.uint8)
    frames[:, :, :30] = 255
    masks = np.zeros((1, 3, 40, 60), dtype=bool)
    masks[..., :30] = True
    cfg = AugmentConfig(short_edge_choices=(32,), max_size=64, crop_prob=1.0, crop_resize_choices=(48,),
                        crop_resize_max=100, crop_size_range=(24, 40), flip_prob=0.5)
    for seed in range(10):
        f, m = augment_clip(frames, masks, cfg, random.Random(seed))
        assert f.shape[1:3] == m.shape[2:4] and min(f.shape[1:3]) == 32
        for t in range(1, 3):
            assert np.array_equal(f[t], f[0]) and np.array_equal(m[:, t], m[:, 0])
        bright = f[0, :, :, 0] > 127
        assert (bright == m[0, 0]).mean() > 0.9  # masks follow the pixels (crop, flip)


def test_sampler_resumes_identically_and_follows_curriculum(tmp_path: Path) -> None:
    easy = VideoDataset(DataSource.from_root(write_tiny_dataset(tmp_path / "e", seed=1), 0))
    hard = VideoDataset(DataSource.from_root(write_tiny_dataset(tmp_path / "h", seed=2), 1))
    aug = AugmentConfig(short_edge_choices=(48, 64), max_size=128, crop_prob=0.5, crop_resize_choices=(64,),
                        crop_resize_max=128, crop_size_range=(40, 60))
    cur = Curriculum.parse("0:1,0 5:0,1")
    s = ClipSampler([easy, hard], aug, MEAN, STD, cur, seed=3)
    settings = ClipSettings(num_frames=3, frame_range=1)
    assert {s.sample_clip(0, settings).source for _ in range(5)} == {"e"}
    assert {s.sample_clip(7, settings).source for _ in range(5)} == {"h"}
    state = s.state_dict()
    a = s.sample_clip(6, settings)
    s.load_state_dict(state)
    b = s.sample_clip(6, settings)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets.masks, b.targets.masks)
    assert a.images.shape[-1] % 32 == 0 and a.images.shape[0] == 3
    images, targets = s.sample_frames(0, 3)
    assert images.shape[0] == 3 and len(targets) == 3 and targets[0].masks.shape[-2:] == images.shape[-2:]
    with pytest.raises(ValueError):
        Curriculum.parse("5:1,0")
