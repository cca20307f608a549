"""Seeded generator of damaged videos for the fuzz test (docs/reliability.md, "Fuzzing").

``python -m tests.fuzz_videos OUT_DIR --count N --seed S`` writes N mutated copies of small base
clips, plus ``manifest.json`` (what was done to each file, so any one can be made again) and
``videos.txt`` (a URL list of them, the label job's INPUT).

Base clips (made first, in ``OUT_DIR/_bases``, kept small so that hundreds of them label in
minutes): the first :data:`BASE_FRAMES` packets of the sample clips and edge-case videos copied
into their own container formats (MP4 with the index at the end and at the start, Matroska,
WebM with an audio track, AV1, HEVC, a rotated MP4, a one-frame MP4), and two tiny videos encoded
here (MPEG-4 in AVI, H.264 in MP4).

Mutations (one per file, in turn, each drawn from its own ``random.Random(f"{seed}:{index}")``):

* ``bitflip_header``: 1-16 bit flips in the first 4 KiB, or inside the MP4 ``moov`` box;
* ``bitflip_middle``: 1-16 bit flips in the middle third of the file;
* ``truncate``: the file cut at a uniformly random offset;
* ``box_size``: an MP4 box's size field (any depth: ``moov``, ``trak``, ``stsz``, ``stco``, ...)
  set to 0, 1, 7, its size +- a few bytes, past the end or 0xFFFFFFFF;
* ``box_swap``: two sibling MP4 boxes swapped (e.g. ``moov`` and ``mdat``, ``stsz`` and ``stco``);
* ``zero_range``: a random range zeroed (16 bytes up to a quarter of the file);
* ``wrong_extension``: the file unchanged under another extension (or none);
* ``double``: two of the above at once, under a wrong extension half of the time.

Files are named ``NNNN_<base>_<mutation>.<ext>``.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av

from tests.made_videos import make_video

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "videos"
EDGE = ROOT / "tests" / "data" / "videos_edge"
BASE_FRAMES = 8
MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex",
                  b"moof", b"traf"}
EXTENSIONS = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4a", ".ts", ".jpg", ".txt", ""]


# ---------------------------------------------------------------------------- base clips


def copy_packets(source: Path, target: Path, frames: int = BASE_FRAMES, fmt: str | None = None,
                 options: dict[str, str] | None = None) -> Path:
    """The first ``frames`` video packets of ``source`` (and the audio packets among them) copied
    into ``target`` without re-encoding (bit-exact muxing: no random ids, so bases repeat)."""
    with av.open(str(source)) as src, av.open(str(target), "w", format=fmt,
                                                     options={"fflags": "+bitexact", **(options or {})}) as dst:
        video = src.streams.video[0]
        streams = [video] + list(src.streams.audio[:1])
        outs = {s.index: dst.add_stream_from_template(s, opaque=True) for s in streams}
        muxed = 0
        for packet in src.demux(streams):
            if packet.size == 0:  # the flush packet at the end
                continue
            if packet.stream.index == video.index:
                if muxed == frames:
                    break
                muxed += 1
            packet.stream = outs[packet.stream.index]
            dst.mux(packet)
    return target


def make_bases(folder: Path) -> list[Path]:
    """The base clips (see the module docstring), made in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = [
        copy_packets(SAMPLES / "01_dog.mp4", folder / "dog.mp4"),
        copy_packets(SAMPLES / "02_cups.mp4", folder / "cups_faststart.mp4",
                     options={"movflags": "faststart"}),
        copy_packets(SAMPLES / "05_default_juggle.mp4", folder / "juggle.mkv", fmt="matroska"),
        copy_packets(EDGE / "av1.mp4", folder / "av1.mp4"),
        copy_packets(EDGE / "hevc.mkv", folder / "hevc.mkv"),
        copy_packets(EDGE / "odd_321x183.webm", folder / "odd.webm"),
        copy_packets(EDGE / "vp9_opus.webm", folder / "vp9_opus.webm"),
        copy_packets(EDGE / "rotated_90.mp4", folder / "rotated.mp4"),
        make_video(folder / "tiny_mpeg4.avi", frames=BASE_FRAMES, size=(64, 48), gop=4,
                   codec="mpeg4", fmt="avi"),
        make_video(folder / "tiny_h264.mp4", frames=BASE_FRAMES, size=(64, 48), gop=4),
    ]
    one = folder / "one_frame.mp4"
    one.write_bytes((EDGE / "one_frame.mp4").read_bytes())
    return bases + [one]


# ---------------------------------------------------------------------------- MP4 boxes


@dataclass(frozen=True)
class Box:
    offset: int  # of the size field
    size: int
    kind: bytes
    depth: int
    parent: int  # offset of the enclosing box, -1 at the top level


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0,
              parent: int = -1) -> list[Box]:
    """Every box of an ISO BMFF file (recursing into the usual container boxes); stops at the
    first box that does not parse."""
    end = len(data) if end is None else end
    boxes: list[Box] = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end or not kind.isalnum():
            break
        boxes.append(Box(pos, size, kind, depth, parent))
        if kind in MP4_CONTAINERS:
            boxes.extend(mp4_boxes(data, pos + header, pos + size, depth + 1, pos))
        pos += size
    return boxes


def is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


# ---------------------------------------------------------------------------- mutations


