"""DVIS-DAQ behind Beam RunInference's ``ModelHandler`` contract.

RunInference loads the model once per worker process (``load_model`` through Beam's shared
handle) and calls ``run_inference`` with batches of elements. One element is one video
(:class:`VideoRef`), so batches are single videos (``max_batch_size=1``); frames are batched inside
the handler, as they decode (:mod:`pipeline.labeler`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from daq_model.config import DAQConfig
from pipeline.inputs import VideoRef
from pipeline.labeler import LabelSettings, label_video
from pipeline.model_source import ModelSpec, local_checkpoint
from pipeline.tables import Provenance, VideoLabels

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "daq_label"


@dataclass
class LoadedModel:
    """What one worker process holds: the predictor and its config."""

    predictor: Any
    config: DAQConfig
    device: str


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_predictor(spec: ModelSpec, device: str, storage_options: dict[str, Any] | None = None) -> LoadedModel:
    """Build the predictor from the checkpoint (copied locally and checksum-verified first)."""
    from daq_model.predictor import VideoPredictor

    resolved = resolve_device(device)
    path = local_checkpoint(spec.checkpoint, spec.checkpoint_sha256, storage_options)
    predictor = VideoPredictor.from_checkpoint(path, spec.config, device=resolved)
    return LoadedModel(predictor, spec.config, resolved)


class DAQModelHandler(ModelHandler[VideoRef, VideoLabels, LoadedModel]):
    """Loads DVIS-DAQ once per process; labels one video per element."""

    def __init__(self, spec: ModelSpec, provenance: Provenance, settings: LabelSettings,
                 device: str = "auto", torch_threads: int = 0) -> None:
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._spec = spec
        self._provenance = provenance
        self._settings = settings
        self._device = device
        self._torch_threads = torch_threads

    def load_model(self) -> LoadedModel:
        if self._torch_threads > 0:
            import torch

            torch.set_num_threads(self._torch_threads)
        start = time.perf_counter()
        model = load_predictor(self._spec, self._device, self._settings.options)
        logger.info("loaded model %s (%s) on %s in %.1fs", self._spec.model_name,
                    self._spec.checkpoint_sha256[:12], model.device, time.perf_counter() - start)
        return model

    def run_inference(self, batch: Sequence[VideoRef], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        frames = Metrics.counter(METRICS_NAMESPACE, "frames_decoded")
        decode_errors = Metrics.counter(METRICS_NAMESPACE, "decode_errors")
        model_ms = Metrics.distribution(METRICS_NAMESPACE, "model_ms_per_video")
        decode_ms = Metrics.distribution(METRICS_NAMESPACE, "decode_ms_per_video")
        for ref in batch:
            labels = label_video(ref, model.predictor, model.config, self._provenance, self._settings)
            row = labels.video_row
            frames.inc(int(row["frames_decoded"]))
            decode_errors.inc(int(row["decode_errors"]))
            model_ms.update(int(row["model_seconds"] * 1000))
            decode_ms.update(int(row["decode_seconds"] * 1000))
            yield PredictionResult(ref, labels, model_id=self._provenance.key)

    def get_num_bytes(self, batch: Sequence[VideoRef]) -> int:
        return sum(len(ref.url) + len(ref.video_id) for ref in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": 1}
