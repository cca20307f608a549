"""DVIS-DAQ in pure PyTorch: segmenter, dynamic-anchor-query tracker and offline refiner.

No Beam, no I/O beyond loading checkpoints: the pipeline (``pipeline/``) feeds decoded frames in.
"""

from daq_model.config import (
    PRESET_NAMES,
    DAQConfig,
    get_preset,
    load_config,
    load_official_yaml,
)

__all__ = ["DAQConfig", "PRESET_NAMES", "get_preset", "load_config", "load_official_yaml"]
