"""Fuzzing (docs/reliability.md, "Fuzzing"): the seeded generator of damaged videos
(tests/fuzz_videos.py) and the label job over a few hundred of them: exit 0, one row per input,
every row ok / partial / failed with an error_type and a message naming the file, no crash, no
hang; plus the reasons the fuzzer found wanting, checked on files damaged the same way."""

from __future__ import annotations

import collections
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import decode
from pipeline.container_size import declared_size
from pipeline.decode import StreamingDecoder, VideoError, classify_decode
from pipeline.limits import LIMIT_KINDS
from schemas.validate import validate_output
from tests.fuzz_videos import EDGE, KINDS, copy_packets, generate, make_bases, mp4_boxes
from tests.made_videos import make_video

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "reference_case1" / "online"
MODEL = ["--checkpoint", str(CASE / "weights.pt"), "--config", str(CASE / "config.yaml")]
#: error types a damaged file may get (never worker_crashed, timeout or model_error: those are
#: crashes, hangs and bugs that the fuzzer is there to find)
DECODE_KINDS = {decode.EMPTY_FILE, decode.UNREADABLE, decode.NOT_A_VIDEO, decode.NO_VIDEO_STREAM,
                decode.UNSUPPORTED_CODEC, decode.NO_FRAMES, decode.TRUNCATED, decode.CORRUPT, *LIMIT_KINDS}
COUNT, SEED = 200, 0
WALL_LIMIT_S = 420  # the job takes about 1 min alone on 2 cores; a hang would run far past this


def _open_error(path: Path) -> VideoError:
    with pytest.raises(VideoError) as caught:
        with StreamingDecoder(str(path)):
            pass
    return caught.value


