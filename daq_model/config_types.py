"""The frozen dataclasses that describe one DVIS-DAQ model (:class:`DAQConfig` and its parts).

This module imports nothing else of ``daq_model`` but :mod:`daq_model.config_tree`, so the preset
table (:mod:`daq_model.presets`) and the official yaml loader (:mod:`daq_model.official_config`)
can build configs without importing :mod:`daq_model.config`, the public entry point that
re-exports all three and adds :func:`~daq_model.config.load_config`.

A :class:`DAQConfig` fully describes one model (architecture, inference thresholds, input
pre-processing, loss weights). Configs are immutable; derive variants with
:meth:`DAQConfig.with_overrides`. Field names follow the official config keys (lower-cased) so a
reader can map them one to one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from daq_model.config_tree import from_plain, to_plain, with_dotted_overrides


ONLINE = "DVIS_DAQ_online"
OFFLINE = "DVIS_DAQ_offline"

IMPLEMENTED_BACKBONES = ("resnet",)
TRACKER_MODES = ("daq", "referring")


class BackboneNotImplementedError(NotImplementedError):
    """Raised for configs whose backbone (Swin-L, ViT-Adapter-L) daq_model does not implement."""


@dataclass(frozen=True)
class BackboneConfig:
    """detectron2 ResNet (``MODEL.RESNETS``); ``name`` is resnet | swin | vit_adapter."""

    name: str = "resnet"
    depth: int = 50
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    width_per_group: int = 64
    num_groups: int = 1
    stride_in_1x1: bool = False
    norm: str = "FrozenBN"
    res5_dilation: int = 1


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Mask2Former ``MSDeformAttnPixelDecoder`` (``MODEL.SEM_SEG_HEAD``)."""

    conv_dim: int = 256
    mask_dim: int = 256
    norm: str = "GN"
    transformer_enc_layers: int = 6
    transformer_in_features: tuple[str, ...] = ("res3", "res4", "res5")
    common_stride: int = 4
    enc_dim_feedforward: int = 1024  # hard-coded in the official pixel decoder
    enc_nheads: int = 8
    enc_n_points: int = 4


@dataclass(frozen=True)
class SegmenterConfig:
    """The per-frame Mask2Former decoder (``MODEL.MASK_FORMER`` + ``NUM_CLASSES``)."""

    num_classes: int = 40
    num_queries: int = 100
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 10  # official convention: number of transformer layers + 1
    pre_norm: bool = False
    enforce_input_proj: bool = False
    reid_hidden_dim: int = 256
    num_reid_head_layers: int = 3
    size_divisibility: int = 32

    @property
    def num_transformer_layers(self) -> int:
        return self.dec_layers - 1


@dataclass(frozen=True)
class TrackerConfig:
    """The DAQ tracker (``MODEL.TRACKER`` and ``MODEL.VIDEO_HEAD``).

    ``kick_out_frame_num`` and ``anchor_history`` are constructor constants in the official code
    (8 and 10), not config keys; they are exposed here with the official values as defaults.
    ``mode``: ``daq`` (the DVIS-DAQ tracker, default) or ``referring`` (the ablation baseline: Q
    fixed track slots with Hungarian-matched segmenter anchors, same parameters; see
    ``daq_model/README.md``, "Referring-tracker mode"). Not an official key.
    ``emerging_nms_iou`` (not official; 0 = off, the official behaviour, which has no NMS): an
    emerging candidate whose mask has IoU above this with a valid track of the frame, or with a
    higher-scoring candidate already started, does not start a track (DAQ mode only; see
    :meth:`daq_model.tracking.VideoTracker.validity`). ``emerging_select_threshold`` (not
    official; None = ``inference_select_threshold`` for emerging rows too, the official rule): the
    foreground score an emerging candidate needs to start a track. ``track_nms_iou`` (not
    official; 0 = off): in every frame, a row that would be valid is judged absent where its mask
    has IoU above this with a row kept before it (carried tracks first, then new candidates, each
    by foreground score; in frame 0 the segmenter's candidates by score), so duplicate tracks of
    one object are not started in frame 0 and a carried duplicate is kicked out after
    ``kick_out_frame_num`` frames (DAQ mode only).
    """

    decoder_layers: int = 6
    num_new_ins: int = 100
    num_slots: int = 5
    training_select_threshold: float = 0.02
    inference_select_threshold: float = 0.01
    aux_inference_select_threshold: float = 0.01
    dis_fg_threshold: float = 0.01
    ovis_infer: bool = False
    noise_frame_num: int = 5
    kick_out_frame_num: int = 8
    anchor_history: int = 10
    mode: str = "daq"
    emerging_nms_iou: float = 0.0
    emerging_select_threshold: float | None = None
    track_nms_iou: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in TRACKER_MODES:
            raise ValueError(f"tracker.mode must be one of {TRACKER_MODES}, got {self.mode!r}")
        if not 0.0 <= self.emerging_nms_iou <= 1.0:
            raise ValueError(f"tracker.emerging_nms_iou must be in [0, 1], got {self.emerging_nms_iou}")
        if not 0.0 <= self.track_nms_iou <= 1.0:
            raise ValueError(f"tracker.track_nms_iou must be in [0, 1], got {self.track_nms_iou}")


@dataclass(frozen=True)
class RefinerConfig:
    """The offline temporal refiner (``MODEL.REFINER``); only built for offline models."""

    decoder_layers: int = 6
    use_local_attn: bool = False
    offline_topk_num: int = 40
    mask_window_size: int = 3  # MASK_FORMER.TEST.WINDOW_SIZE: frames per refiner mask chunk


