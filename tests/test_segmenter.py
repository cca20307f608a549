"""Segmenter behaviour beyond the reference numbers: fp32 pixel decoder under autocast, training
outputs with gradients, lean inference outputs, the attention-mask rule."""

from __future__ import annotations

import pytest
import torch

from daq_model.config import small_config
from daq_model.dvis_daq import DVISDAQ


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DVISDAQ(small_config(num_classes=3, offline=False)).eval()


def test_pixel_decoder_stays_fp32_under_autocast(model):
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = model.backbone(images)
        reference, ref_levels = model.sem_seg_head.pixel_decoder(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half_features = model.backbone(images)
            mask_features, levels = model.sem_seg_head.pixel_decoder(half_features)
    assert half_features["res5"].dtype == torch.bfloat16  # the backbone does follow autocast
    assert mask_features.dtype == torch.float32
    assert all(level.dtype == torch.float32 for level in levels)
    # only the bf16 backbone features differ; the decoder itself ran in fp32
    with torch.no_grad():
        again, _ = model.sem_seg_head.pixel_decoder({k: v.float() for k, v in half_features.items()})
    torch.testing.assert_close(mask_features, again)
    assert [tuple(x.shape[-2:]) for x in ref_levels] == [(2, 3), (4, 6), (8, 12)]
    assert reference.shape == (1, 64, 16, 24)


def test_inference_output_is_lean(model):
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, 64, 64), image_size=(60, 50))
    q, k = model.cfg.segmenter.num_queries, model.cfg.num_classes
    assert out.pred_logits.shape == (2, q, k + 1)
    assert out.pred_masks.shape == (2, q, 16, 16)
    assert out.pred_embds.shape == (2, q, model.cfg.segmenter.hidden_dim)
    assert len(out.aux_logits) == model.cfg.segmenter.num_transformer_layers
    assert out.aux_masks == [] and out.image_size == (60, 50)
    # pred_embds are decoder-normed: undoing the LN affine leaves zero mean, unit variance
    norm = model.sem_seg_head.predictor.decoder_norm
    raw = (out.pred_embds - norm.bias) / norm.weight
    torch.testing.assert_close(raw.mean(-1), torch.zeros(2, q), atol=1e-4, rtol=0)
    torch.testing.assert_close(raw.var(-1, unbiased=False), torch.ones(2, q), atol=1e-3, rtol=0)


def test_training_keeps_intermediate_predictions_with_gradients():
    torch.manual_seed(1)
    model = DVISDAQ(small_config(num_classes=3, offline=False)).train()
    out = model.forward_features(torch.randn(1, 3, 64, 64))
    layers = model.cfg.segmenter.num_transformer_layers
    assert len(out.aux_logits) == len(out.aux_masks) == layers
    loss = out.pred_logits.sum() + out.pred_masks.mean() + sum(m.mean() for m in out.aux_masks)
    loss.backward()
    predictor = model.sem_seg_head.predictor
    assert predictor.query_feat.weight.grad is not None
    assert model.sem_seg_head.pixel_decoder.transformer.level_embed.grad is not None
    assert model.backbone.res5[0].conv1.weight.grad is not None
    # the re-id head exists for strict loading only and takes no part in the forward pass
    assert predictor.reid_embed.layers[0].weight.grad is None


def test_fully_blocked_queries_attend_everywhere():
    """Masks negative everywhere block every location; the official rule then lets those queries
    attend everywhere, which is exactly what masks positive everywhere give."""
    torch.manual_seed(2)
    model = DVISDAQ(small_config(num_classes=3, offline=False)).eval()
    images = torch.randn(1, 3, 64, 64)
    results = []
    with torch.no_grad():
        model.sem_seg_head.pixel_decoder.mask_features.weight.zero_()
        model.sem_seg_head.pixel_decoder.mask_features.bias.fill_(1.0)
        model.sem_seg_head.predictor.mask_embed.layers[2].weight.zero_()
        for sign in (-1.0, 1.0):
            model.sem_seg_head.predictor.mask_embed.layers[2].bias.fill_(sign)
            results.append(model.forward_features(images))
    blocked, open_ = results
    assert bool((blocked.pred_masks < 0).all()) and bool((open_.pred_masks > 0).all())
    assert torch.isfinite(blocked.pred_embds).all()
    torch.testing.assert_close(blocked.pred_logits, open_.pred_logits)
    torch.testing.assert_close(blocked.pred_embds, open_.pred_embds)


def test_unpadded_images_are_rejected(model):
    with pytest.raises(ValueError, match="multiple of 32"):
        model.forward_features(torch.zeros(1, 3, 60, 64))
