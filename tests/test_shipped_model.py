"""The model this project ships (``daq_model/pretrained``): its card is true to the file, it is
the default of ``daq-label label``, and it is a trained model (its segmenter finds and classifies
the objects of synthetic videos it has never seen; the same architecture with random weights
does not)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from daq_model.checkpoint import file_sha256
from jobs.cli import main as cli_main
from pipeline.model_source import PRETRAINED_DIR, resolve_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "videos"


def _card() -> tuple[Path, dict]:
    checkpoints = sorted(PRETRAINED_DIR.glob("*.pt"))
    assert len(checkpoints) == 1, checkpoints
    card = json.loads(checkpoints[0].with_suffix(".json").read_text())
    return checkpoints[0], card


def test_card_describes_the_shipped_file() -> None:
    checkpoint, card = _card()
    assert card["checkpoint"] == checkpoint.name
    assert card["checkpoint_sha256"] == file_sha256(str(checkpoint))
    assert checkpoint.stat().st_size <= 20e6
    for key in ("classes", "training", "metrics", "limits"):
        assert card[key], key
    assert (PRETRAINED_DIR / "MODEL_CARD.md").exists()


def test_shipped_model_is_the_default() -> None:
    checkpoint, card = _card()
    spec = resolve_model(None, None)
    assert (spec.origin, spec.checkpoint, spec.model_name) == ("shipped", str(checkpoint), card["name"])
    assert list(spec.config.class_names) == card["classes"]
    assert spec.config.config_hash() == card["architecture"]["config_hash"]
    # the config beside the card (fragment merging on) overrides the checkpoint's own, which it
    # otherwise equals: same architecture, weights and inference settings
    embedded = resolve_model(str(checkpoint), None).config
    assert embedded.test.merge_fragments_iou == 0.0
    assert spec.config == embedded.with_overrides({"test.merge_fragments_iou": 0.5,
                                                   "test.merge_fragments_agree": 0.5})
    assert card["architecture"]["test"]["merge_fragments_iou"] == spec.config.test.merge_fragments_iou
    assert set(card["metrics"]) == set(card["metrics_official_postprocessing"])


def _best_query_per_object(model, root: Path, stride: int = 6, min_area: int = 100
                           ) -> list[tuple[float, bool]]:
    """For every ground-truth object (area >= min_area) in every ``stride``-th frame: the best mask
    IoU over all of the segmenter's query masks of that frame, and whether that query's most
    probable real class is the object's."""
    import numpy as np
    import torch
    from PIL import Image
    from pycocotools import mask as mask_utils

    from daq_eval.ytvis_format import read_dataset
    from daq_model.postprocess import MaskGeometry, masks_to_output

    data = read_dataset(root / "annotations.json")
    label_of = {c.id: i for i, c in enumerate(sorted(data.categories, key=lambda c: c.id))}
    best = []
    for video in data.videos:
        picked = range(0, video.length, stride)
        frames = np.stack([np.asarray(Image.open(root / "JPEGImages" / video.file_names[t]).convert("RGB"))
                           for t in picked])
        with torch.inference_mode():
            pre = model.preprocess(frames)
            out = model.forward_features(pre.images, pre.image_size)
        geometry = MaskGeometry(tuple(pre.images.shape[-2:]), tuple(pre.image_size), (video.height, video.width))
        for i, t in enumerate(picked):
            masks = masks_to_output(out.pred_masks[i], geometry).numpy()
            classes = out.pred_logits[i][:, :-1].argmax(-1).tolist()
            for ann in data.annotations_by_video[video.id]:
                seg = ann.segmentations[t]
                if not seg:
                    continue
                counts = seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]
                gt = mask_utils.decode({"size": seg["size"], "counts": counts}).astype(bool)
                if gt.sum() >= min_area:
                    ious = [float((m & gt).sum()) / max(float((m | gt).sum()), 1.0) for m in masks]
                    q = int(np.argmax(ious))
                    best.append((ious[q], classes[q] == label_of[ann.category_id]))
    return best


@pytest.mark.slow
def test_shipped_segmenter_finds_objects_in_unseen_synthetic_videos(tmp_path: Path) -> None:
    from daq_model.dvis_daq import DVISDAQ, create_model

    data = tmp_path / "unseen"
    assert cli_main(["synth", str(data), "--preset", "val", "--videos", "4", "--seed", "987654"]) == 0
    spec = resolve_model(None, None)
    trained = _best_query_per_object(create_model(spec.config, spec.checkpoint), data)
    untrained = _best_query_per_object(DVISDAQ(spec.config).eval(), data)
    assert len(trained) >= 10
    iou, untrained_iou = [b[0] for b in trained], [b[0] for b in untrained]
    correct = [b[1] for b in trained]
    # measured when shipped (v1 and v2: same segmenter recipe and seeds): mean best IoU 0.84 and
    # the best query's class right for 95 % of the 40 objects, against IoU 0.05 and 22 %
    # (chance 17 %) for the same architecture untrained
    assert sum(iou) / len(iou) >= 0.4, iou
    assert sum(untrained_iou) / len(untrained_iou) <= 0.2, untrained_iou
    assert sum(correct) / len(correct) >= 0.7, correct


@pytest.mark.slow
def test_label_runs_with_the_shipped_model_and_no_model_flags(tmp_path: Path, caplog) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = cli_main(["label", str(SAMPLES / "01_dog.mp4"), str(out)])
    assert rc == 0, caplog.text
    videos = pq.read_table(out / "videos").to_pylist()
    assert [v["status"] for v in videos] == ["ok"]
    assert videos[0]["model_name"] == _card()[1]["name"]
    assert cli_main(["validate", str(out)]) == 0
