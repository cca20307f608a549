"""Streaming inference (VideoPredictor / VideoSession) against the non-streaming reference path.

Uses the reference case's model and frames; frames are pushed in uneven chunks, the segmenter runs
in batches of 2, and the offline mask-feature cache is made too small so that ``finish`` needs its
replay pass. Results must equal the reference path's: same decisions and instances, scores to
float noise (1e-5) and masks on >= 99.99 % of pixels (segmenter batches of 2 instead of 5 and
per-frame mask decoding change the last float bits; a mask logit at ~0 may flip a pixel).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from daq_model.config import load_config
from daq_model.dvis_daq import create_model
from daq_model.outputs import VideoInfo
from daq_model.predictor import VideoPredictor
from daq_model.reference import run_reference
from daq_model.track_state import GrowingRows
from tests.reference_case import ReferenceCase


@pytest.fixture(scope="module")
def case() -> ReferenceCase:
    return ReferenceCase.selected()


def _model(case, mode, work, **overrides):
    cfg = load_config(case.config_path(mode)).with_overrides(
        {"inference.track_ids": "official", "inference.frame_batch_size": 2, **overrides})
    return create_model(cfg, case.weights_path(mode, work))


@pytest.fixture(scope="module")
def models(case, tmp_path_factory):
    work = tmp_path_factory.mktemp("predictor")
    return {mode: _model(case, mode, work) for mode in ("online", "offline")}


def _run_session(model, frames, output_hw, seed, cache_mb=1024.0, chunks=(3, 1, 4)):
    predictor = VideoPredictor(model, feature_cache_mb=cache_mb, id_rng=random.Random(seed))
    session = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2]),
                                    output_size=output_hw)
    tracks, start, i = [], 0, 0
    while start < len(frames):
        size = chunks[i % len(chunks)]
        tracks += list(session.push(frames[start:start + size]))
        start, i = start + size, i + 1
    tracks += list(session.flush())
    batches = [frames[s:s + 5] for s in range(0, len(frames), 5)]
    result = session.finish(replay=lambda: iter(batches))
    return session, tracks, result


def _reference_entries(ref):
    ids = ref["agg_pred_ids"]
    return {(int(ids[c]), int(label)): (float(score), ref["vis_masks"][n])
            for n, (c, label, score) in enumerate(zip(ref["vis_ids"], ref["vis_labels"],
                                                      ref["vis_scores"]))}


def _assert_masks_agree(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape and ours.dtype == bool
    assert (ours != ref).mean() <= 1e-4, f"{int((ours != ref).sum())} of {ref.size} pixels differ"


def _online_instance_masks(tracks, track_id, shape):
    return np.stack([ft.masks[list(ft.track_ids).index(track_id)] if track_id in ft.track_ids
                     else np.zeros(shape, dtype=bool) for ft in tracks])


@pytest.mark.parametrize("num_frames", [None, 1])
def test_online_session_equals_reference_path(case, models, num_frames):
    inputs = case.inputs()
    frames = inputs["frames"][:num_frames]
    output_hw = tuple(int(v) for v in inputs["output_hw"])
    ref = run_reference(models["online"], frames, output_hw, py_seed=7)
    _, tracks, result = _run_session(models["online"], frames, output_hw, seed=7)
    assert [ft.frame_index for ft in tracks] == list(range(len(frames)))
    assert result.mask_source == "tracker" and result.num_frames == len(frames)
    expected = _reference_entries(ref)
    assert len(result.instances) == len(expected) > 0
    scores = [inst.score for inst in result.instances]
    assert scores == sorted(scores, reverse=True)
    for inst in result.instances:
        score, masks = expected[(inst.track_id, inst.label)]
        assert inst.score == pytest.approx(score, abs=1e-5)
        # FrameTracks masks are the post-processed track masks
        _assert_masks_agree(_online_instance_masks(tracks, inst.track_id, output_hw), masks)
    # per-frame track lists follow the tracker's active lists
    for ft in tracks:
        t = ft.frame_index
        assert list(ft.track_ids) == list(ref[f"trk_f{t:02d}_active_ids"])
        assert ft.masks.shape == (len(ft), *output_hw) and ft.masks.dtype == bool
        valid_rows = ref[f"trk_f{t:02d}_query_valid"]
        assert int(ft.valid.sum()) == int(valid_rows.sum())
        assert np.all((ft.scores >= 0) & (ft.scores <= 1))


# stricter start thresholds leave fewer tracked candidates than Q: the MinVIS fill-up kicks in
FEW_TRACKS = {"tracker.aux_inference_select_threshold": 0.3,
              "tracker.inference_select_threshold": 0.5}


@pytest.mark.parametrize("num_frames,overrides", [(None, {}), (1, {}), (1, FEW_TRACKS),
                                                  (7, FEW_TRACKS)])
def test_offline_session_with_replay_equals_reference_path(case, models, tmp_path, num_frames,
                                                           overrides):
    inputs = case.inputs()
    frames = inputs["frames"][:num_frames]
    output_hw = tuple(int(v) for v in inputs["output_hw"])
    model = _model(case, "offline", tmp_path, **overrides) if overrides else models["offline"]
    ref = run_reference(model, frames, output_hw, py_seed=3)
    # a budget of ~2 frames of mask features: the rest comes from the replay pass
    feats = model.cfg.pixel_decoder.mask_dim * 4 * np.prod(
        [s // 4 for s in ((frames.shape[1] + 31) // 32 * 32, (frames.shape[2] + 31) // 32 * 32)])
    session, _, result = _run_session(model, frames, output_hw, seed=3,
                                      cache_mb=2.5 * feats / 2 ** 20)
    assert len(session.cache) == min(2, len(frames))
    assert result.mask_source == "refiner"
    num_q = model.cfg.tracker.num_new_ins
    assert result.stats["candidates"] >= num_q  # top-k records, filled up to Q
    if overrides:
        assert 0 < result.stats["tracked_candidates"] < num_q
        assert len(ref["refiner_in_minvis_index"]) == num_q - result.stats["tracked_candidates"]
    expected = _reference_entries(ref)
    assert len(result.instances) == len(expected) > 0
    frame_masks = list(result.iter_frame_masks())
    assert [fm.frame_index for fm in frame_masks] == list(range(len(frames)))
    stacked = np.stack([fm.masks for fm in frame_masks], axis=1)  # (N, T, H, W)
    candidate_ids = list(ref["agg_pred_ids"])
    for n, inst in enumerate(result.instances):
        key = inst.track_id if inst.track_id >= 0 else None
        matches = [k for k in expected if k[1] == inst.label
                   and (k[0] == key or (key is None and k[0] not in ref["hub_ids"]))
                   and abs(expected[k][0] - inst.score) < 1e-5]
        assert len(matches) == 1, f"instance {inst} not (once) in the reference result"
        _assert_masks_agree(stacked[n], expected[matches[0]][1])
        assert key is None or key in candidate_ids


def test_offline_finish_needs_replay_beyond_cache(case, models):
    frames = case.inputs()["frames"][:4]
    predictor = VideoPredictor(models["offline"], feature_cache_mb=0.0)
    session = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2]))
    list(session.push(frames))
    list(session.flush())
    with pytest.raises(RuntimeError, match="replay"):
        session.finish()


def test_push_validates_frames_and_num_frames_flushes(case, models):
    frames = case.inputs()["frames"][:3]
    predictor = VideoPredictor(models["online"])
    info = VideoInfo(height=frames.shape[1], width=frames.shape[2], num_frames=3)
    session = predictor.start_video(info)
    with pytest.raises(ValueError, match="uint8"):
        session.push(frames.astype(np.float32))
    # frame_batch_size is 2: the 3rd frame is not held back because num_frames says it is last
    got = list(session.push(frames[:2])) + list(session.push(frames[2:]))
    assert [ft.frame_index for ft in got] == [0, 1, 2]
    result = session.finish()
    with pytest.raises(RuntimeError):
        session.push(frames[:1])
    with pytest.raises(RuntimeError, match="FrameTracks"):
        result.iter_frame_masks()


def test_sequential_ids_give_the_same_result(case, tmp_path):
    inputs = case.inputs()
    frames = inputs["frames"][:6]
    official = _model(case, "online", tmp_path)
    sequential = _model(case, "online", tmp_path, **{"inference.track_ids": "sequential"})
    _, tracks_a, res_a = _run_session(official, frames, None, seed=5)
    _, tracks_b, res_b = _run_session(sequential, frames, None, seed=5)
    first_seen: list[int] = []
    for ft in tracks_b:
        first_seen += [int(i) for i in ft.track_ids if int(i) not in first_seen]
    assert first_seen == list(range(len(first_seen)))  # 0, 1, 2, ... in creation order
    assert [(i.label, i.score) for i in res_a.instances] == [(i.label, i.score)
                                                             for i in res_b.instances]


def _documented_bytes(session) -> int:
    """The per-session state documented in daq_model/README.md ("Memory per frame")."""
    cfg = session.cfg
    c, k1, q = cfg.segmenter.hidden_dim, cfg.num_classes + 1, cfg.segmenter.num_queries
    hub = session.tracker.hub
    total = 0
    for r in hub.records.values():
        total += (2 + len(r.prev_anchors)) * c * 4 + k1 * 8  # query, anchor, history, logit sum
        if r.embeds is not None:  # offline: C floats per stored frame, chunked
            chunks = -(-r.length // GrowingRows.CHUNK_ROWS)
            total += chunks * GrowingRows.CHUNK_ROWS * c * 4
    if cfg.offline:
        capacity = max(64, session.num_frames * 3 // 2 + 1)  # embedding buffer grows by 1.5x
        total += capacity * q * c * 4 + session.num_frames * q * 4  # embeddings + MinVIS link
        total += q * (c * 4 + k1 * 8)  # MinVIS: previous linked embeddings, logit sum
        total += session.cache.nbytes
    return total


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_session_state_stays_within_documented_bytes(case, models, mode):
    """A 12- and a 60-frame video (the case frames played back and forth): the state is within
    the documented bytes; dead tracks that cannot reach the final top-k are released, so the
    number of records stays bounded, and the result still equals the reference path's."""
    frames = case.inputs()["frames"]
    long_video = np.concatenate([frames, frames[::-1]] * 2 + [frames])
    model = models[mode]
    cfg = model.cfg
    limit = cfg.refiner.offline_topk_num if cfg.offline else cfg.test.max_num
    for video in (frames, long_video):
        predictor = VideoPredictor(model, feature_cache_mb=1.0, id_rng=random.Random(0))
        session = predictor.start_video(VideoInfo(height=video.shape[1], width=video.shape[2]))
        for start in range(0, len(video), 6):
            list(session.push(video[start:start + 6]))
        assert session.state_nbytes() <= _documented_bytes(session)
        assert session.cache.nbytes <= 2 ** 20
        hub = session.tracker.hub
        dead = sum(1 for r in hub.records.values() if r.dead)
        assert dead <= 2 * limit + 32
        assert len(hub.active) + dead == len(hub.records)
    assert hub.num_released > 0
    result = session.finish(replay=lambda: [long_video])
    ref = run_reference(model, long_video, long_video.shape[1:3], py_seed=0)
    expected = _reference_entries(ref)
    assert len(result.instances) == len(expected)
    for inst in result.instances:
        if inst.track_id >= 0:
            assert expected[(inst.track_id, inst.label)][0] == pytest.approx(inst.score, abs=1e-5)


