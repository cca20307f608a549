"""``mots-txt`` (MOTSChallenge) and ``mots-png`` (KITTI MOTS) read back by TrackEval: the export
evaluated against itself scores HOTA = MOTA = IDF1 = 1 with TrackEval's own dataset readers; the
masks TrackEval decodes are ours with overlaps given to the higher-scoring track, the pixels moved
counted; the PNGs (read with PIL) hold the same masks as the text files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_label import open_output
from jobs.cli import main as cli_main

trackeval = pytest.importorskip("trackeval")


def _export(output: Path, dest: Path, fmt: str, classes: str = "categories") -> None:
    assert cli_main(["export", str(output), str(dest), "--format", fmt, "--mots-classes", classes]) == 0


def _evaluate(dataset) -> dict:
    config = {**trackeval.Evaluator.get_default_eval_config(), "USE_PARALLEL": False,
              "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
              "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False,
              "OUTPUT_EMPTY_CLASSES": False, "DISPLAY_LESS_PROGRESS": True}
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
    results, messages = trackeval.Evaluator(config).evaluate([dataset], metrics)
    (per_tracker,) = results.values()
    assert messages[dataset.get_name()]["self"] == "Success"
    return per_tracker["self"]["COMBINED_SEQ"]


def _as_tracker(gt_files: dict[str, Path], trackers: Path) -> None:
    data = trackers / "self" / "data"
    data.mkdir(parents=True)
    for seq, path in gt_files.items():
        shutil.copy(path, data / f"{seq}.txt")


def _assert_perfect(combined: dict, cls: str) -> None:
    scores = combined[cls]
    assert scores["CLEAR"]["CLR_TP"] > 0
    assert float(np.mean(scores["HOTA"]["HOTA"])) == pytest.approx(1.0)
    assert scores["CLEAR"]["MOTA"] == pytest.approx(1.0)
    assert scores["Identity"]["IDF1"] == pytest.approx(1.0)


def _sequences(dest: Path) -> list[dict]:
    with open(dest / "sequences.csv") as handle:
        return list(csv.DictReader(handle))


def test_mots_challenge_txt_scores_perfectly_against_itself(labelled_output, tmp_path):
    dest = tmp_path / "mots"
    _export(labelled_output, dest, "mots-txt", "pedestrian")
    seqs = [s["sequence"] for s in _sequences(dest)]
    _as_tracker({s: dest / s / "gt" / "gt.txt" for s in seqs}, tmp_path / "trackers")
    dataset = trackeval.datasets.MOTSChallenge({
        "GT_FOLDER": str(dest), "TRACKERS_FOLDER": str(tmp_path / "trackers"), "SKIP_SPLIT_FOL": True,
        "SEQMAP_FILE": str(dest / "seqmaps" / "MOTS-all.txt"), "PRINT_CONFIG": False})
    assert sorted(dataset.seq_list) == seqs  # read from our seqmap and seqinfo.ini files
    _assert_perfect(_evaluate(dataset), "pedestrian")


def test_kitti_mots_scores_perfectly_and_pngs_match(labelled_output, tmp_path):
    dest = tmp_path / "kitti"
    _export(labelled_output, dest, "mots-png", "car")
    seqs = [s["sequence"] for s in _sequences(dest)]
    _as_tracker({s: dest / "instances_txt" / f"{s}.txt" for s in seqs}, tmp_path / "trackers")
    dataset = trackeval.datasets.KittiMOTS({
        "GT_FOLDER": str(dest), "TRACKERS_FOLDER": str(tmp_path / "trackers"),
        "SEQMAP_FILE": str(dest / "evaluate_mots.seqmap.all"), "GT_LOC_FORMAT": "{gt_folder}/instances_txt/{seq}.txt",
        "CLASSES_TO_EVAL": ["car"], "PRINT_CONFIG": False})
    _assert_perfect(_evaluate(dataset), "car")
    for seq in seqs:
        raw = dataset._load_raw_file("self", seq, is_gt=True)
        for t in range(raw["num_timesteps"]):
            png = np.array(Image.open(dest / "instances" / seq / f"{t:06d}.png"))
            assert png.dtype == np.uint16
            expected = np.zeros_like(png)
            for oid, rle in zip(raw["gt_ids"][t], raw["gt_dets"][t]):
                expected[mask_utils.decode(rle).astype(bool)] = oid
            assert np.array_equal(png, expected)


def test_masks_read_by_trackeval_are_ours_with_overlaps_resolved(labelled_output, tmp_path, capsys):
    dest = tmp_path / "mots"
    assert cli_main(["export", str(labelled_output), str(dest), "--format", "mots-txt"]) == 0
    reported = int(capsys.readouterr().out.split("pixels reassigned ")[1].split(",")[0])
    out = open_output(str(labelled_output))
    dataset = trackeval.datasets.MOTSChallenge({
        "GT_FOLDER": str(dest), "TRACKERS_FOLDER": str(dest), "TRACKERS_TO_EVAL": [], "SKIP_SPLIT_FOL": True,
        "SEQMAP_FILE": str(dest / "seqmaps" / "MOTS-all.txt"), "PRINT_CONFIG": False})
    moved = 0
    for seq in _sequences(dest):
        vid = seq["video_id"]
        raw = dataset._load_raw_file(None, seq["sequence"], is_gt=True)  # refuses overlapping masks
        summary = sorted(out.track_summary([vid]).to_pylist(), key=lambda r: r["track_id"])
        per_class: dict[int, int] = {}
        object_of = {}
        for r in summary:  # object id = class * 1000 + n, n per class by track id
            per_class[r["category_id"]] = per_class.get(r["category_id"], 0) + 1
            object_of[r["category_id"] * 1000 + per_class[r["category_id"]]] = r
        for t, frame in enumerate(out.iter_frames(vid)):
            exported = {int(o): mask_utils.decode(rle).astype(bool) for o, rle in zip(raw["gt_ids"][t], raw["gt_dets"][t])}
            by_track = {int(k): m for k, m in zip(frame.track_ids, frame.masks)}
            for oid, r in object_of.items():
                ours = by_track.get(r["track_id"], np.zeros(out.frame_size(vid), bool))
                stronger = [by_track[o["track_id"]] for o in summary if o["track_id"] in by_track and
                            (o["score"], -o["track_id"]) > (r["score"], -r["track_id"])]
                expected = ours & ~np.logical_or.reduce(stronger) if stronger else ours
                got = exported.get(oid, np.zeros_like(ours))
                assert np.array_equal(got, expected), (vid, r["track_id"], t)
                assert (oid // 1000) == r["category_id"]
                moved += int(ours.sum() - got.sum())
    assert moved == reported > 0  # the fixture's tracks do overlap