@dataclass(frozen=True)
class InputConfig:
    """Test-time pre-processing (``INPUT.*``, ``MODEL.PIXEL_MEAN/STD``), RGB order, 0..255."""

    min_size_test: int = 480
    max_size_test: int = 1333
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    format: str = "RGB"


@dataclass(frozen=True)
class TestConfig:
    """Post-processing (``MODEL.MASK_FORMER.TEST``).

    ``merge_fragments_iou`` (not official; 0 = off): after the official top-``max_num`` selection,
    instances of one class that follow one object in turn are merged into one
    (:mod:`daq_model.fragment_merge`: linked where, over the frames both have a mask, at least
    ``merge_fragments_agree`` of them have mask IoU >= ``merge_fragments_iou``).
    """

    __test__ = False  # not a pytest test class

    task: str = "vis"
    max_num: int = 20
    merge_fragments_iou: float = 0.0
    merge_fragments_agree: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.merge_fragments_iou <= 1.0:
            raise ValueError(f"test.merge_fragments_iou must be in [0, 1], got {self.merge_fragments_iou}")
        if not 0.0 <= self.merge_fragments_agree <= 1.0:
            raise ValueError(f"test.merge_fragments_agree must be in [0, 1], got {self.merge_fragments_agree}")


@dataclass(frozen=True)
class LossConfig:
    """Training loss weights and point sampling (``MODEL.MASK_FORMER``)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass(frozen=True)
class InferenceConfig:
    """How we run the model; none of this changes the architecture or the weights.

    ``frame_batch_size``: frames per segmenter batch (the official code uses windows of 5; the
    result does not depend on it beyond float noise). ``precision``: ``fp32``, ``fp16``, ``bf16``
    or ``auto`` (fp32 on CPU, fp16 autocast on CUDA as in the official evaluation).
    ``track_ids``: ``official`` draws ids like the official code (Python ``random``), ``sequential``
    numbers tracks 0, 1, 2, ... per video. Ids never change the VIS result.
    """

    frame_batch_size: int = 5
    precision: str = "auto"
    track_ids: str = "sequential"


@dataclass(frozen=True)
class DAQConfig:
    """Everything that defines one DVIS-DAQ model."""

    name: str = "custom"
    meta_architecture: str = ONLINE
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    input: InputConfig = field(default_factory=InputConfig)
    test: TestConfig = field(default_factory=TestConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.meta_architecture not in (ONLINE, OFFLINE):
            raise ValueError(
                f"meta_architecture must be {ONLINE!r} or {OFFLINE!r}, got {self.meta_architecture!r}"
            )
        if self.class_names and len(self.class_names) != self.segmenter.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for {self.segmenter.num_classes} classes"
            )

    @property
    def offline(self) -> bool:
        return self.meta_architecture == OFFLINE

    @property
    def num_classes(self) -> int:
        return self.segmenter.num_classes

    def class_name(self, label: int) -> str:
        """Name of contiguous label ``label`` (``class_<i>`` when the config has no names)."""
        if 0 <= label < len(self.class_names):
            return self.class_names[label]
        return f"class_{label}"

    def check_buildable(self) -> None:
        """Raise a clear error for architectures daq_model cannot build."""
        if self.backbone.name not in IMPLEMENTED_BACKBONES:
            raise BackboneNotImplementedError(
                f"config {self.name!r}: backbone {self.backbone.name!r} is not implemented in "
                f"daq_model (implemented: {', '.join(IMPLEMENTED_BACKBONES)})"
            )
        if self.tracker.num_new_ins != self.segmenter.num_queries:
            raise ValueError(
                "tracker.num_new_ins must equal segmenter.num_queries (emerging query i uses the "
                f"anchor of segmenter query i); got {self.tracker.num_new_ins} and "
                f"{self.segmenter.num_queries}"
            )

    # ----------------------------------------------------------------------------------------
    # serialisation

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DAQConfig":
        return from_plain(cls, data)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"daq_config": self.to_dict()}, sort_keys=False)

    def config_hash(self) -> str:
        """Stable short hash of the architecture and the inference settings (for provenance).

        ``tracker.mode``, ``tracker.emerging_nms_iou``, ``tracker.track_nms_iou`` and the
        ``test.merge_fragments_*`` settings enter the hash only when they are not their defaults
        (``daq``, 0, 0, merging off), so configs written before the fields existed keep their hash."""
        data = self.to_dict()
        if data["tracker"].get("mode") == "daq":
            del data["tracker"]["mode"]
        if data["tracker"].get("emerging_nms_iou") == 0.0:
            del data["tracker"]["emerging_nms_iou"]
        if data["tracker"].get("track_nms_iou") == 0.0:
            del data["tracker"]["track_nms_iou"]
        if data["test"].get("merge_fragments_iou") == 0.0:
            del data["test"]["merge_fragments_iou"]
            del data["test"]["merge_fragments_agree"]
        if data["tracker"].get("emerging_select_threshold", 0.0) is None:
            del data["tracker"]["emerging_select_threshold"]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, overrides: Mapping[str, Any]) -> "DAQConfig":
        """Copy with dotted-path overrides, e.g. ``{"tracker.inference_select_threshold": 0.1}``."""
        return with_dotted_overrides(self, overrides, "config")


__all__ = [
    "BackboneConfig", "BackboneNotImplementedError", "DAQConfig", "IMPLEMENTED_BACKBONES",
    "InferenceConfig", "InputConfig", "LossConfig", "OFFLINE", "ONLINE", "PixelDecoderConfig",
    "RefinerConfig", "SegmenterConfig", "TRACKER_MODES", "TestConfig", "TrackerConfig",
]
