"""Per-frame segmenter numerics against the official outputs of the reference case (online mode).

The model is built from the case's official ``config.yaml`` and its weights are loaded strictly
through :func:`daq_model.checkpoint.load_checkpoint`; tolerances follow the reference README §6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daq_model.config import load_config
from daq_model.dvis_daq import create_model
from daq_model.preprocess import preprocess_frames
from tests.reference_case import ReferenceCase, apply_slice

LOGIT_TOL = 1e-4  # logits / embeddings: atol = rtol = 1e-4
MASK_TOL = 1e-3  # mask logits: atol 1e-3 relative to their scale
FEATURE_TOL = 1e-4  # backbone / pixel-decoder maps: relative to their scale


@pytest.fixture(scope="module")
def reference_run():
    case = ReferenceCase.selected()
    cfg = load_config(case.config_path("online"))
    model = create_model(cfg, checkpoint=case.weights_path("online", case.root))
    inputs = case.inputs()
    batch = preprocess_frames(inputs["frames"], cfg)
    with torch.no_grad():
        features = model.backbone(batch.images[:1])
        mask_features, multi_scale = model.sem_seg_head.pixel_decoder(features)
        # the official code runs windows of 5 frames; the segmenter has no cross-frame mixing
        outputs = [model.forward_features(chunk, batch.image_size)
                   for chunk in batch.images.split(cfg.inference.frame_batch_size)]
    ours = {
        "seg_pred_logits": torch.cat([o.pred_logits for o in outputs]),
        "seg_pred_masks": torch.cat([o.pred_masks for o in outputs]),
        "seg_pred_embds": torch.cat([o.pred_embds for o in outputs]),
        "seg_aux_logits": torch.cat([torch.stack(o.aux_logits) for o in outputs], dim=1),
        "pixdec_mask_features_f0": mask_features[0],
        **{f"backbone_res{i}_f0": features[f"res{i}"][0] for i in range(2, 6)},
        **{f"pixdec_multiscale{i}_f0": multi_scale[i][0] for i in range(3)},
    }
    return case, batch, {k: v.numpy() for k, v in ours.items()}, case.outputs("online")


def _ours(case: ReferenceCase, ours: dict[str, np.ndarray], ref: dict[str, np.ndarray],
          name: str) -> np.ndarray:
    if name not in ref:
        pytest.skip(f"{name} is not recorded in {case.root} (debug arrays exist in case1 only)")
    sliced = case.slimmed("online")
    return apply_slice(ours[name], sliced[name]) if name in sliced else ours[name]


def test_preprocessing_matches_reference_input(reference_run):
    case, batch, _, _ = reference_run
    inputs = case.inputs()
    assert batch.image_size == tuple(int(v) for v in inputs["input_hw"])
    h, w = batch.image_size
    assert batch.padded_size == ((h + 31) // 32 * 32, (w + 31) // 32 * 32)
    # padding is zero in normalised space
    assert float(batch.images[..., h:, :].abs().max()) == 0.0
    assert float(batch.images[..., :, w:].abs().max()) == 0.0


@pytest.mark.parametrize("name", [
    "backbone_res2_f0", "backbone_res3_f0", "backbone_res4_f0", "backbone_res5_f0",
    "pixdec_mask_features_f0", "pixdec_multiscale0_f0", "pixdec_multiscale1_f0",
    "pixdec_multiscale2_f0",
])
def test_feature_maps_match_reference(reference_run, name):
    case, _, ours, ref = reference_run
    mine = _ours(case, ours, ref, name)
    assert mine.shape == ref[name].shape
    scale = float(np.abs(ref[name]).max())
    diff = float(np.abs(mine - ref[name]).max())
    assert diff <= FEATURE_TOL * max(scale, 1.0), f"{name}: max abs diff {diff:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("name", ["seg_pred_logits", "seg_pred_embds", "seg_aux_logits"])
def test_logits_and_embeddings_match_reference(reference_run, name):
    case, _, ours, ref = reference_run
    mine = _ours(case, ours, ref, name)
    assert mine.shape == ref[name].shape
    np.testing.assert_allclose(mine, ref[name], atol=LOGIT_TOL, rtol=LOGIT_TOL, err_msg=name)


def test_mask_logits_match_reference(reference_run):
    case, _, ours, ref = reference_run
    mine = _ours(case, ours, ref, "seg_pred_masks")
    expected = ref["seg_pred_masks"]
    assert mine.shape == expected.shape
    scale = float(np.abs(expected).max())
    diff = float(np.abs(mine - expected).max())
    assert diff <= MASK_TOL * max(scale, 1.0), f"max abs diff {diff:.3g} at scale {scale:.3g}"
