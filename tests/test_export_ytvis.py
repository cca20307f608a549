"""``daq-label export --format ytvis`` read back by our YouTube-VIS reader and evaluator and by
pycocotools: every mask identical to the Parquet rows, the results scored against the dataset
give AP = 1."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.conftest_outputs import labelled_output  # noqa: F401 - fixture
from daq_eval.video_ap import evaluate_video_ap
from daq_eval.ytvis_format import read_dataset, read_predictions
from daq_label import open_output
from jobs.cli import main as cli_main


@pytest.fixture(scope="module")
def exported(labelled_output, tmp_path_factory):
    dest = tmp_path_factory.mktemp("ytvis")
    assert cli_main(["export", str(labelled_output), str(dest), "--format", "ytvis"]) == 0
    return dest


def test_dataset_and_results_read_back_with_identical_masks(labelled_output, exported):
    out = open_output(str(labelled_output))
    dataset = read_dataset(exported / "dataset.json")
    predictions = read_predictions(exported / "results.json", dataset)
    summary = out.track_summary().to_pylist()
    assert len(dataset.annotations) == len(predictions) == len(summary)
    statuses = out.videos()["status"].to_pylist()
    assert "failed" in statuses and len(dataset.videos) == len(statuses) - statuses.count("failed")
    assert [c.name for c in dataset.categories] == out.provenance()["config"]["class_names"]
    rows = {(r["video_id"], r["track_id"], r["frame_index"]): r for r in out.tracks().to_pylist()}
    seen = 0
    for ann, pred in zip(dataset.annotations, predictions):
        video = dataset.videos_by_id[ann.video_id]
        vid = video.extra["daq_video_id"]
        assert (video.height, video.width) == out.frame_size(vid)
        assert ann.extra["track_id"] == pred.extra["track_id"]
        for f, (seg, pseg) in enumerate(zip(ann.segmentations, pred.segmentations)):
            row = rows.get((vid, ann.extra["track_id"], f))
            if row is None:
                assert seg is None and pseg is None
                continue
            seen += 1
            assert seg["counts"] == row["mask"]["counts"] == pseg["counts"]
            decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), out.decode_mask(vid, row["track_id"], f))
            assert ann.areas[f] == row["area"] and list(ann.bboxes[f]) == pytest.approx(row["bbox"])
            assert ann.category_id == row["category_id"] and pred.score == pytest.approx(row["score"])
    assert seen == len(rows)


def test_results_score_perfectly_against_the_dataset(exported):
    dataset = read_dataset(exported / "dataset.json")
    result = evaluate_video_ap(dataset, read_predictions(exported / "results.json", dataset))
    assert result.num_predictions == result.num_ground_truth > 0
    assert result.stats["AP"] == pytest.approx(1.0)
