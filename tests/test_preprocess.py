"""Test-time pre-processing: detectron2 ResizeShortestEdge sizes, PIL resize, normalise, pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from daq_model.config import get_preset
from daq_model.preprocess import padded_size, preprocess_frames, resized_size


@pytest.mark.parametrize("hw, short, cap, expected", [
    ((720, 1280), 480, 1333, (480, 853)),   # 853.33 -> 853
    ((1280, 720), 480, 1333, (853, 480)),   # portrait
    ((480, 640), 480, 1333, (480, 640)),    # already at size
    ((360, 641), 480, 1333, (480, 855)),    # 854.67 -> 855 (int(x + 0.5))
    ((500, 500), 480, 1333, (480, 480)),    # square: the "h >= w" branch
    ((480, 4000), 480, 1333, (160, 1333)),  # long side capped after short-side scaling
    ((183, 321), 136, 1333, (136, 239)),    # 238.55 -> 239
])
def test_resized_size_follows_detectron2(hw, short, cap, expected):
    assert resized_size(*hw, short, cap) == expected


def test_padded_size_rounds_up():
    assert padded_size(480, 853, 32) == (480, 864)
    assert padded_size(136, 242, 32) == (160, 256)
    assert padded_size(64, 64, 32) == (64, 64)
    assert padded_size(37, 41, 1) == (37, 41)


def test_720p_frame_end_to_end():
    cfg = get_preset("ytvis19_online_r50")
    frames = np.zeros((2, 720, 1280, 3), dtype=np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 124, 116, 104
    batch = preprocess_frames(frames, cfg)
    assert batch.images.shape == (2, 3, 480, 864)
    assert batch.image_size == (480, 853) and batch.original_size == (720, 1280)
    assert batch.padded_size == (480, 864)
    mean = torch.tensor(cfg.input.pixel_mean).view(3, 1)
    std = torch.tensor(cfg.input.pixel_std).view(3, 1)
    expected = (torch.tensor([124.0, 116.0, 104.0]).view(3, 1) - mean) / std
    inside = batch.images[0, :, :480, :853].reshape(3, -1)
    torch.testing.assert_close(inside, expected.expand_as(inside))
    assert float(batch.images[:, :, :, 853:].abs().max()) == 0.0  # padding is 0 after normalising


def test_resize_is_pil_bilinear_on_uint8():
    cfg = get_preset("ytvis19_online_r50").with_overrides({"input.min_size_test": 24})
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(60, 100, 3), dtype=np.uint8)
    batch = preprocess_frames(frame[None], cfg)
    assert batch.image_size == (24, 40)
    pil = np.asarray(Image.fromarray(frame).resize((40, 24), Image.BILINEAR)).astype(np.float32)
    mean = np.array(cfg.input.pixel_mean, dtype=np.float32)
    std = np.array(cfg.input.pixel_std, dtype=np.float32)
    ours = batch.images[0, :, :24, :40].permute(1, 2, 0).numpy() * std + mean
    np.testing.assert_allclose(ours, pil, atol=1e-3)
    # and it is not a plain (non-antialiased) bilinear interpolation of the float image
    naive = F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(24, 40),
                          mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(naive - pil).max() > 5


def test_bad_frames_raise_clear_errors():
    cfg = get_preset("ytvis19_online_r50")
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(np.zeros((1, 8, 8, 3), dtype=np.float32), cfg)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        preprocess_frames(np.zeros((8, 8, 3), dtype=np.uint8), cfg)
    with pytest.raises(ValueError, match="empty"):
        preprocess_frames(np.zeros((0, 8, 8, 3), dtype=np.uint8), cfg)
