"""Loading the official DVIS-DAQ yaml configs (detectron2 style, ``_BASE_`` inheritance).

Maps the resolved official config tree onto :class:`~daq_model.config.DAQConfig`; keys we do not
model are ignored. Defaults for absent keys are those of detectron2 / Mask2Former / DVIS++ /
DVIS-DAQ's ``add_*_config`` functions.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

import yaml

from daq_model.categories import OVIS_CATEGORIES, YTVIS_2019_CATEGORIES, YTVIS_2021_CATEGORIES
from daq_model.config_types import (
    OFFLINE,
    ONLINE,
    BackboneConfig,
    DAQConfig,
    InputConfig,
    LossConfig,
    PixelDecoderConfig,
    RefinerConfig,
    SegmenterConfig,
    TestConfig,
    TrackerConfig,
)


def read_yaml_with_bases(path: str | Path) -> dict[str, Any]:
    """Read a detectron2-style yaml, resolving ``_BASE_`` (relative to the file) recursively;
    keys of the child override keys of its base, dicts merge recursively."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a valid yaml file: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    if not base_path.exists():
        raise FileNotFoundError(f"{path}: _BASE_ file {base_path} does not exist")
    return _deep_merge(read_yaml_with_bases(base_path), data)


def _deep_merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _get(tree: Mapping[str, Any], dotted: str, default: Any) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    if isinstance(node, str) and node.strip().startswith(("(", "[")):
        try:  # detectron2 writes tuples as strings such as "(112000,)"
            node = ast.literal_eval(node)
        except (ValueError, SyntaxError):
            pass
    if isinstance(node, list):
        node = tuple(node)
    return node


_BACKBONE_NAMES = {
    "build_resnet_backbone": "resnet",
    "D2SwinTransformer": "swin",
    "D2VitAdapterDinoV2": "vit_adapter",
}


