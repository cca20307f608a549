"""Video AP of a checkpoint's segmenter with MinVIS association instead of the tracker (issue #5).

A parameter-free baseline between the real tracker and the perfect association of
``oracle_association.py``: every frame of the first ``--videos`` videos goes through the segmenter
alone, and the segmenter queries are linked from frame to frame by Hungarian matching on 1 - cosine
of their embeddings (``daq_model.offline.MinVISLinker``, the link the official offline model uses
to fill up the refiner's candidates). Each linked sequence takes its query's mask in every frame
and the mean of its logits as video logits; the VIS post-processing (top ``max_num`` (sequence,
class) pairs) and video AP follow as for real predictions. Where the trained tracker scores below
this, it has learned nothing about identity beyond embedding similarity.

    .venv/bin/python research/minvis_baseline.py runs/data/synth_dev_ad --videos 50 \\
        [--checkpoint CKPT (default: the shipped model)] [--config PRESET|YAML] [--out PRED.json]

``--out`` writes the predictions (e.g. for ``merge_track_fragments.py`` and ``daq-label evaluate``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daq_eval.ytvis_format import Dataset, Prediction  # noqa: E402
from daq_model.offline import MinVISLink, MinVISLinker  # noqa: E402
from research.oracle_association import (add_top_predictions, prepare, report,  # noqa: E402
                                        script_arguments, segment_frame)


def linked_masks(frame_masks: np.ndarray, link: MinVISLink, sequence: int) -> np.ndarray:
    """``(T, H, W)``: in each frame, the mask of the query that linked sequence ``sequence`` holds
    (``frame_masks``: ``(T, Q, H, W)``)."""
    perm = link.perm.numpy()  # (T, Q): frame t's query of linked sequence j
    return frame_masks[np.arange(len(perm)), perm[:, sequence]]


def minvis_predictions(checkpoint: str, root: Path, videos: int, config: str | None = None
                       ) -> tuple[Dataset, list[Prediction]]:
    """The first ``videos`` videos of ``root`` and the MinVIS-linked segmenter's predictions."""
    cfg, model, _, cats, subset = prepare(checkpoint, config, root, videos)
    preds: list[Prediction] = []
    for video in subset.videos:
        linker = MinVISLinker()
        frame_masks = []
        for name in video.file_names:
            frame = np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB"))
            out, masks = segment_frame(model, frame)
            frame_masks.append(masks)
            linker.add(out.pred_embds[0], out.pred_logits[0])
        link = linker.link()
        stacked = np.stack(frame_masks)  # (T, Q, H, W)
        add_top_predictions(preds, video.id, link.mean_logits, lambda i: linked_masks(stacked, link, i),
                            cfg.test.max_num, cats)
    return subset, preds


def main() -> int:
    args = script_arguments(__doc__, "also write the predictions file").parse_args()
    torch.set_num_threads(args.threads)
    report(*minvis_predictions(args.checkpoint, args.data, args.videos, args.config), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
