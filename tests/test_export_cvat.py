"""``cvat-images`` and ``cvat-video`` imported by Datumaro's CVAT importer: the frames, the
shapes and the track ids as exported; masks identical to ours; polygons that rasterise exactly to
every part of each mask (holes filled)."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_label import open_output
from daq_label.exports.cvat import cvat_mask_rle
from daq_label.exports.polygons import mask_polygons
from jobs.cli import main as cli_main

datumaro = pytest.importorskip("datumaro")
from datumaro.components.annotation import AnnotationType  # noqa: E402


def _export(output, dest, fmt, *extra):
    assert cli_main(["export", str(output), str(dest), "--format", fmt, *extra]) == 0


def test_cvat_mask_rle_reads_back():
    rng = np.random.default_rng(3)
    for mask in (rng.random((9, 13)) > 0.5, np.pad(np.ones((3, 4), bool), 2)):
        rle, left, top, width, height = cvat_mask_rle(mask)
        runs = [int(v) for v in rle.split(",")]
        crop = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool).reshape(height, width)
        canvas = np.zeros_like(mask)
        canvas[top:top + height, left:left + width] = crop
        assert np.array_equal(canvas, mask) and sum(runs) == width * height


def test_cvat_images_imported_by_datumaro(labelled_output, tmp_path):
    _export(labelled_output, tmp_path, "cvat-images", "--with-frames")
    out = open_output(str(labelled_output))
    dataset = datumaro.Dataset.import_from(str(tmp_path), "cvat")
    names = [c.name for c in dataset.categories()[AnnotationType.label]]
    assert names == out.provenance()["config"]["class_names"]
    videos = {r["video_id"]: r for r in out.videos().to_pylist()}
    rows = {(r["video_id"], r["track_id"], r["frame_index"]): r for r in out.tracks().to_pylist()}
    items = list(dataset)
    assert len(items) == sum(v["frames_decoded"] for v in videos.values())
    seen = 0
    for item in items:
        vid, frame = item.id.split("/")
        frame = int(frame)
        assert item.media.size == (videos[vid]["height"], videos[vid]["width"])
        assert item.media.data.shape[:2] == item.media.size  # the frame JPEG is there
        tracks = sorted(t for (v, t, f) in rows if v == vid and f == frame)
        assert sorted(int(a.attributes["track_id"]) for a in item.annotations) == tracks
        for ann in item.annotations:
            assert ann.type == AnnotationType.mask
            row = rows[vid, int(ann.attributes["track_id"]), frame]
            assert names[ann.label] == row["category_name"]
            assert ann.attributes["score"] == pytest.approx(row["score"], rel=1e-5)
            assert np.array_equal(ann.image.astype(bool), out.decode_mask(vid, row["track_id"], frame))
            seen += 1
    assert seen == len(rows)


def _filled_parts(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    filled = np.zeros_like(mask)
    for part in range(1, count + 1):
        filled |= ndimage.binary_fill_holes(labels == part)
    return filled


def test_cvat_video_polygon_tracks_imported_by_datumaro(labelled_output, tmp_path):
    _export(labelled_output, tmp_path, "cvat-video")
    out = open_output(str(labelled_output))
    rows = {(r["video_id"], r["track_id"], r["frame_index"]): r for r in out.tracks().to_pylist()}
    shapes = polygons = 0
    failed = set(out.videos(filter=ds.field("status") == "failed")["video_id"].to_pylist())
    assert failed and not any((tmp_path / f"{vid}.xml").exists() for vid in failed)  # not exported
    for vid in sorted(set(out.video_ids()) - failed):
        height, width = out.frame_size(vid)
        dataset = datumaro.Dataset.import_from(str(tmp_path / f"{vid}.xml"), "cvat")
        names = [c.name for c in dataset.categories()[AnnotationType.label]]
        got: dict[tuple[int, int], list] = {}
        main: dict[tuple[int, int], list] = {}
        for item in dataset:
            frame = item.attributes["frame"]
            for ann in item.annotations:
                assert ann.type == AnnotationType.polygon and ann.attributes["keyframe"]
                track = ann.group - 1  # every CVAT track of one daq-label track shares its group
                if ann.attributes["outside"]:  # the first frame of an absence
                    assert (vid, track, frame - 1) in rows
                    continue
                assert names[ann.label] == rows[vid, track, frame]["category_name"]
                got.setdefault((track, frame), []).append(list(ann.points))
                if ann.attributes["track_id"] == track:  # the track of the largest parts
                    main.setdefault((track, frame), []).append(list(ann.points))
        assert set(got) == {(t, f) for (v, t, f) in rows if v == vid}
        for (track, frame), parts in got.items():
            mask = out.decode_mask(vid, track, frame)
            assert len(main[track, frame]) == 1
            assert sorted(map(tuple, parts)) == sorted(map(tuple, mask_polygons(mask)))  # pixel corners: exact
            raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, height, width))).astype(bool)
            assert np.array_equal(raster, _filled_parts(mask))  # every pixel, holes filled
            shapes += 1
            polygons += len(parts)
    assert shapes == len(rows) and polygons > shapes  # the fixture's masks do come in parts


def test_polygons_rasterise_to_the_filled_parts():
    rng = np.random.default_rng(1)
    for k in range(60):
        mask = ndimage.binary_opening(rng.random((40, 50)) > 0.45) if k % 2 else rng.random((30, 30)) > 0.3
        polygons = mask_polygons(mask)
        raster = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, *mask.shape))).astype(bool)
        assert np.array_equal(raster, _filled_parts(mask))
    assert mask_polygons(np.zeros((4, 4), bool)) == []
