"""The measured ablation table of docs/research.md is what the committed metric files say, and its row (c)
is the shipped model's card (so neither can drift from the other without a test failing)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from pipeline.model_source import PRETRAINED_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "ablation_v4"
EMERGING = "emerging_positive_weight"


def _ablation_table_module():
    spec = importlib.util.spec_from_file_location("ablation_table", ROOT / "research" / "ablation_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_readme_quotes(lines: list[str], what: str) -> None:
    readme = (ROOT / "docs" / "research.md").read_text().splitlines()
    for line in lines:
        assert line in readme, f"docs/research.md lacks the {what} line: {line}"


def test_readme_ablation_table_is_the_committed_metrics() -> None:
    lines = _ablation_table_module().table(RESULTS)
    assert len(lines) == 2 + 6, "three variants x two modes"
    _assert_readme_quotes(lines, "table")


def test_ablation_row_c_is_the_shipped_model() -> None:
    cards = sorted(PRETRAINED_DIR.glob("*.json"))
    assert len(cards) == 1, cards
    card = _metrics(cards[0])
    for mode in ("online", "offline"):
        for objects, key in (("all", f"heldout_{mode}"), ("appear-disappear", f"heldout_{mode}_appear_disappear")):
            measured = _metrics(RESULTS / "c" / "eval" / f"{mode}_{objects}.json")
            official = card["metrics_official_postprocessing"][key]  # the ablation runs do not merge
            assert round(100 * measured["AP"], 2) == official["AP"], (mode, objects)


def test_readme_seed_table_is_the_committed_metrics() -> None:
    lines = _ablation_table_module().seed_table(RESULTS)
    assert len(lines) == 2 + 3, "three variants"
    _assert_readme_quotes(lines, "seed table")


def test_every_variant_has_complete_second_and_third_seeds() -> None:
    for seed in (43, 44):
        lines = _ablation_table_module().table(RESULTS, seed=seed)
        assert len(lines) == 2 + 6, f"three variants x two modes at seed {seed}"


def test_seed_table_means_over_seed_directories(tmp_path: Path) -> None:
    module = _ablation_table_module()
    for name, ap in (("a", 0.2), ("a_seed43", 0.3), ("a_seed7", 0.1), ("c_seed44", 0.5), ("c_seedx", 0.9)):
        eval_dir = tmp_path / name / "eval"
        eval_dir.mkdir(parents=True)
        for mode in module.MODES:
            for objects in ("all", "appear-disappear"):
                (eval_dir / f"{mode}_{objects}.json").write_text(json.dumps({"AP": ap}))
    (tmp_path / "b" / "eval").mkdir(parents=True)  # incomplete run: left out
    lines = module.seed_table(tmp_path)
    assert lines[2] == ("| (a) referring tracker, DVIS-style anchors | 7, 42, 43 | 20.0 (10.0, 20.0, 30.0) "
                        "| 20.0 (10.0, 20.0, 30.0) | 20.0 (10.0, 20.0, 30.0) | 20.0 (10.0, 20.0, 30.0) |")
    assert lines[3].startswith("| (c) + DAQ + EDS | 44 | 50.0 (50.0) |")
    assert len(lines) == 4


def _results_readme(name: str) -> str:
    """``docs/results/<name>/README.md`` with its whitespace collapsed (quotes may wrap lines)."""
    return " ".join((ROOT / "docs" / "results" / name / "README.md").read_text().split())


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def test_longer_segmenter_experiment_quotes_its_metric_files() -> None:
    folder = ROOT / "docs" / "results" / "segmenter_5000_more"
    text = _results_readme("segmenter_5000_more")
    for mode in ("online", "offline"):
        for objects in ("all", "appear-disappear"):
            ap = _metrics(folder / "eval" / f"{mode}_{objects}.json")["AP"]
            assert f"{100 * ap:.1f}" in text, (mode, objects)
    dev_all = _metrics(folder / "dev" / "online_all.json")["AP"]
    dev_ad = _metrics(folder / "dev" / "online_appear-disappear.json")["AP"]
    assert f"scored {100 * dev_all:.2f}" in text and f"disappear: {100 * dev_ad:.1f}" in text


def test_emerging_weight_experiment_quotes_its_metric_files() -> None:
    folder = ROOT / "docs" / "results" / EMERGING
    text = _results_readme(EMERGING)
    for run in ("dev", "dev_shipped"):
        for objects in ("all", "appear-disappear"):
            metrics = _metrics(folder / run / f"online_{objects}.json")
            assert f"| {100 * metrics['AP']:.2f} |" in text, (run, objects)
        ap50 = _metrics(folder / run / "online_all.json")["AP50"]
        assert f"| {100 * ap50:.1f} |" in text, run
        tracking = _metrics(folder / run / "online_appear-disappear.json")["tracking"]
        new = tracking["pickup_new_objects"]
        assert (f"| {new['never_picked_up']} / {new['objects']} | {new['mean_latency_frames']:.2f} "
                f"| {tracking['id_switches']} |") in text, run
    for run, tracks_per_frame in (("dev", ("19.7", "20.8")), ("dev_shipped", ("10.7", "11.7"))):
        coverage = (folder / run / "coverage.txt").read_text()
        assert all(f"tracks per frame {t}" in coverage for t in tracks_per_frame), run


def test_emerging_weight_inference_rules_table_is_its_metric_files() -> None:
    folder = ROOT / "docs" / "results" / EMERGING
    text = _results_readme(EMERGING)
    runs = sorted(p.name[: -len("_all.json")] for p in (folder / "dev_inference").glob("*_all.json"))
    assert len(runs) == 4, runs
    for run in runs:
        everything = _metrics(folder / "dev_inference" / f"{run}_all.json")
        ad = _metrics(folder / "dev_inference" / f"{run}_appear-disappear.json")
        new = ad["tracking"]["pickup_new_objects"]
        row = (f"| {100 * everything['AP']:.2f} | {100 * everything['AP50']:.1f} | {100 * ad['AP']:.2f} "
               f"| {new['never_picked_up']} / {new['objects']} | {ad['tracking']['id_switches']} |")
        assert row in text, (run, row)


def test_emerging_weight_heldout_check_quotes_its_metric_files() -> None:
    folder = ROOT / "docs" / "results" / EMERGING
    text = _results_readme(EMERGING)
    files = {p.name: _metrics(p) for p in (folder / "heldout_inference").glob("*.json")}
    assert len(files) == 2, sorted(files)
    everything = next(v for k, v in files.items() if k.endswith("_all.json"))
    ad = next(v for k, v in files.items() if k.endswith("_appear-disappear.json"))
    new = ad["tracking"]["pickup_new_objects"]
    assert f"AP {100 * everything['AP']:.2f} against" in text
    assert f"a/d {100 * ad['AP']:.2f} against" in text
    assert f"{new['never_picked_up']} of {new['objects']} late objects never picked up" in text
    assert f"{ad['tracking']['id_switches']} ID switches on a/d objects" in text


def test_fragment_merge_table_is_the_card_and_the_metric_files() -> None:
    cards = sorted(PRETRAINED_DIR.glob("*.json"))
    card = _metrics(cards[0])
    readme = _results_readme("fragment_merge")
    for mode in ("online", "offline"):
        for objects, key, label in (("all", f"heldout_{mode}", "all 365"),
                                    ("appear-disappear", f"heldout_{mode}_appear_disappear", "301 appear/disappear")):
            measured = _metrics(ROOT / "docs" / "results" / "fragment_merge" / "heldout" / f"{mode}_{objects}.json")
            merged = card["metrics"][key]
            assert round(100 * measured["AP"], 2) == merged["AP"], (mode, objects)
            official = card["metrics_official_postprocessing"][key]["AP"]
            assert f"| {mode} | {label} | **on** | **{merged['AP']:.2f}** |" in readme, (mode, objects)
            assert f"| {mode} | {label} | off (official) | {official:.2f} |" in readme, (mode, objects)


def test_fragment_merge_other_runs_table_is_the_metric_files() -> None:
    results = ROOT / "docs" / "results"
    readme = _results_readme("fragment_merge")
    runs = [("segmenter_5000_more/eval", "v5")] + [(f"ablation_v4/{v}_seed{s}/eval", f"{v}_seed{s}")
                                                  for v in "abc" for s in (43, 44) if (v, s) != ("c", 43)]
    for official, merged in runs:
        cells = []
        for mode in ("online", "offline"):
            for objects in ("all", "appear-disappear"):
                off = _metrics(results / official / f"{mode}_{objects}.json")["AP"] * 100
                on = _metrics(results / "fragment_merge" / "other_runs" / merged / f"{mode}_merged_{objects}.json")["AP"] * 100
                cells.append(f"{off:.1f} → {on:.1f}")
        assert " | ".join(cells) + " |" in readme, merged


def _missed_counts(path: Path) -> dict[str, tuple[int, ...]]:
    """missed_objects.py output -> {kind: (count, segmenter, tracker)}, "all missed": (count,
    beyond the segmenter) and "hops": (hops in all,)."""
    text = path.read_text()
    counts = {"all missed": (int(re.search(r"(\d+) missed", text).group(1)),
                             int(re.search(r"(\d+) are beyond it", text).group(1))),
              "hops": (int(re.search(r"then another\): (\d+)", text).group(1)),)}
    for kind, n, seg, trk in re.findall(r"^(\w[\w ]*?) +(\d+)  median .*segmenter (\d+), tracker (\d+)",
                                        text, re.M):
        counts[kind] = (int(n), int(seg), int(trk))
    return counts


def test_missed_objects_tables_are_the_committed_outputs() -> None:
    folder = ROOT / "docs" / "results" / "missed_objects"
    text = _results_readme("missed_objects")
    merged = _missed_counts(folder / "shipped_merged_missed.txt")
    official = _missed_counts(folder / "shipped_official_missed.txt")
    assert f"| **{merged['all missed'][0]}** | **{merged['all missed'][1]}** | **{official['all missed'][0]}** |" in text
    for kind in ("never covered", "split", "hop", "partial", "extra frames"):
        assert f"| {merged[kind][0]} | {merged[kind][1]} | {official[kind][0]} |" in text, kind
    assert "71 hops" in text and merged["hops"] == (71,) and official["hops"] == (128,)
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        ap = [100 * _metrics(run / f"online_{post}_{objects}.json")["AP"]
              for post in ("official", "merged") for objects in ("all", "appear-disappear")]
        missed = _missed_counts(run / "missed_merged.txt")
        assert (" | ".join(f"{v:.2f}" for v in ap) + f" | {missed['all missed'][0]} | {missed['hop'][0]} | "
                f"{missed['hops'][0]} |" in text), run.name


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours} h " if hours else "") + f"{minutes} min {secs} s"


def test_retraining_time_quotes_its_measured_run() -> None:
    folder = ROOT / "docs" / "results" / "retraining_time" / "stop21"
    text = _results_readme("retraining_time")
    wall = dict(line.split("=") for line in (folder / "wall_seconds.txt").read_text().split())
    assert list(wall) == ["segmenter", "tracker", "refiner", "total"]
    seconds = {stage: int(value) for stage, value in wall.items()}
    assert seconds["total"] >= seconds["segmenter"] + seconds["tracker"] + seconds["refiner"]
    for stage, secs in seconds.items():
        assert f"{secs:,} s = {_duration(secs)}" in text, stage
    for mode in ("online", "offline"):
        for objects in ("all", "appear-disappear"):
            ap = _metrics(folder / "eval" / f"{mode}_{objects}.json")["AP"]
            assert f"| {mode} | {objects} | {100 * ap:.1f} |" in text, (mode, objects)


def test_association_baseline_tables_are_the_metric_files() -> None:
    folder = ROOT / "docs" / "results" / "association_baseline"
    text = _results_readme("association_baseline")

    def ap(path: Path) -> str:
        return f"{100 * _metrics(path)['AP']:.1f}"

    for post, label in (("minvis", "MinVIS, official post-processing"), ("minvis_merged", "MinVIS, merged")):
        cells = [ap(folder / split / f"{post}_{objects}.json")
                 for split in ("dev", "heldout") for objects in ("all", "appear-disappear")]
        assert f"| {label} | {' | '.join(cells)} |" in text, label
    for split, column in (("dev", 0), ("heldout", 1)):
        rows = [json.loads(line) for line in (folder / split / "mask_resolution_ceiling.txt").read_text().splitlines()]
        assert [r["test_short_edge"] for r in rows] == [128, 192, 256]
        for r in rows:
            assert f"{100 * r['perfect_model_AP']:.1f}" in text and f"{r['mean_video_iou']:.3f}" in text, (split, r)
    seg = folder / "contrastive_segmenter"
    plain = f"| + 3,000 iterations | {ap(seg / 'plain_minvis_dev.json')} | {ap(seg / 'plain_oracle_dev.json')} |"
    contrastive = (f"| + 3,000 iterations with the contrastive loss | **{ap(seg / 'contrastive_minvis_dev.json')}** "
                   f"| {ap(seg / 'contrastive_oracle_dev.json')} |")
    assert plain in text and contrastive in text
    tracked = [f"{100 * _metrics(seg / f'tracker_dev_online_{post}_{objects}.json')['AP']:.2f}"
               for post in ("official", "merged") for objects in ("all", "appear-disappear")]
    assert f"| contrastive segmenter + tracker | {' | '.join(tracked)} |" in text