def test_generator_is_seeded_and_covers_every_mutation(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", 24, seed=7)
    again = generate(tmp_path / "b", 24, seed=7)
    other = generate(tmp_path / "c", 24, seed=8)
    assert [e["name"] for e in first] == [e["name"] for e in again]
    for entry in first:
        assert (tmp_path / "a" / entry["name"]).read_bytes() == (tmp_path / "b" / entry["name"]).read_bytes()
    assert any((tmp_path / "a" / x["name"]).read_bytes() != (tmp_path / "c" / y["name"]).read_bytes()
               for x, y in zip(first, other))
    assert {e["kind"] for e in first} == set(KINDS)
    listed = (tmp_path / "a" / "videos.txt").read_text().split()
    assert listed == [e["name"] for e in first]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and len(manifest["files"]) == 24
    # every file differs from its base, except the renamed ones
    for entry in first:
        data = (tmp_path / "a" / entry["name"]).read_bytes()
        base = (tmp_path / "a" / "_bases" / entry["base"]).read_bytes()
        assert (data == base) == (entry["kind"] == "wrong_extension"), entry


def test_bases_are_small_and_decode(tmp_path: Path) -> None:
    bases = make_bases(tmp_path)
    assert len(bases) >= 10 and sum(b.stat().st_size for b in bases) < 1_000_000
    for base in bases:
        with StreamingDecoder(str(base), 8) as decoder:
            frames = sum(len(b.frames) for b in decoder.batches())
        assert 1 <= frames <= 8, base


def test_mp4_box_walk_finds_nested_boxes(tmp_path: Path) -> None:
    data = make_video(tmp_path / "v.mp4", frames=4, size=(32, 32), gop=2).read_bytes()
    boxes = mp4_boxes(data)
    kinds = [b.kind for b in boxes]
    assert kinds[0] == b"ftyp" and b"moov" in kinds and b"mdat" in kinds
    assert {b"trak", b"stbl", b"stsz", b"stco"} <= set(kinds)
    top = [b for b in boxes if b.depth == 0]
    assert sum(b.size for b in top) == len(data)


def test_damaged_headers_get_clear_reasons(tmp_path: Path) -> None:
    """What the fuzzer found: FFmpeg's own header errors were 'unreadable' (a storage error to
    retry), a stream without a codec was an AttributeError, a file without streams 'no video
    stream (streams: none)'."""
    hevc = copy_packets(EDGE / "hevc.mkv", tmp_path / "hevc.mkv")
    cut = tmp_path / "hevc_cut.mkv"
    cut.write_bytes(hevc.read_bytes()[:231])  # FFmpeg: EIO inside the Matroska header
    error = _open_error(cut)
    assert error.kind == decode.NOT_A_VIDEO and "damaged or truncated container" in str(error)

    tiny = bytearray(make_video(tmp_path / "tiny.mp4", frames=8, size=(64, 48), gop=4).read_bytes())
    hdlr = next(b for b in mp4_boxes(bytes(tiny)) if b.kind == b"hdlr")
    tiny[hdlr.offset:hdlr.offset + 4] = struct.pack(">I", hdlr.size + 35)  # the codec is lost
    (tmp_path / "nocodec.mp4").write_bytes(tiny)
    error = _open_error(tmp_path / "nocodec.mp4")
    assert error.kind == decode.UNSUPPORTED_CODEC and "no decoder for its codec" in str(error)
    assert "NoneType" not in str(error)

    one = (EDGE / "one_frame.mp4").read_bytes()
    moov = next(b for b in mp4_boxes(one) if b.kind == b"moov")
    (tmp_path / "nostream.mp4").write_bytes(one[:moov.offset + 20])  # moov cut before any track
    error = _open_error(tmp_path / "nostream.mp4")
    assert error.kind == decode.NOT_A_VIDEO and "found no stream" in str(error)


def test_a_webm_cut_inside_its_last_cluster_is_partial(tmp_path: Path) -> None:
    """What the fuzzer found (seed 0, files 0122 and 0162): a WebM cut inside its last cluster
    lost its last frame without a read error and was recorded ok."""
    base = copy_packets(EDGE / "odd_321x183.webm", tmp_path / "odd.webm")
    data = base.read_bytes()
    with open(base, "rb") as whole:
        assert declared_size(whole, len(data)) == len(data)
    cut = tmp_path / "odd_cut.webm"
    cut.write_bytes(data[:11836])
    with StreamingDecoder(str(cut), 4) as decoder:
        frames = sum(len(b.frames) for b in decoder.batches())
    assert decoder.info.declared_bytes == len(data) and decoder.info.file_cut
    status, kind, message = classify_decode(decoder.stats, decoder.info)
    assert (frames, status, kind) == (7, "partial", decode.TRUNCATED), message
    assert f"11836 of the {len(data)} bytes" in message
    with StreamingDecoder(str(base), 4) as decoder:
        assert sum(len(b.frames) for b in decoder.batches()) == 8
    assert classify_decode(decoder.stats, decoder.info)[0] == "ok" and not decoder.info.file_cut
    # MP4: where the last top-level box ends; Matroska: the Segment's end
    mp4 = make_video(tmp_path / "v.mp4", frames=4, size=(32, 32), gop=2).read_bytes()
    assert declared_size(io.BytesIO(mp4), len(mp4)) == len(mp4)
    assert declared_size(io.BytesIO(mp4[:-100]), len(mp4) - 100) == len(mp4)
    assert declared_size(io.BytesIO(b"not a video at all"), 18) is None


def test_frames_decoded_with_concealed_errors_make_the_video_partial(tmp_path: Path) -> None:
    """What the fuzzer found: bit flips inside H.264/HEVC/MPEG-4 data decode without an error,
    the decoder concealing the damage, and were recorded ok (41 of the 133 ok videos at seed 0)."""
    entries = generate(tmp_path, 74, SEED)
    flipped = entries[73]
    assert (flipped["base"], flipped["kind"]) == ("tiny_h264.mp4", "bitflip_middle")
    with StreamingDecoder(str(tmp_path / flipped["name"]), 4) as decoder:
        frames = sum(len(b.frames) for b in decoder.batches())
    status, kind, message = classify_decode(decoder.stats, decoder.info)
    assert frames == 8 and decoder.stats.errors == 0 and decoder.stats.corrupt_frames >= 1
    assert (status, kind) == ("partial", decode.CORRUPT) and "concealed" in message
    with StreamingDecoder(str(tmp_path / "_bases" / "tiny_h264.mp4"), 4) as decoder:
        assert sum(len(b.frames) for b in decoder.batches()) == 8
    assert decoder.stats.corrupt_frames == 0 and classify_decode(decoder.stats, decoder.info)[0] == "ok"


@pytest.mark.slow
def test_label_job_over_fuzzed_videos(tmp_path: Path) -> None:
    corpus = tmp_path / "fuzz"
    entries = generate(corpus, COUNT, SEED)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jobs.cli", "label", str(corpus / "videos.txt"), str(out), *MODEL,
               "--workers", "2", "--torch-threads", "1", "--video-timeout", "120",
               "--video-timeout-per-second", "10"]
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=WALL_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"the job over {COUNT} fuzzed videos did not finish within {WALL_LIMIT_S}s (a hang)")
    wall = time.monotonic() - start
    assert process.returncode == 0, stderr[-4000:]
    assert f"{COUNT} video(s) labelled" in stdout, stdout

    rows = pq.read_table(out / "videos").to_pylist()
    names = sorted(Path(r["source_url"]).name for r in rows)
    assert names == sorted(e["name"] for e in entries)  # every input once: none missing
    for row in rows:
        name = Path(row["source_url"]).name
        assert row["status"] in ("ok", "partial", "failed"), row
        if row["status"] == "ok":
            assert row["error_type"] is None and row["frames_decoded"] > 0, row
            continue
        assert row["error_type"] in DECODE_KINDS, (name, row["error_type"], row["error_message"])
        message = row["error_message"] or ""
        assert name in message and "NoneType" not in message, (name, message)
        if row["status"] == "partial":
            assert row["frames_decoded"] > 0, row
    assert validate_output(str(out)).ok
    figures = {
        "count": COUNT, "seed": SEED, "wall_s": round(wall, 1),
        "status": dict(sorted(collections.Counter(r["status"] for r in rows).items())),
        "error_type": dict(sorted(collections.Counter(r["error_type"] for r in rows if r["error_type"]).items())),
        "by_mutation": {kind: dict(sorted(collections.Counter(
            r["status"] for r in rows if f"_{kind}" in Path(r["source_url"]).stem).items())) for kind in KINDS},
    }
    print("fuzz figures:", json.dumps(figures))