def _flip(data: bytearray, rng: random.Random, lo: int, hi: int) -> dict:
    hi = max(lo + 1, min(hi, len(data)))
    positions = sorted(rng.randrange(lo, hi) for _ in range(rng.randint(1, 16)))
    for pos in positions:
        data[pos] ^= 1 << rng.randrange(8)
    return {"offsets": positions}


def bitflip_header(data: bytearray, rng: random.Random) -> dict:
    moov = [b for b in mp4_boxes(bytes(data)) if b.kind == b"moov"] if is_mp4(data) else []
    if moov and rng.random() < 0.5:
        return {"where": "moov", **_flip(data, rng, moov[0].offset, moov[0].offset + moov[0].size)}
    return {"where": "start", **_flip(data, rng, 0, 4096)}


def bitflip_middle(data: bytearray, rng: random.Random) -> dict:
    third = len(data) // 3
    return _flip(data, rng, third, 2 * third)


def truncate(data: bytearray, rng: random.Random) -> dict:
    keep = rng.randrange(1, len(data))
    del data[keep:]
    return {"kept_bytes": keep}


def box_size(data: bytearray, rng: random.Random) -> dict:
    boxes = mp4_boxes(bytes(data)) if is_mp4(data) else []
    if not boxes:
        return {"fallback": "zero_range", **zero_range(data, rng)}
    box = rng.choice(boxes)
    choices = [0, 1, 7, box.size + rng.randint(1, 64), max(0, box.size - rng.randint(1, 64)),
               len(data) + rng.randint(1, 1 << 20), 0xFFFFFFFF]
    value = rng.choice(choices) & 0xFFFFFFFF
    data[box.offset:box.offset + 4] = struct.pack(">I", value)
    return {"box": box.kind.decode(), "offset": box.offset, "old_size": box.size, "new_size": value}


def box_swap(data: bytearray, rng: random.Random) -> dict:
    boxes = mp4_boxes(bytes(data)) if is_mp4(data) else []
    groups: dict[int, list[Box]] = {}
    for box in boxes:
        groups.setdefault(box.parent, []).append(box)
    pairs = [g for g in groups.values() if len(g) >= 2]
    if not pairs:
        return {"fallback": "bitflip_middle", **bitflip_middle(data, rng)}
    first, second = sorted(rng.sample(rng.choice(pairs), 2), key=lambda b: b.offset)
    a = bytes(data[first.offset:first.offset + first.size])
    between = bytes(data[first.offset + first.size:second.offset])
    b = bytes(data[second.offset:second.offset + second.size])
    data[first.offset:second.offset + second.size] = b + between + a
    return {"swapped": [first.kind.decode(), second.kind.decode()], "offsets": [first.offset, second.offset]}


def zero_range(data: bytearray, rng: random.Random) -> dict:
    length = rng.randint(16, max(16, len(data) // 4))
    start = rng.randrange(0, max(1, len(data) - length))
    data[start:start + length] = bytes(min(length, len(data) - start))
    return {"start": start, "length": length}


MUTATIONS: dict[str, Callable[[bytearray, random.Random], dict]] = {
    "bitflip_header": bitflip_header,
    "bitflip_middle": bitflip_middle,
    "truncate": truncate,
    "box_size": box_size,
    "box_swap": box_swap,
    "zero_range": zero_range,
}
KINDS = [*MUTATIONS, "wrong_extension", "double"]


def _wrong_extension(path: Path, rng: random.Random) -> str:
    return rng.choice([e for e in EXTENSIONS if e != path.suffix])


def mutate(base: Path, kind: str, rng: random.Random) -> tuple[bytes, str, list[dict]]:
    """(bytes, extension, what was done) of one mutated copy of ``base``."""
    data = bytearray(base.read_bytes())
    ext = base.suffix
    done: list[dict] = []
    if kind == "wrong_extension":
        ext = _wrong_extension(base, rng)
    elif kind == "double":
        for name in rng.sample(sorted(MUTATIONS), 2):
            done.append({"mutation": name, **MUTATIONS[name](data, rng)})
        if rng.random() < 0.5:
            ext = _wrong_extension(base, rng)
    else:
        done.append({"mutation": kind, **MUTATIONS[kind](data, rng)})
    return bytes(data), ext, done


def generate(out_dir: Path, count: int, seed: int) -> list[dict]:
    """Write ``count`` mutated files, ``manifest.json`` and ``videos.txt`` into ``out_dir``;
    returns the manifest entries."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bases = make_bases(out_dir / "_bases")
    entries = []
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        kind = KINDS[index % len(KINDS)]
        base = bases[rng.randrange(len(bases))]
        data, ext, done = mutate(base, kind, rng)
        name = f"{index:04d}_{base.stem}_{kind}{ext}"
        (out_dir / name).write_bytes(data)
        entries.append({"name": name, "base": base.name, "kind": kind, "bytes": len(data), "steps": done})
    (out_dir / "manifest.json").write_text(json.dumps(
        {"seed": seed, "count": count, "bases": [b.name for b in bases], "files": entries}, indent=1))
    (out_dir / "videos.txt").write_text("".join(f"{e['name']}\n" for e in entries))
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_videos", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--count", type=int, default=200, help="mutated files to write (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default: 0)")
    args = parser.parse_args(argv)
    entries = generate(args.out_dir, args.count, args.seed)
    print(f"wrote {len(entries)} mutated videos and {args.out_dir / 'videos.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Box", "KINDS", "MUTATIONS", "generate", "make_bases", "mp4_boxes", "mutate"]
