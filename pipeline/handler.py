"""DVIS-DAQ behind Beam RunInference's ``ModelHandler`` contract.

RunInference loads the model once per worker process (``load_model`` through Beam's shared
handle) and calls ``run_inference`` with batches of elements. One element is one video
(:class:`VideoRef`), so batches are single videos (``max_batch_size=1``); frames are batched inside
the handler, as they decode (:mod:`pipeline.labeler`).

With isolation on (the default, :mod:`pipeline.isolation`) the model lives in a child process of
the worker, which decodes and labels each video; a crash or a hang there fails that video only
(``worker_crashed``, ``timeout``) and the child is started again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Iterable, Optional, Sequence

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.cpu_time import CpuClock
from pipeline.inputs import VideoRef
from pipeline.isolation import (  # noqa: F401 - load_predictor, resolve_device: re-exported
    FAULT_ENV,
    IsolatedLabeler,
    IsolationSettings,
    LoadedModel,
    ObservedPredictor,
    load_predictor,
    parse_faults,
    resolve_device,
)
from pipeline.labeler import LabelSettings, failed_labels, label_video
from pipeline.model_source import ModelSpec
from pipeline.tables import Provenance, VideoLabels
from pipeline.claims import REPEATED_WORKER_CRASH, VideoClaims

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "daq_label"


class DAQModelHandler(ModelHandler[VideoRef, VideoLabels, LoadedModel]):
    """Loads DVIS-DAQ once per process; labels one video per element."""

    def __init__(self, spec: ModelSpec, provenance: Provenance, settings: LabelSettings,
                 device: str = "auto", torch_threads: int = 0,
                 isolation: IsolationSettings | None = None, claims: VideoClaims | None = None) -> None:
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._claims = claims  # attempt markers around each video's labelling (quarantine)
        self._isolation = isolation or IsolationSettings()
        self._spec = spec
        self._provenance = provenance
        self._settings = settings
        self._device = device
        self._torch_threads = torch_threads

    def load_model(self) -> LoadedModel | IsolatedLabeler:
        if self._isolation.enabled:
            return IsolatedLabeler(self._spec, self._provenance, self._settings, self._device,
                                   self._torch_threads, self._isolation).start()
        if self._torch_threads > 0:
            import torch

            torch.set_num_threads(self._torch_threads)
        start = time.perf_counter()
        model = load_predictor(self._spec, self._device, self._settings.options)
        model.faults = parse_faults(os.environ.get(FAULT_ENV))
        logger.info("loaded model %s (%s) on %s in %.1fs", self._spec.model_name,
                    self._spec.checkpoint_sha256[:12], model.device, time.perf_counter() - start)
        return model

    def label(self, ref: VideoRef, model: LoadedModel | IsolatedLabeler) -> VideoLabels:
        """One video, in the model's child process (isolation) or in this process."""
        if isinstance(model, IsolatedLabeler):
            return model.label(ref)
        predictor = ObservedPredictor(model.predictor, ref.url, model.faults) if model.faults else model.predictor
        return label_video(ref, predictor, model.config, self._provenance, self._settings)

    def run_inference(self, batch: Sequence[VideoRef], model: LoadedModel | IsolatedLabeler,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        frames = Metrics.counter(METRICS_NAMESPACE, "frames_decoded")
        decode_errors = Metrics.counter(METRICS_NAMESPACE, "decode_errors")
        model_ms = Metrics.distribution(METRICS_NAMESPACE, "model_ms_per_video")
        decode_ms = Metrics.distribution(METRICS_NAMESPACE, "decode_ms_per_video")
        for ref in batch:
            isolated = isinstance(model, IsolatedLabeler)
            clock = CpuClock.start(model.pid if isolated else None)  # type: ignore[union-attr]
            if ref.quarantined is not None:  # it kept killing its worker: never run again
                yield PredictionResult(ref, failed_labels(ref, self._provenance, REPEATED_WORKER_CRASH,
                                                          ref.quarantined), model_id=self._provenance.key)
                continue
            attempt = self._claims.record_attempt(ref.video_id) if self._claims is not None else None
            labels = self.label(ref, model)
            if attempt is not None:
                self._claims.end_attempt(attempt)
            cpu = clock.seconds(model.pid if isolated else None)  # type: ignore[union-attr]
            if cpu is not None:  # decode + model + masks of this video (pipeline/cpu_time.py)
                labels = dataclasses.replace(labels, cpu_seconds=round(cpu, 3))
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
