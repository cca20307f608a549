"""Reading, checking and writing DVIS-DAQ checkpoints (the only I/O ``daq_model`` does).

* :func:`load_checkpoint` loads a local path or an fsspec URL (``gs://``, ``s3://``, ``file://``,
  ``memory://`` ...) strictly into a model. Files are read with ``torch.load(weights_only=True)``
  only: a pickle that would need to run code is refused, never executed.
* Accepted layouts: a plain state dict; detectron2's (weights under ``model`` beside ``iteration``,
  ``optimizer``, ...); ours (:func:`save_checkpoint`: ``model`` + ``config`` + ``metadata``); a
  ``state_dict`` wrapper. A ``module.`` prefix (DataParallel / DDP) is stripped.
* :func:`checkpoint_filter_fn` (timm style) maps official names onto ours -- our module tree keeps
  the official names, so this is the identity -- and drops what the model does not have (the
  ``refiner.*`` keys of an offline checkpoint loaded into an online model).
* Any problem raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import fsspec
import torch
from torch import Tensor, nn

from daq_model.config import DAQConfig

logger = logging.getLogger(__name__)

FORMAT_TAG = "daq-label-checkpoint/v1"
# top-level module prefixes that exist in some official checkpoints but not in every model
OPTIONAL_PREFIXES = ("refiner.",)
# buffers derived from the config rather than learned: filled in from the model when absent
DERIVED_KEYS = ("daq_criterion.empty_weight",)
_MAX_LISTED = 20

StateDict = dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model."""


@dataclass
class CheckpointContents:
    """What a checkpoint file holds: the state dict and, for our own files, config and metadata."""

    source: str
    state_dict: StateDict
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    layout: str = "state_dict"  # state_dict | detectron2 | daq-label | wrapped

    def daq_config(self) -> DAQConfig | None:
        """The :class:`DAQConfig` stored with the weights (our own checkpoints only)."""
        return None if self.config is None else DAQConfig.from_dict(self.config)


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did. ``dropped_keys``: file entries not loaded under their
    own name (removed or renamed by the filter); ``filled_keys``: model entries not taken from a
    file entry of the same name (derived buffers, renamed keys)."""

    source: str
    layout: str
    num_tensors: int
    dropped_keys: list[str]
    filled_keys: list[str]
    metadata: dict[str, Any]


def _is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def _list(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _local_path(source: str) -> Path:
    return Path(source[len("file://"):] if source.startswith("file://") else source)


def _torch_load(source: str) -> Any:
    """``torch.load(weights_only=True)`` of a local file or an fsspec URL (streamed, not copied)."""
    if _is_remote(source):
        with fsspec.open(source, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    path = _local_path(source)
    if path.is_dir():
        raise IsADirectoryError(str(path))
    if path.exists() and path.stat().st_size == 0:
        raise EOFError("file is empty")
    return torch.load(path, map_location="cpu", weights_only=True)


def file_sha256(source: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a local file or fsspec URL, read in chunks (recorded for provenance)."""
    source = str(source)
    digest = hashlib.sha256()
    try:
        with fsspec.open(source, "rb") as handle:
            while block := handle.read(chunk_size):
                digest.update(block)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {source}: file does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {source}: cannot read: {exc}") from exc
    return digest.hexdigest()