def _class_names_for(datasets: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
    for ds in datasets:
        for prefix, names in (("ytvis_2019", YTVIS_2019_CATEGORIES), ("ytvis_2021", YTVIS_2021_CATEGORIES),
                              ("ovis", OVIS_CATEGORIES)):
            if str(ds).startswith(prefix) and len(names) == num_classes:
                return names
    return ()


def config_from_official_dict(tree: Mapping[str, Any], name: str = "official") -> DAQConfig:
    """Map a resolved official config tree (detectron2 keys) onto :class:`DAQConfig`.

    Defaults for absent keys are those of detectron2 / Mask2Former / DVIS++ / DVIS-DAQ's
    ``add_*_config`` functions, so a yaml chain that relies on them resolves as the official code
    would.
    """
    arch = _get(tree, "MODEL.META_ARCHITECTURE", ONLINE)
    if arch not in (ONLINE, OFFLINE):
        raise ValueError(f"{name}: META_ARCHITECTURE {arch!r} is not a DVIS-DAQ model "
                         f"({ONLINE} or {OFFLINE})")
    backbone_key = _get(tree, "MODEL.BACKBONE.NAME", "build_resnet_backbone")
    num_classes = int(_get(tree, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 54))
    backbone = BackboneConfig(
        name=_BACKBONE_NAMES.get(backbone_key, backbone_key),
        depth=int(_get(tree, "MODEL.RESNETS.DEPTH", 50)),
        stem_out_channels=int(_get(tree, "MODEL.RESNETS.STEM_OUT_CHANNELS", 64)),
        res2_out_channels=int(_get(tree, "MODEL.RESNETS.RES2_OUT_CHANNELS", 256)),
        width_per_group=int(_get(tree, "MODEL.RESNETS.WIDTH_PER_GROUP", 64)),
        num_groups=int(_get(tree, "MODEL.RESNETS.NUM_GROUPS", 1)),
        stride_in_1x1=bool(_get(tree, "MODEL.RESNETS.STRIDE_IN_1X1", True)),
        norm=str(_get(tree, "MODEL.RESNETS.NORM", "FrozenBN")),
        res5_dilation=int(_get(tree, "MODEL.RESNETS.RES5_DILATION", 1)),
    )
    pixel_decoder = PixelDecoderConfig(
        conv_dim=int(_get(tree, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 256)),
        mask_dim=int(_get(tree, "MODEL.SEM_SEG_HEAD.MASK_DIM", 256)),
        norm=str(_get(tree, "MODEL.SEM_SEG_HEAD.NORM", "GN")),
        transformer_enc_layers=int(_get(tree, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 0)),
        transformer_in_features=tuple(_get(
            tree, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ("res3", "res4", "res5"))),
        common_stride=int(_get(tree, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4)),
        enc_nheads=int(_get(tree, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 8)),
        enc_n_points=int(_get(tree, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 4)),
    )
    segmenter = SegmenterConfig(
        num_classes=num_classes,
        num_queries=int(_get(tree, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 100)),
        hidden_dim=int(_get(tree, "MODEL.MASK_FORMER.HIDDEN_DIM", 256)),
        nheads=int(_get(tree, "MODEL.MASK_FORMER.NHEADS", 8)),
        dim_feedforward=int(_get(tree, "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 2048)),
        dec_layers=int(_get(tree, "MODEL.MASK_FORMER.DEC_LAYERS", 6)),
        pre_norm=bool(_get(tree, "MODEL.MASK_FORMER.PRE_NORM", False)),
        enforce_input_proj=bool(_get(tree, "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", False)),
        reid_hidden_dim=int(_get(tree, "MODEL.MASK_FORMER.REID_HIDDEN_DIM", 256)),
        num_reid_head_layers=int(_get(tree, "MODEL.MASK_FORMER.NUM_REID_HEAD_LAYERS", 3)),
        size_divisibility=int(_get(tree, "MODEL.MASK_FORMER.SIZE_DIVISIBILITY", 32)),
    )
    tracker = TrackerConfig(
        decoder_layers=int(_get(tree, "MODEL.TRACKER.DECODER_LAYERS", 6)),
        num_new_ins=int(_get(tree, "MODEL.VIDEO_HEAD.NUM_NEW_INS", 10)),
        num_slots=int(_get(tree, "MODEL.VIDEO_HEAD.NUM_SLOTS", 5)),
        training_select_threshold=float(_get(tree, "MODEL.VIDEO_HEAD.TRAINING_SELECT_THRESHOLD", 0.1)),
        inference_select_threshold=float(_get(tree, "MODEL.VIDEO_HEAD.INFERENCE_SELECT_THRESHOLD", 0.1)),
        aux_inference_select_threshold=float(
            _get(tree, "MODEL.VIDEO_HEAD.AUX_INFERENCE_SELECT_THRESHOLD", 0.01)),
        dis_fg_threshold=float(_get(tree, "MODEL.VIDEO_HEAD.DIS_FG_THRESHOLD", 0.01)),
        ovis_infer=bool(_get(tree, "MODEL.VIDEO_HEAD.OVIS_INFER", False)),
        noise_frame_num=int(_get(tree, "MODEL.VIDEO_HEAD.NOISE_FRAME_NUM", 1)),
    )
    refiner = RefinerConfig(
        decoder_layers=int(_get(tree, "MODEL.REFINER.DECODER_LAYERS", 6)),
        use_local_attn=bool(_get(tree, "MODEL.VIDEO_HEAD.USE_LOCAL_ATTN", False)),
        offline_topk_num=int(_get(tree, "MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM", 20)),
        mask_window_size=int(_get(tree, "MODEL.MASK_FORMER.TEST.WINDOW_SIZE", 3)),
    )
    input_cfg = InputConfig(
        min_size_test=int(_get(tree, "INPUT.MIN_SIZE_TEST", 800)),
        max_size_test=int(_get(tree, "INPUT.MAX_SIZE_TEST", 1333)),
        pixel_mean=tuple(float(v) for v in _get(tree, "MODEL.PIXEL_MEAN", (103.53, 116.28, 123.675))),
        pixel_std=tuple(float(v) for v in _get(tree, "MODEL.PIXEL_STD", (1.0, 1.0, 1.0))),
        format=str(_get(tree, "INPUT.FORMAT", "BGR")),
    )
    test = TestConfig(
        task=str(_get(tree, "MODEL.MASK_FORMER.TEST.TASK", "vis")),
        max_num=int(_get(tree, "MODEL.MASK_FORMER.TEST.MAX_NUM", 20)),
    )
    loss = LossConfig(
        class_weight=float(_get(tree, "MODEL.MASK_FORMER.CLASS_WEIGHT", 1.0)),
        mask_weight=float(_get(tree, "MODEL.MASK_FORMER.MASK_WEIGHT", 20.0)),
        dice_weight=float(_get(tree, "MODEL.MASK_FORMER.DICE_WEIGHT", 1.0)),
        no_object_weight=float(_get(tree, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", 0.1)),
        train_num_points=int(_get(tree, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 112 * 112)),
        oversample_ratio=float(_get(tree, "MODEL.MASK_FORMER.OVERSAMPLE_RATIO", 3.0)),
        importance_sample_ratio=float(_get(tree, "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO", 0.75)),
    )
    datasets = tuple(_get(tree, "DATASETS.TEST", ())) + tuple(_get(tree, "DATASETS.TRAIN", ()))
    return DAQConfig(
        name=name,
        meta_architecture=arch,
        backbone=backbone,
        pixel_decoder=pixel_decoder,
        segmenter=segmenter,
        tracker=tracker,
        refiner=refiner,
        input=input_cfg,
        test=test,
        loss=loss,
        class_names=_class_names_for(datasets, num_classes),
    )


def load_official_yaml(path: str | Path) -> DAQConfig:
    """Build a :class:`DAQConfig` from an official DVIS-DAQ yaml (with its ``_BASE_`` chain)."""
    path = Path(path)
    return config_from_official_dict(read_yaml_with_bases(path), name=path.stem)
