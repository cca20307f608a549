"""``label-studio`` export: the brush masks decoded by label_studio_converter's own brush decoder
equal ours; the video boxes are our boxes in percent with keyframes where the track is present;
both labelling configs parsed by Label Studio's config parser name the tags the results use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_label import open_output
from daq_label.exports.label_studio import brush_rle
from jobs.cli import main as cli_main

brush = pytest.importorskip("label_studio_converter.brush")
label_config = pytest.importorskip("label_studio_tools.core.label_config")


@pytest.fixture(scope="module")
def exported(labelled_output, tmp_path_factory):
    dest = tmp_path_factory.mktemp("ls")
    assert cli_main(["export", str(labelled_output), str(dest), "--format", "label-studio"]) == 0
    return dest


def _decode(rle: list[int], height: int, width: int) -> np.ndarray:
    return np.reshape(brush.decode_rle(rle), (height, width, 4))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (320, 568)])
def test_brush_rle_round_trips_through_the_converter(shape):
    rng = np.random.default_rng(shape[0])
    for mask in (np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) > 0.5,
                 rng.random(shape) > 0.97):
        image = _decode(brush_rle(mask), *shape)
        assert np.array_equal(image, np.repeat((mask * 255).astype(np.uint8)[..., None], 4, axis=2))


def test_brush_masks_equal_ours(labelled_output, exported):
    out = open_output(str(labelled_output))
    tasks = json.loads((exported / "image_tasks.json").read_text())
    assert len(tasks) == sum(out.videos()["frames_decoded"].to_pylist())
    seen = 0
    for task in tasks:
        vid, frame = task["data"]["video_id"], task["data"]["frame_index"]
        assert task["data"]["image"] == f"{vid}/{frame:06d}.jpg"
        results = task["predictions"][0]["result"]
        flat = [{**r, **r["value"]} for r in results]  # the converter reads value keys flattened
        layers = brush.decode_from_annotation("brush", flat)
        assert len(layers) == len(results)
        for r in results:
            expected = out.decode_mask(vid, r["meta"]["track_id"], frame)
            alpha = _decode(r["value"]["rle"], r["original_height"], r["original_width"])[:, :, 3]
            assert np.array_equal(alpha > 0, expected)
            seen += 1
    assert seen == out.tracks().num_rows


def test_video_boxes_and_keyframes(labelled_output, exported):
    out = open_output(str(labelled_output))
    tasks = json.loads((exported / "video_tasks.json").read_text())
    rows = {(r["video_id"], r["track_id"], r["frame_index"]): r for r in out.tracks().to_pylist()}
    videos = {r["video_id"]: r for r in out.videos().to_pylist()}
    boxes = 0
    for task in tasks:
        vid = task["data"]["video_id"]
        video = videos[vid]
        assert task["data"]["video"] == video["source_url"]
        for region in task["predictions"][0]["result"]:
            assert region["type"] == "videorectangle"
            track = region["meta"]["track_id"]
            sequence = region["value"]["sequence"]
            frames = [k["frame"] - 1 for k in sequence]
            assert frames == sorted(f for (v, t, f) in rows if v == vid and t == track)
            for i, key in enumerate(sequence):
                row = rows[vid, track, key["frame"] - 1]
                x, y, w, h = row["bbox"]
                assert [key["x"], key["y"], key["width"], key["height"]] == pytest.approx(
                    [100 * x / video["width"], 100 * y / video["height"],
                     100 * w / video["width"], 100 * h / video["height"]])
                assert key["time"] == pytest.approx(row["timestamp_s"])
                nxt = sequence[i + 1]["frame"] if i + 1 < len(sequence) else None
                assert key["enabled"] == (nxt == key["frame"] + 1)
                boxes += 1
            assert region["value"]["labels"] == [rows[vid, track, frames[0]]["category_name"]]
    assert boxes == len(rows)


def test_configs_match_the_results(labelled_output, exported):
    names = open_output(str(labelled_output)).provenance()["config"]["class_names"]
    video = label_config.parse_config((exported / "video_config.xml").read_text())
    image = label_config.parse_config((exported / "image_config.xml").read_text())
    assert video["box"]["type"] == "VideoRectangle" and video["box"]["to_name"] == ["video"]
    assert video["videoLabels"]["labels"] == names
    assert image["brush"]["type"] == "BrushLabels" and image["brush"]["to_name"] == ["image"]
    assert image["brush"]["labels"] == names
    assert image["brush"]["inputs"][0]["value"] == "image"