def _unwrap(source: str, obj: Any) -> tuple[StateDict, dict[str, Any] | None, dict[str, Any], str]:
    """Find the tensors in a loaded object: (state_dict, config, metadata, layout)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {source}: expected a dict of tensors, got "
                              f"{type(obj).__name__}")
    config, metadata, layout = None, {}, "state_dict"
    if obj.get("format") == FORMAT_TAG:
        layout = "daq-label"
        config = obj.get("config")
        metadata = dict(obj.get("metadata") or {})
        obj = obj.get("model")
    elif isinstance(obj.get("model"), Mapping):
        layout = "detectron2"
        metadata = {k: v for k, v in obj.items() if k == "iteration" and isinstance(v, int)}
        obj = obj["model"]
    elif isinstance(obj.get("state_dict"), Mapping):
        layout = "wrapped"
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {source}: no model weights found")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {source}: entries that are not named tensors: {_list(bad)}")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, config, metadata, layout


def read_checkpoint(source: str | os.PathLike[str]) -> CheckpointContents:
    """Read a checkpoint file (local path or fsspec URL) without touching a model."""
    source = str(source)
    try:
        obj = _torch_load(source)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {source}: file does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {source}: is a directory, not a file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, OSError, ...
        message = str(exc).strip()
        text = message.splitlines()[0] if message else type(exc).__name__
        if "weights_only" in message or "Unsupported global" in message:
            reason = "refusing a pickle that would run code or build non-tensor objects"
        else:
            reason = "not a readable PyTorch checkpoint (truncated or another kind of file?)"
        raise CheckpointError(f"checkpoint {source}: {reason}: {text}") from exc
    state, config, metadata, layout = _unwrap(source, obj)
    return CheckpointContents(source=source, state_dict=state, config=config,
                              metadata=metadata, layout=layout)


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module) -> StateDict:
    """Map an official (or our own) state dict onto ``model``'s names (timm convention).

    Our module tree keeps the official names, so names map to themselves (plus Mask2Former's
    old ``static_query`` -> ``query_feat`` rename). Removed here:
    ``refiner.*`` (and other optional top-level modules) when the model lacks that module; FrozenBN
    ``num_batches_tracked`` entries (not part of a frozen norm). Derived buffers missing from the
    file (``daq_criterion.empty_weight``) are taken from the model. Both are logged.
    """
    own = model.state_dict()
    out: StateDict = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        # Mask2Former decoders before weight-format version 2 called query_feat "static_query"
        key = key.replace(".static_query.", ".query_feat.")
        prefix = next((p for p in OPTIONAL_PREFIXES if key.startswith(p)), None)
        if prefix is not None and not any(k.startswith(prefix) for k in own):
            dropped.append(key)
            continue
        if key.endswith(".num_batches_tracked") and key not in own:
            dropped.append(key)
            continue
        out[key] = value
    if dropped:
        logger.info("checkpoint filter: dropped %d entries the model does not have (%s)",
                    len(dropped), _list(sorted({k.split(".")[0] + ".*" for k in dropped})))
    for key in DERIVED_KEYS:
        if key in own and key not in out:
            logger.info("checkpoint filter: %s not in the checkpoint, keeping the model's value", key)
            out[key] = own[key].detach().clone()
    return out


def load_checkpoint(model: nn.Module, source: str | os.PathLike[str], *,
                    filter_fn: Callable[[Mapping[str, Tensor], nn.Module], StateDict] | None = checkpoint_filter_fn,
                    allow_missing_prefixes: Sequence[str] = ()) -> LoadReport:
    """Load ``source`` strictly into ``model``.

    Every model entry must be present with the right shape (except under
    ``allow_missing_prefixes``, e.g. ``("refiner.",)`` to start stage 3 from online weights) and
    every file entry must be used (after ``filter_fn``); otherwise :class:`CheckpointError` lists
    the offending keys. Tensors are copied into the model's dtype and device.
    """
    contents = read_checkpoint(source)
    source = contents.source
    state = filter_fn(contents.state_dict, model) if filter_fn is not None else contents.state_dict
    own = model.state_dict()
    missing = [k for k in own if k not in state
               and not any(k.startswith(p) for p in allow_missing_prefixes)]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_list(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_list(mismatched)}")
    non_float = [k for k in state if k in own and own[k].is_floating_point()
                 and not state[k].is_floating_point()]
    if non_float:
        problems.append(f"non-floating tensors for floating entries: {_list(non_float)}")
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit {type(model).__name__}: "
                              + "; ".join(problems))
    model.load_state_dict(state, strict=not allow_missing_prefixes)
    dropped = [k for k in contents.state_dict if k not in state]
    filled = [k for k in state if k not in contents.state_dict]
    logger.info("loaded %d tensors from %s (%s layout)", len(state), source, contents.layout)
    return LoadReport(source=source, layout=contents.layout, num_tensors=len(state),
                      dropped_keys=dropped, filled_keys=filled, metadata=contents.metadata)


def _check_plain(value: Any, where: str) -> None:
    """Reject values ``torch.load(weights_only=True)`` could not read back (numpy scalars, paths,
    arbitrary objects): the file must stay loadable without running code."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            _check_plain(item, f"{where}.{key}")
        return
    raise TypeError(f"{where}: {type(value).__name__} values cannot be stored in a weights-only "
                    "checkpoint (use str, int, float, bool, None, lists and dicts)")


def save_checkpoint(model: nn.Module, destination: str | os.PathLike[str],
                    config: DAQConfig | None = None,
                    metadata: Mapping[str, Any] | None = None) -> str:
    """Write ``model``'s weights (+ config and metadata) in a file that loads with
    ``weights_only=True``: plain dicts, lists, strings, numbers and CPU tensors only.

    Local files are written atomically (temporary file + rename). Returns the sha256.
    """
    destination = str(destination)
    _check_plain(dict(metadata or {}), "metadata")
    meta = {"created_unix": int(time.time()), "torch": str(torch.__version__), **(metadata or {})}
    payload = {
        "format": FORMAT_TAG,
        "model": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "config": config.to_dict() if config is not None else None,
        "metadata": meta,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    if _is_remote(destination):
        with fsspec.open(destination, "wb") as handle:
            handle.write(data)
    else:
        path = _local_path(destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return hashlib.sha256(data).hexdigest()
