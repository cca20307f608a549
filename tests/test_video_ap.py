"""Video AP against cases worked out by hand, and against a straightforward re-derivation.

Conventions in the comments: IoU thresholds t in {.50, .55, ..., .95} (10 values), recall points
r in {0, .01, ..., 1} (101 values); AP_t = mean over r of the interpolated precision
q(r) = max{precision at a rank whose recall >= r} (0 if no rank reaches r). AP = mean_t AP_t.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from daq_eval.video_ap import METRIC_NAMES, evaluate_video_ap
from daq_eval.ytvis_format import parse_dataset, parse_predictions


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def rle(mask: np.ndarray | None) -> dict | None:
    if mask is None:
        return None
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def ytvis_gt(videos: dict[int, tuple[int, int, int]], objects: list[dict],
             categories: tuple[str, ...] = ("a",)) -> dict:
    """Ground truth in the exact YouTube-VIS layout. videos: id -> (height, width, length)."""
    anns = []
    for i, o in enumerate(objects):
        masks = o["masks"]
        areas = o.get("areas", [None if m is None else int(m.sum()) for m in masks])
        anns.append({
            "id": i + 1, "video_id": o["video"], "category_id": o.get("cat", 1),
            "iscrowd": o.get("iscrowd", 0), "segmentations": [rle(m) for m in masks], "areas": areas,
            "bboxes": [None if m is None else [float(x) for x in mask_util.toBbox(rle(m))] for m in masks],
            "height": videos[o["video"]][0], "width": videos[o["video"]][1],
            "length": videos[o["video"]][2]})
    return {
        "info": {"description": "hand-made"}, "licenses": [],
        "videos": [{"id": vid, "height": h, "width": w, "length": t,
                    "file_names": [f"v{vid}/{k:05d}.jpg" for k in range(t)]}
                   for vid, (h, w, t) in videos.items()],
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n, "supercategory": "thing"} for k, n in enumerate(categories)],
    }


def ytvis_preds(preds: list[tuple[int, int, float, list]]) -> list[dict]:
    return [{"video_id": v, "category_id": c, "score": s, "segmentations": [rle(m) for m in masks]}
            for v, c, s, masks in preds]


def evaluate(gt: dict, preds: list[dict]):
    # through JSON text, so the evaluator sees exactly what a file holds
    dataset = parse_dataset(json.loads(json.dumps(gt)), "gt.json")
    return evaluate_video_ap(dataset, parse_predictions(json.loads(json.dumps(preds)), dataset, "p.json"))


A = pytest.approx


def test_late_object_and_partial_overlaps() -> None:
    H = W = 20
    box = rect(H, W, 0, 10, 0, 10)  # 100 px
    half = rect(H, W, 0, 10, 0, 5)  # 50 px, inside box
    gt = ytvis_gt({1: (H, W, 4), 2: (H, W, 4)}, [
        {"video": 1, "masks": [None, box, box, None]},  # appears at frame 1, gone after frame 2
        {"video": 2, "masks": [box, box, box, box]},
    ])
    preds = ytvis_preds([
        # video 1: also covers frame 0 where the object is absent:
        # IoU = (0 + 100 + 100 + 0) / (100 + 100 + 100 + 0) = 2/3; frame 3 (both absent) adds nothing
        (1, 1, 0.9, [box, box, box, None]),
        # video 2: half the object on every frame: IoU = 4*50 / 4*100 = 0.5 exactly
        (2, 1, 0.8, [half, half, half, half]),
    ])
    s = evaluate(gt, preds).stats
    # t=.50: both TP -> AP_t = 1. t in {.55,.60,.65}: ranks TP, FP; precision 1 up to recall .5
    # -> q = 1 for the 51 points r <= .50, 0 above -> AP_t = 51/101. t >= .70: no TP -> 0.
    assert s["AP"] == A((1 + 3 * 51 / 101) / 10)  # 0.251485...
    assert s["AP50"] == A(1.0) and s["AP75"] == 0.0
    # video areas 100 and 100 (predictions 100, 50): all small
    assert s["APs"] == A(s["AP"]) and s["APm"] == -1 and s["APl"] == -1
    # recall per t: 1, .5, .5, .5, then 0 -> (1 + 1.5) / 10
    for k in ("AR1", "AR10", "AR100", "ARs"):
        assert s[k] == A(0.25)
    assert s["ARm"] == -1 and s["ARl"] == -1


def test_score_ties_follow_video_id_then_file_order() -> None:
    H = W = 20
    box, other = rect(H, W, 0, 10, 0, 10), rect(H, W, 12, 20, 12, 20)
    # two videos, one object each, both predictions scored 0.5; the miss is in video 1.
    gt = ytvis_gt({2: (H, W, 1), 1: (H, W, 1)}, [{"video": 2, "masks": [box]}, {"video": 1, "masks": [box]}])
    preds = ytvis_preds([(2, 1, 0.5, [box]), (1, 1, 0.5, [other])])
    # pooled in video-id order (video 1 first, whatever the file order): FP, TP ->
    # precision .5 at recall .5 -> q = .5 for r <= .5 (51 points) -> AP = 25.5 / 101 at every t
    assert evaluate(gt, preds).stats["AP"] == A(25.5 / 101)
    # the miss in video 2 instead: TP, FP -> q = 1 for r <= .5 -> AP = 51 / 101
    preds = ytvis_preds([(2, 1, 0.5, [other]), (1, 1, 0.5, [box])])
    assert evaluate(gt, preds).stats["AP"] == A(51 / 101)

    # within one video, equal scores keep file order: p1 (IoU .6) is matched before p2 (IoU 1)
    g = rect(H, W, 0, 10, 0, 10)
    p1 = rect(H, W, 0, 6, 0, 10)  # 60 of the 100 px -> IoU .6
    gt = ytvis_gt({1: (H, W, 1)}, [{"video": 1, "masks": [g]}])
    # t in {.50,.55,.60}: p1 TP, p2 FP (object taken) -> AP_t = 1.
    # t >= .65 (7 values): p1 FP, p2 TP -> precision .5 at recall 1 -> AP_t = .5. AP = (3 + 3.5) / 10
    s = evaluate(gt, ytvis_preds([(1, 1, 0.7, [p1]), (1, 1, 0.7, [g])])).stats
    assert s["AP"] == A(0.65) and s["AP50"] == A(1.0) and s["AP75"] == A(0.5)
    assert evaluate(gt, ytvis_preds([(1, 1, 0.7, [g]), (1, 1, 0.7, [p1])])).stats["AP"] == A(1.0)


def test_duplicates_are_false_positives() -> None:
    H = W = 20
    g = rect(H, W, 0, 10, 0, 10)
    gt = ytvis_gt({1: (H, W, 2)}, [{"video": 1, "masks": [g, g]}])
    # the duplicate (lower score) finds the object taken: ranks TP, FP -> AP 1 (recall 1 at rank 1)
    assert evaluate(gt, ytvis_preds([(1, 1, 0.9, [g, g]), (1, 1, 0.8, [g, g])])).stats["AP"] == A(1.0)
    # duplicate scored higher than the good one cannot both match: the first takes the object
    s = evaluate(gt, ytvis_preds([(1, 1, 0.9, [g, None]), (1, 1, 0.8, [g, g])])).stats
    # first: IoU 100/200 = .5 -> TP at t=.5 only (then the second is FP): AP_.5 = 1.
    # t > .5: first FP, second TP -> .5. AP = (1 + 9 * .5) / 10 = .55
    assert s["AP"] == A(0.55)


def test_equal_iou_goes_to_the_later_object() -> None:
    H = W = 20
    B = rect(H, W, 0, 10, 0, 10)
    # X on frames 0-1, Y on frames 1-2, same place. P (frame 1 only) has IoU 100/200 = .5 with both.
    gt = ytvis_gt({1: (H, W, 3)}, [{"video": 1, "masks": [B, B, None]},  # X (listed first)
                                  {"video": 1, "masks": [None, B, B]}])  # Y
    # Q equals X: IoU 1 with X, 100/300 with Y.
    preds = ytvis_preds([(1, 1, 0.9, [None, B, None]), (1, 1, 0.8, [B, B, None])])
    s = evaluate(gt, preds).stats
    # t = .5: on equal IoU the later object (Y) takes P, so Q still finds X: TP, TP -> 1
    #   (were X taken by P, Q would be a FP: 51/101).
    # t > .5: P matches nothing, Q finds X: FP, TP -> .5 up to recall .5 -> 25.5/101
    assert s["AP50"] == A(1.0)
    assert s["AP"] == A((1 + 9 * 25.5 / 101) / 10)


def test_iscrowd_objects_are_ignored_and_reusable() -> None:
    H = W = 20
    n = rect(H, W, 0, 10, 0, 10)  # normal object, frames 0-1
    c = rect(H, W, 10, 20, 10, 20)  # crowd region, frame 0 only
    gt = ytvis_gt({1: (H, W, 2)}, [
        {"video": 1, "masks": [n, n]},
        {"video": 1, "masks": [c, None], "iscrowd": 1},
        {"video": 1, "masks": [c, None], "iscrowd": 1, "cat": 2},  # category b: crowd only
    ], categories=("a", "b"))
    preds = ytvis_preds([
        (1, 1, 0.95, [rect(H, W, 10, 18, 10, 20), None]),  # 80 px in the crowd: IoU .8
        (1, 1, 0.93, [rect(H, W, 10, 16, 10, 20), None]),  # 60 px in the crowd: IoU .6
        (1, 1, 0.90, [n, n]),  # the normal object: IoU 1
        (1, 1, 0.60, [None, rect(H, W, 0, 2, 18, 20)]),  # matches nothing
        (1, 2, 0.50, [c, None]),  # category b: matches its crowd region exactly
    ])
    r = evaluate(gt, preds)
    # category a, one non-ignored object. Predictions matched to the crowd are ignored (neither
    # TP nor FP), and the crowd can absorb several predictions; IoU with a crowd is plain IoU.
    # t <= .60 (3): ign, ign, TP, FP -> AP_t 1
    # t in .65-.80 (4): ign, FP, TP, FP -> precision .5 at recall 1 -> .5
    # t >= .85 (3): FP, FP, TP, FP -> 1/3
    assert r.stats["AP"] == A((3 * 1 + 4 * 0.5 + 3 / 3) / 10)  # 0.6
    assert r.stats["AP50"] == A(1.0) and r.stats["AP75"] == A(0.5) and r.stats["AR100"] == A(1.0)
    # category b has only crowd ground truth: undefined, left out of the mean
    assert r.per_category_ap == {"a": A(0.6), "b": -1.0}


def test_area_ranges_use_video_level_areas() -> None:
    H = W = 500
    S = rect(H, W, 350, 450, 350, 450)  # 10000 px -> small
    M = rect(H, W, 0, 150, 320, 470)  # 22500 px -> medium
    L = rect(H, W, 0, 300, 0, 300)  # 90000 px -> large
    gt = ytvis_gt({1: (H, W, 2)}, [{"video": 1, "masks": [S, None]},  # video area 10000
                                  {"video": 1, "masks": [M, M]}, {"video": 1, "masks": [L, L]}])
    p3 = rect(H, W, 0, 210, 0, 300)  # 63000 px inside L: IoU 126000/180000 = .7; its area is medium
    preds = ytvis_preds([
        (1, 1, 0.95, [rect(H, W, 450, 500, 0, 50), None]),  # p4: 2500 px, matches nothing
        (1, 1, 0.90, [S, None]),  # p1
        (1, 1, 0.85, [p3, p3]),  # p3
        (1, 1, 0.80, [M, M]),  # p2
    ])
    s = evaluate(gt, preds).stats
    # all (3 objects): t <= .7 (5): FP TP TP TP -> precision .75 at recall 1 -> .75
    #   t > .7 (5): FP TP FP TP -> max precision .5, recall reaches 2/3 -> q = .5 for the
    #   67 points r <= .66 -> .5 * 67/101
    assert s["AP"] == A((5 * 0.75 + 5 * 0.5 * 67 / 101) / 10)  # 0.540842
    assert s["AP50"] == A(0.75) and s["AP75"] == A(0.5 * 67 / 101)
    # small (S only): p4 FP (small), p1 TP; p2 -> M (ignored); p3 -> L (ignored) or unmatched
    #   with a medium area (ignored) -> FP, TP at every t -> .5
    assert s["APs"] == A(0.5) and s["ARs"] == A(1.0)
    # medium (M only): p4, p1 ignored; t <= .7: p3 on L (ignored), p2 TP -> 1;
    #   t > .7: p3 unmatched with a medium area = FP, then p2 TP -> .5
    assert s["APm"] == A(0.75) and s["ARm"] == A(1.0)
    # large (L only): t <= .7: p3 TP -> 1; t > .7: p3 unmatched, area 63000 < 256^2 -> ignored,
    #   nothing found -> 0
    assert s["APl"] == A(0.5) and s["ARl"] == A(0.5)
    # AR1: the top prediction of the video is p4, a miss
    assert s["AR1"] == 0.0
    assert s["AR10"] == A((5 * 1 + 5 * 2 / 3) / 10) and s["AR100"] == A(s["AR10"])


def test_area_range_bounds_inclusive_and_zero_areas_skipped() -> None:
    H = W = 300
    b = rect(H, W, 0, 128, 0, 128)  # 16384 = 128^2
    empty = np.zeros((H, W), np.uint8)
    big = rect(H, W, 0, 256, 0, 256)  # 65536 = 256^2
    gt = ytvis_gt({1: (H, W, 3), 2: (H, W, 1)}, [
        # areas [16384, null, 0]: the video area skips null and 0 -> 16384: small AND medium
        {"video": 1, "masks": [b, None, empty], "areas": [16384, None, 0]},
        {"video": 2, "masks": [big]},  # 65536: medium AND large
    ])
    s = evaluate(gt, ytvis_preds([(1, 1, 0.9, [b, None, None])])).stats
    assert s["APs"] == A(1.0)  # only the found object is small
    # medium holds both objects, one found (precision 1 up to recall .5)
    assert s["APm"] == A(51 / 101) and s["ARm"] == A(0.5)
    assert s["APl"] == 0.0 and s["ARl"] == 0.0  # only the missed one is large
    assert s["AP"] == A(51 / 101)


def test_more_than_ten_and_more_than_a_hundred_predictions() -> None:
    H = W = 100
    g1, g2 = rect(H, W, 0, 10, 0, 10), rect(H, W, 20, 30, 0, 10)
    fp = rect(H, W, 50, 52, 50, 52)
    gt = ytvis_gt({1: (H, W, 1)}, [{"video": 1, "masks": [g1]}, {"video": 1, "masks": [g2]}])
    preds = []
    for i in range(101):  # distinct scores, rank i
        mask = g1 if i == 10 else g2 if i == 100 else fp
        preds.append((1, 1, 1.0 - 0.001 * i, [mask]))
    s = evaluate(gt, ytvis_preds(preds)).stats
    # rank 101 (g2) is cut by maxDets 100; g1 found at rank 11: precision 1/11 at recall .5
    assert s["AP"] == A(51 / 101 / 11)
    assert s["AR100"] == A(0.5) and s["AR10"] == 0.0 and s["AR1"] == 0.0


def test_categories_undefined_and_missing() -> None:
    H = W = 20
    g = rect(H, W, 0, 10, 0, 10)
    gt = ytvis_gt({1: (H, W, 1)}, [{"video": 1, "masks": [g], "cat": 1},
                                  {"video": 1, "masks": [rect(H, W, 12, 20, 0, 8)], "cat": 3}],
                  categories=("a", "b", "c"))
    preds = ytvis_preds([(1, 1, 0.9, [g]), (1, 2, 0.8, [g]), (1, 99, 0.99, [g])])
    r = evaluate(gt, preds)
    # a: found -> 1; b: no ground truth -> undefined; c: never predicted -> 0; unknown id 99 dropped
    assert r.per_category_ap == {"a": A(1.0), "b": -1.0, "c": 0.0}
    assert r.stats["AP"] == A(0.5) and r.num_predictions == 2
    # no predictions at all: defined zeros where there is ground truth
    r = evaluate(gt, [])
    assert r.stats["AP"] == 0.0 and r.stats["AR100"] == 0.0 and r.per_category_ap["b"] == -1.0


# --------------------------------------------------------------------------- re-derivation


def _dense(seg, h, w):
    return None if seg is None else mask_util.decode(seg).astype(bool)


def naive_video_ap(gt: dict, preds: list[dict]) -> dict[str, float]:
    """The same definition written the plain way: dense masks, nested loops, sorted tuples."""
    thrs = np.linspace(0.5, 0.95, 10)
    recs = np.linspace(0.0, 1.0, 101)
    ranges = {"all": (0, 1e10), "small": (0, 128 ** 2), "medium": (128 ** 2, 256 ** 2),
              "large": (256 ** 2, 1e10)}
    vids = {v["id"]: v for v in gt["videos"]}
    vid_rank = {v: i for i, v in enumerate(sorted(vids))}
    cats = sorted(c["id"] for c in gt["categories"])

    def avg(areas):
        a = [x for x in areas if x]
        return sum(a) / len(a) if a else 0.0

    def track(segs, v):
        return [_dense(s, vids[v]["height"], vids[v]["width"]) for s in segs]

    G = [dict(v=a["video_id"], c=a["category_id"], crowd=a["iscrowd"], area=avg(a["areas"]),
              m=track(a["segmentations"], a["video_id"])) for a in gt["annotations"]]
    D = []
    for i, p in enumerate(preds):
        m = track(p["segmentations"], p["video_id"])
        D.append(dict(v=p["video_id"], c=p["category_id"], s=p["score"], i=i, m=m,
                      area=avg([0 if x is None else int(x.sum()) for x in m])))

    def iou(dm, gm):
        inter = union = 0
        for a, b in zip(dm, gm):
            a = np.zeros(1, bool) if a is None else a
            b = np.zeros(1, bool) if b is None else b
            if a.size == 1 or b.size == 1:
                union += int(a.sum()) + int(b.sum())
            else:
                inter += int((a & b).sum())
                union += int((a | b).sum())
        return inter / union if union else 0.0

    prec = {}  # (t, cat, range, maxdet) -> precision list over recall points
    rec = {}
    for rng_name, (lo, hi) in ranges.items():
        for c in cats:
            rows = {md: [] for md in (1, 10, 100)}  # (score, video rank, order, kind) kind: tp/fp/ig
            npos = 0
            for v in sorted(vids):
                gts = [g for g in G if g["v"] == v and g["c"] == c]
                dts = sorted([d for d in D if d["v"] == v and d["c"] == c], key=lambda d: (-d["s"], d["i"]))[:100]
                ign = [bool(g["crowd"]) or not lo <= g["area"] <= hi for g in gts]
                npos += sum(1 for x in ign if not x)
                order = [j for j in range(len(gts)) if not ign[j]] + [j for j in range(len(gts)) if ign[j]]
                ious = [[iou(d["m"], g["m"]) for g in gts] for d in dts]
                kinds = []  # per threshold list of kinds per det
                for t in thrs:
                    taken = set()
                    ks = []
                    for di, d in enumerate(dts):
                        best, best_iou = None, min(t, 1 - 1e-10)
                        for j in order:
                            if j in taken and not gts[j]["crowd"]:
                                continue
                            if best is not None and not ign[best] and ign[j]:
                                break
                            if ious[di][j] >= best_iou:
                                best, best_iou = j, ious[di][j]
                        if best is None:
                            ks.append("ig" if not lo <= d["area"] <= hi else "fp")
                        else:
                            taken.add(best)
                            ks.append("ig" if ign[best] else "tp")
                    kinds.append(ks)
                for md in rows:
                    for di, d in enumerate(dts[:md]):
                        rows[md].append((d["s"], vid_rank[v], di, [kinds[ti][di] for ti in range(len(thrs))]))
            if npos == 0:
                continue
            for md, rs in rows.items():
                rs = sorted(rs, key=lambda x: (-x[0], x[1], x[2]))
                for ti in range(len(thrs)):
                    tp = fp = 0
                    points = []
                    for r in rs:
                        tp += r[3][ti] == "tp"
                        fp += r[3][ti] == "fp"
                        if r[3][ti] != "ig":
                            points.append((tp / npos, tp / (tp + fp)))
                    rec[ti, c, rng_name, md] = points[-1][0] if points else 0.0
                    prec[ti, c, rng_name, md] = [max([p for rc, p in points if rc >= r], default=0.0) for r in recs]

    def mean(vals):
        return float(np.mean(vals)) if vals else -1.0

    def ap(rng_name="all", t=None):
        return mean([x for (ti, c, rn, md), q in prec.items() if rn == rng_name and md == 100
                     and (t is None or thrs[ti] == t) for x in q])

    def ar(rng_name="all", md=100):
        return mean([x for (ti, c, rn, m), x in rec.items() if rn == rng_name and m == md])

    return {"AP": ap(), "AP50": ap(t=0.5), "AP75": ap(t=0.75), "APs": ap("small"), "APm": ap("medium"),
            "APl": ap("large"), "AR1": ar(md=1), "AR10": ar(md=10), "AR100": ar(), "ARs": ar("small"),
            "ARm": ar("medium"), "ARl": ar("large")}


def random_case(seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    H, W, T = 24, 32, 4
    videos = {vid: (H, W, T) for vid in rng.permutation(np.arange(1, 7)).tolist()}
    objects, preds = [], []

    def blob():
        y0, x0 = rng.integers(0, H - 2), rng.integers(0, W - 2)
        return rect(H, W, y0, y0 + rng.integers(2, H - y0 + 1), x0, x0 + rng.integers(2, W - x0 + 1))

    for vid in videos:
        for _ in range(rng.integers(0, 5)):
            masks = [None if rng.random() < 0.3 else blob() for _ in range(T)]
            if all(m is None for m in masks):
                masks[0] = blob()
            cat = int(rng.integers(1, 4))
            # scale areas so that every range gets objects (the file's areas define video size)
            scale = float(rng.choice([1, 100, 250, 500]))
            objects.append({"video": vid, "cat": cat, "masks": masks, "iscrowd": int(rng.random() < 0.1),
                            "areas": [None if m is None else float(m.sum()) * scale for m in masks]})
            for _ in range(rng.integers(0, 4)):  # noisy copies: shifted, frames dropped or added
                pm = []
                for m in masks:
                    if rng.random() < 0.15:
                        pm.append(None)
                    elif m is None:
                        pm.append(blob() if rng.random() < 0.3 else None)
                    else:
                        pm.append(np.roll(m, tuple(rng.integers(-1, 2, 2)), axis=(0, 1)))
                c = cat if rng.random() < 0.85 else int(rng.integers(1, 4))
                preds.append((vid, c, float(np.round(rng.random(), 1)), pm))
        for _ in range(rng.integers(0, 16)):  # false positives: sometimes more than 10 per video
            preds.append((vid, int(rng.integers(1, 4)), float(np.round(rng.random(), 1)),
                          [blob() if rng.random() < 0.8 else None for _ in range(T)]))
    order = rng.permutation(len(preds))
    return ytvis_gt(videos, objects, ("a", "b", "c")), ytvis_preds([preds[i] for i in order])


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_rederivation_on_random_data(seed: int) -> None:
    gt, preds = random_case(seed)
    ours = evaluate(gt, preds).stats
    ref = naive_video_ap(json.loads(json.dumps(gt)), json.loads(json.dumps(preds)))
    assert set(ours) == set(METRIC_NAMES)
    for k in METRIC_NAMES:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k