def test_without_frame_masks_the_stream_and_the_result_are_unchanged(case, models):
    """``frame_masks=False`` (what the label job uses for offline models) drops only the streamed
    per-frame masks: same tracks, scores and validity per frame, the same final instances."""
    inputs = case.inputs()
    frames = inputs["frames"][:6]
    output_hw = tuple(int(v) for v in inputs["output_hw"])
    model = models["offline"]
    results = []
    for frame_masks in (True, False):
        predictor = VideoPredictor(model, id_rng=random.Random(5))
        session = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2]),
                                        output_size=output_hw, frame_masks=frame_masks)
        tracks = list(session.push(frames)) + list(session.flush())
        results.append((tracks, session.finish()))
    (with_masks, full), (without, lean) = results
    assert len(with_masks) == len(without) == len(frames)
    for a, b in zip(with_masks, without):
        assert a.masks.shape[0] == b.masks.shape[0] == len(a) and b.masks.shape[1:] == (0, 0)
        assert a.masks.shape[1:] == output_hw
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert [(i.track_id, i.label, i.score) for i in full.instances] == \
        [(i.track_id, i.label, i.score) for i in lean.instances]
    for fa, fb in zip(full.iter_frame_masks(), lean.iter_frame_masks()):
        np.testing.assert_array_equal(fa.masks, fb.masks)


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_bf16_autocast_session_runs_and_agrees(case, tmp_path, mode):
    """The mixed-precision path (``inference.precision``: bf16 autocast on CPU here; fp16/bf16 on
    CUDA share the same code) runs a whole session, refiner included, without dtype errors, and
    keeps the tracker's decisions, the best instance and the scores of float32."""
    inputs = case.inputs()
    frames = inputs["frames"][:6]
    output_hw = tuple(int(v) for v in inputs["output_hw"])
    runs = []
    for precision in ("fp32", "bf16"):
        model = _model(case, mode, tmp_path, **{"inference.precision": precision})
        predictor = VideoPredictor(model, id_rng=random.Random(1))
        session = predictor.start_video(VideoInfo(height=frames.shape[1], width=frames.shape[2]),
                                        output_size=output_hw)
        tracks = list(session.push(frames)) + list(session.flush())
        runs.append((tracks, session.finish()))
    (fp32_tracks, fp32), (bf16_tracks, bf16) = runs
    assert [len(t) for t in fp32_tracks] == [len(t) for t in bf16_tracks]
    assert len(fp32.instances) == len(bf16.instances) > 0
    # the top pairs' scores sit close together, so bf16 noise may reorder near-ties (and swap
    # which class of a track makes the top-k); the best pair and the score profile must hold
    assert fp32.instances[0].label == bf16.instances[0].label
    np.testing.assert_allclose([i.score for i in fp32.instances], [i.score for i in bf16.instances],
                               atol=0.05)
