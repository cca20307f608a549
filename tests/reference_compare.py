"""Comparison of a ``reference-run`` output with a reference case's official ``outputs.npz``,
under the acceptance rules of the reference README §6.

* logits / embeddings / other floats: ``atol = rtol = 1e-4``;
* mask logits (``*masks`` float arrays): ``atol = 1e-3 * max(1, max |ref|)``;
* backbone / pixel-decoder maps: ``1e-4 * max(1, max |ref|)``;
* position embeddings (``*_pos*``, ``hub_sg_pos``): >= 99 % of vectors within ``atol 1e-3``;
* ``trk_fXX_mask_pos_count``: total |count difference| <= 0.01 % of the mask pixels;
* discrete decisions exactly, track ids up to one consistent renaming (creation order);
* ``vis_*`` as a set keyed by (candidate, label) (unique in a top-k over pairs): same keys,
  scores within ``vis_score_atol``, masks agreeing on >= 99.99 % of pixels.
"""

from __future__ import annotations

import re

import numpy as np

from tests.reference_case import ReferenceCase, apply_slice

LOGIT_TOL = 1e-4
MASK_TOL = 1e-3
FEATURE_TOL = 1e-4
POS_ATOL = 1e-3
POS_MIN_FRACTION = 0.99
PIXEL_MIN_AGREEMENT = 0.9999

# arrays holding tracker ids (compared up to renaming)
ID_ARRAYS = re.compile(r"^(trk_f\d+_query_seq_id|trk_f\d+_active_ids|hub_ids|agg_pred_ids|"
                       r"common_seq_id_list)$")
POS_ARRAYS = re.compile(r"^(trk_f\d+_(track_pos|frame_query_pos|track_pos_after)|hub_sg_pos)$")
MASK_ARRAYS = re.compile(r"^(trk_f\d+_masks|seg_pred_masks|refiner_pred_masks|minvis_pred_masks)$")
FEATURE_ARRAYS = re.compile(r"^(backbone_|pixdec_)")
VIS_ARRAYS = ("vis_scores", "vis_labels", "vis_ids", "vis_masks")


def ours_as_reference(case: ReferenceCase, mode: str, ours: dict[str, np.ndarray],
                      name: str) -> np.ndarray:
    """Our array sliced like the slim copy of the case slices it."""
    sliced = case.slimmed(mode)
    return apply_slice(ours[name], sliced[name]) if name in sliced else ours[name]


