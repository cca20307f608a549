"""DVIS-DAQ model configuration: the public entry point.

A :class:`DAQConfig` fully describes one model (architecture, inference thresholds, input
pre-processing, loss weights). Configs are immutable; derive variants with
:meth:`DAQConfig.with_overrides`. Three ways to get one:

* ``get_preset("ytvis19_online_r50")`` -- the released architectures (see :data:`PRESET_NAMES`);
* ``load_official_yaml("configs/dvis_daq/ovis/DAQ_Offline_R50.yaml")`` -- the official detectron2
  yaml files, ``_BASE_`` inheritance included (keys we do not model are ignored);
* ``load_config(spec)`` -- either of the above, or a yaml written by :meth:`DAQConfig.to_yaml`.

The pieces live in three modules that import only :mod:`daq_model.config_types` (never this
module), so there is no import cycle: the dataclasses (:mod:`daq_model.config_types`), the presets
(:mod:`daq_model.presets`) and the official yaml loader (:mod:`daq_model.official_config`). Every
public name of the three is re-exported here; import from ``daq_model.config``.
"""

from __future__ import annotations

from pathlib import Path

from daq_model.config_types import (
    IMPLEMENTED_BACKBONES,
    OFFLINE,
    ONLINE,
    TRACKER_MODES,
    BackboneConfig,
    BackboneNotImplementedError,
    DAQConfig,
    InferenceConfig,
    InputConfig,
    LossConfig,
    PixelDecoderConfig,
    RefinerConfig,
    SegmenterConfig,
    TestConfig,
    TrackerConfig,
)
from daq_model.official_config import (
    config_from_official_dict,
    load_official_yaml,
    read_yaml_with_bases,
)
from daq_model.presets import PRESET_NAMES, get_preset, small_config


def load_config(spec: "str | Path | DAQConfig") -> DAQConfig:
    """A preset name, an official yaml, or a yaml written by :meth:`DAQConfig.to_yaml`."""
    if isinstance(spec, DAQConfig):
        return spec
    text = str(spec)
    if text in PRESET_NAMES:
        return get_preset(text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"config {text!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor an existing file"
        )
    tree = read_yaml_with_bases(path)
    if "daq_config" in tree:
        return DAQConfig.from_dict(tree["daq_config"])
    if "MODEL" in tree:
        return config_from_official_dict(tree, name=path.stem)
    raise ValueError(f"{path}: neither an official DVIS-DAQ config (no MODEL section) nor a "
                     "daq_config yaml")


__all__ = [
    "BackboneConfig", "BackboneNotImplementedError", "DAQConfig", "IMPLEMENTED_BACKBONES",
    "InferenceConfig", "InputConfig", "LossConfig", "OFFLINE", "ONLINE", "PRESET_NAMES",
    "PixelDecoderConfig", "RefinerConfig", "SegmenterConfig", "TRACKER_MODES", "TestConfig",
    "TrackerConfig", "config_from_official_dict", "get_preset", "load_config",
    "load_official_yaml", "read_yaml_with_bases", "small_config",
]
