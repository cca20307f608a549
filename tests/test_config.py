from __future__ import annotations

import textwrap

import pytest

from daq_model.config import (
    PRESET_NAMES,
    BackboneNotImplementedError,
    DAQConfig,
    get_preset,
    load_config,
    load_official_yaml,
)


def test_presets_build_and_round_trip():
    for name in PRESET_NAMES:
        cfg = get_preset(name)
        assert DAQConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.config_hash() == DAQConfig.from_dict(cfg.to_dict()).config_hash()


def test_released_r50_presets_follow_official_thresholds():
    y19 = get_preset("ytvis19_online_r50")
    assert (y19.num_classes, y19.segmenter.num_queries, y19.tracker.num_new_ins) == (40, 100, 100)
    assert y19.tracker.inference_select_threshold == 0.01 and not y19.tracker.ovis_infer
    ovis_off = get_preset("ovis_offline_r50")
    assert ovis_off.offline and ovis_off.num_classes == 25
    assert ovis_off.tracker.inference_select_threshold == 0.05 and ovis_off.tracker.ovis_infer
    assert ovis_off.refiner.offline_topk_num == 40
    assert get_preset("ovis_online_r50").tracker.inference_select_threshold == 0.1


def test_swin_and_vit_presets_raise_clear_error():
    cfg = get_preset("ytvis19_online_swinl")
    with pytest.raises(BackboneNotImplementedError, match="swin"):
        cfg.check_buildable()
    get_preset("ytvis19_online_r50").check_buildable()


def test_overrides_and_unknown_keys():
    cfg = get_preset("ytvis19_online_r50")
    new = cfg.with_overrides({"tracker.inference_select_threshold": 0.3})
    assert new.tracker.inference_select_threshold == 0.3 and cfg.tracker.inference_select_threshold == 0.01
    assert new.config_hash() != cfg.config_hash()
    with pytest.raises(KeyError):
        cfg.with_overrides({"tracker.no_such_key": 1})


def test_official_yaml_with_base_chain(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "Base.yaml").write_text(textwrap.dedent("""
        MODEL:
          BACKBONE: {NAME: "build_resnet_backbone"}
          PIXEL_MEAN: [123.675, 116.280, 103.530]
          PIXEL_STD: [58.395, 57.120, 57.375]
          RESNETS: {DEPTH: 50, STRIDE_IN_1X1: False}
        INPUT: {MIN_SIZE_TEST: 360, FORMAT: "RGB"}
    """))
    (tmp_path / "base" / "MinVIS.yaml").write_text(textwrap.dedent("""
        _BASE_: Base.yaml
        MODEL:
          SEM_SEG_HEAD: {NUM_CLASSES: 25, CONVS_DIM: 256, MASK_DIM: 256, TRANSFORMER_ENC_LAYERS: 6}
          MASK_FORMER: {HIDDEN_DIM: 256, NUM_OBJECT_QUERIES: 100, DEC_LAYERS: 10, DIM_FEEDFORWARD: 2048}
        INPUT: {MIN_SIZE_TEST: 480}
        DATASETS:
          TEST: ("ovis_val",)
        SOLVER:
          STEPS: (28000,)
    """))
    (tmp_path / "DAQ_Online.yaml").write_text(textwrap.dedent("""
        _BASE_: base/MinVIS.yaml
        MODEL:
          META_ARCHITECTURE: "DVIS_DAQ_online"
          VIDEO_HEAD: {NUM_NEW_INS: 100, INFERENCE_SELECT_THRESHOLD: 0.1, OVIS_INFER: True, NOISE_FRAME_NUM: 5}
    """))
    (tmp_path / "DAQ_Offline.yaml").write_text(textwrap.dedent("""
        _BASE_: DAQ_Online.yaml
        MODEL:
          META_ARCHITECTURE: "DVIS_DAQ_offline"
          VIDEO_HEAD: {INFERENCE_SELECT_THRESHOLD: 0.05, OFFLINE_TOPK_NUM: 40}
    """))
    cfg = load_official_yaml(tmp_path / "DAQ_Offline.yaml")
    assert cfg.offline and cfg.input.min_size_test == 480 and cfg.input.format == "RGB"
    assert cfg.tracker.inference_select_threshold == 0.05 and cfg.tracker.ovis_infer
    assert cfg.refiner.offline_topk_num == 40 and cfg.tracker.noise_frame_num == 5
    assert cfg.class_names[0] == "Person" and len(cfg.class_names) == 25
    # the same config as the preset, up to the name and test-time keys the preset leaves default
    preset = get_preset("ovis_offline_r50")
    assert cfg.segmenter == preset.segmenter and cfg.tracker == preset.tracker
    assert cfg.backbone == preset.backbone and cfg.pixel_decoder == preset.pixel_decoder


def test_own_yaml_round_trip(tmp_path):
    cfg = get_preset("daq_small")
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(str(path)) == cfg


def test_bad_config_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config("no_such_preset_or_file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL: {META_ARCHITECTURE: MaskFormer}\n")
    with pytest.raises(ValueError, match="not a DVIS-DAQ model"):
        load_config(str(bad))
    missing_base = tmp_path / "mb.yaml"
    missing_base.write_text("_BASE_: nope.yaml\n")
    with pytest.raises(FileNotFoundError, match="_BASE_"):
        load_config(str(missing_base))


def test_float_written_with_an_exponent_in_yaml_is_a_float() -> None:
    """PyYAML reads ``1e-4`` as a string; config fields typed float accept it (``--set`` too)."""
    import yaml

    from daq_train.config import get_train_preset

    cfg = get_train_preset("small_cpu").with_overrides({"segmenter.optim.base_lr": yaml.safe_load("1e-4")})
    assert cfg.segmenter.optim.base_lr == 1e-4 and isinstance(cfg.segmenter.optim.base_lr, float)
    with pytest.raises(ValueError, match="base_lr must be a number"):
        get_train_preset("small_cpu").with_overrides({"segmenter.optim.base_lr": "fast"})