def id_renaming(ref: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> dict[int, int]:
    """Official id -> our id, by creation order of the track hub (must be one-to-one)."""
    assert ref["hub_ids"].shape == ours["hub_ids"].shape, "different number of tracks"
    mapping = {int(a): int(b) for a, b in zip(ref["hub_ids"], ours["hub_ids"])}
    assert len(set(mapping.values())) == len(mapping), "our hub ids are not unique"
    mapping[-1] = -1
    return mapping


def _map_ids(values: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    # ids outside the hub (synthetic MinVIS ids) must be equal as they are
    return np.asarray([mapping.get(int(v), int(v)) for v in values.ravel()],
                      dtype=np.int64).reshape(values.shape)


def compare_array(name: str, mine: np.ndarray, ref: np.ndarray, mapping: dict[int, int],
                  mask_pixels: int = 1) -> float:
    """Assert ``mine`` matches ``ref`` under the rule for ``name``; return the max abs diff.
    ``mask_pixels``: pixels of one mask (h4 * w4), for the mask pixel counts."""
    assert mine.shape == ref.shape, f"{name}: shape {mine.shape} != reference {ref.shape}"
    if mine.size == 0:
        return 0.0
    if ID_ARRAYS.match(name):
        mapped = _map_ids(ref, mapping)
        assert np.array_equal(mapped, mine), f"{name}: track ids differ beyond a renaming"
        return 0.0
    if name.endswith("_mask_pos_count"):
        diff = np.abs(mine.astype(np.int64) - ref.astype(np.int64))
        return _check_counts(name, diff, ref.shape[0] * mask_pixels)
    if ref.dtype == bool or ref.dtype.kind in "iu":
        assert np.array_equal(mine, ref), f"{name}: {int((mine != ref).sum())} entries differ"
        return 0.0
    diff = np.abs(mine.astype(np.float64) - ref.astype(np.float64))
    worst = float(diff.max())
    scale = max(1.0, float(np.abs(ref).max()))
    if POS_ARRAYS.match(name):
        close = (diff <= POS_ATOL).all(axis=-1)
        assert close.mean() >= POS_MIN_FRACTION, (
            f"{name}: only {close.mean():.2%} of vectors within {POS_ATOL} (max diff {worst:.3g})")
    elif MASK_ARRAYS.match(name):
        assert worst <= MASK_TOL * scale, f"{name}: max diff {worst:.3g} at scale {scale:.3g}"
    elif FEATURE_ARRAYS.match(name):
        assert worst <= FEATURE_TOL * scale, f"{name}: max diff {worst:.3g} at scale {scale:.3g}"
    else:
        ok = diff <= LOGIT_TOL + LOGIT_TOL * np.abs(ref)
        assert ok.all(), f"{name}: {int((~ok).sum())} values beyond atol=rtol={LOGIT_TOL} " \
                         f"(max diff {worst:.3g})"
    return worst


def _check_counts(name: str, diff: np.ndarray, pixels: int) -> float:
    # pixel counts of the final mask of every query row: total |difference| over all pixels
    assert diff.sum() <= (1 - PIXEL_MIN_AGREEMENT) * max(pixels, 1), (
        f"{name}: {int(diff.sum())} mask pixels differ")
    return float(diff.max())


def compare_vis(mine: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                score_atol: float) -> dict[str, float]:
    """The final VIS result as a set of (candidate, label) entries."""
    def keyed(arrays: dict[str, np.ndarray]) -> dict[tuple[int, int], int]:
        keys = list(zip(arrays["vis_ids"].tolist(), arrays["vis_labels"].tolist()))
        assert len(set(keys)) == len(keys), "duplicate (candidate, label) entries"
        return {k: i for i, k in enumerate(keys)}

    ours_k, ref_k = keyed(mine), keyed(ref)
    assert set(ours_k) == set(ref_k), (
        f"VIS entries differ: ours only {sorted(set(ours_k) - set(ref_k))}, "
        f"reference only {sorted(set(ref_k) - set(ours_k))}")
    assert np.array_equal(mine["vis_image_size"], ref["vis_image_size"])
    worst_score, worst_pixels = 0.0, 0.0
    for key, j in ref_k.items():
        i = ours_k[key]
        d = abs(float(mine["vis_scores"][i]) - float(ref["vis_scores"][j]))
        assert d <= score_atol, f"VIS score of {key}: diff {d:.3g} > {score_atol}"
        worst_score = max(worst_score, d)
        masks_mine, masks_ref = mine["vis_masks"][i], ref["vis_masks"][j]
        assert masks_mine.shape == masks_ref.shape
        disagree = float((masks_mine != masks_ref).mean())
        assert disagree <= 1 - PIXEL_MIN_AGREEMENT, f"VIS masks of {key}: {disagree:.4%} differ"
        worst_pixels = max(worst_pixels, disagree)
    return {"vis_scores": worst_score, "vis_masks_disagreement": worst_pixels}


def compare_outputs(case: ReferenceCase, mode: str, ours: dict[str, np.ndarray],
                    vis_score_atol: float) -> dict[str, float]:
    """Compare every reference array; returns name -> max abs difference (for reports)."""
    ref = case.outputs(mode)
    missing = sorted(set(ref) - set(ours))
    assert not missing, f"arrays of the reference that the run did not write: {missing}"
    mapping = id_renaming(ref, ours)
    last = max(n for n in ours if re.match(r"^trk_f\d+_masks$", n))
    mask_pixels = int(np.prod(ours[last].shape[-2:]))
    report: dict[str, float] = {}
    for name in sorted(ref):
        if name in VIS_ARRAYS or name == "vis_image_size":
            continue
        report[name] = compare_array(name, ours_as_reference(case, mode, ours, name), ref[name],
                                     mapping, mask_pixels)
    report.update(compare_vis(ours, ref, vis_score_atol))
    return report
