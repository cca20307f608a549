"""Which model labels: checkpoint + config, the shipped default, checksums and the provenance key.

The default model (no ``--checkpoint``) is the one this project ships in ``daq_model/pretrained/``:
a checkpoint ``<name>.pt``, optionally with a model card ``<name>.json`` next to it (JSON; the
fields used here: ``"name"``, the model name recorded in every row, default ``<name>``; and
``"config"``, a preset name or a yaml file relative to the card). Exactly one checkpoint must be
there, or a ``default.json`` card (same fields plus ``"checkpoint"``) must say which.

Config resolution: ``--config`` if given; else the card's config or a ``<name>.yaml`` next to the
shipped checkpoint; else the config stored in the checkpoint itself (``daq_model.checkpoint``'s
own format carries one).

Provenance key = first 16 hex digits of sha256 over (model name, checkpoint sha256, config hash,
package version), joined by newlines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daq_model.checkpoint import CheckpointError, file_sha256, read_checkpoint
from daq_model.config import DAQConfig, load_config
from pipeline.storage import is_local, url_to_fs
from pipeline.tables import Provenance

logger = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "daq_model" / "pretrained"
_CHUNK = 4 * 1024 * 1024


class ModelSourceError(ValueError):
    """The model cannot be resolved (no default model, unreadable checkpoint, bad config)."""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("daq-label")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        return "0+unknown"


def provenance_key(model_name: str, checkpoint_sha256: str, config_hash: str, version: str) -> str:
    blob = "\n".join((model_name, checkpoint_sha256, config_hash, version)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: where its weights are, its config, and how it is named."""

    checkpoint: str
    config: DAQConfig
    model_name: str
    checkpoint_sha256: str
    origin: str  # "explicit" or "shipped"

    def provenance(self) -> Provenance:
        version = package_version()
        config_hash = self.config.config_hash()
        return Provenance(
            model_name=self.model_name,
            checkpoint_sha256=self.checkpoint_sha256,
            config_hash=config_hash,
            package_version=version,
            key=provenance_key(self.model_name, self.checkpoint_sha256, config_hash, version),
        )


def _card_config(card: dict[str, Any], card_dir: Path, stem: str) -> str | None:
    spec = card.get("config")
    if spec:
        candidate = card_dir / str(spec)
        return str(candidate) if candidate.exists() else str(spec)
    sibling = card_dir / f"{stem}.yaml"
    return str(sibling) if sibling.exists() else None


def shipped_model(pretrained_dir: Path | None = None) -> tuple[str, str | None, str] | None:
    """(checkpoint path, config spec or None, model name) of the shipped default model, or None."""
    pretrained_dir = PRETRAINED_DIR if pretrained_dir is None else pretrained_dir
    if not pretrained_dir.is_dir():
        return None
    default_card = pretrained_dir / "default.json"
    if default_card.exists():
        card = json.loads(default_card.read_text())
        ckpt = pretrained_dir / str(card["checkpoint"])
        stem = ckpt.stem
        return str(ckpt), _card_config(card, pretrained_dir, stem), str(card.get("name", stem))
    checkpoints = sorted(pretrained_dir.glob("*.pt"))
    if not checkpoints:
        return None
    if len(checkpoints) > 1:
        raise ModelSourceError(
            f"{pretrained_dir} holds {len(checkpoints)} checkpoints and no default.json saying which "
            "is the default; pass --checkpoint")
    ckpt = checkpoints[0]
    card_path = ckpt.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return str(ckpt), _card_config(card, pretrained_dir, ckpt.stem), str(card.get("name", ckpt.stem))


def _load_config(spec: str) -> DAQConfig:
    try:
        cfg = load_config(spec)
        cfg.check_buildable()
    except (KeyError, ValueError, FileNotFoundError, NotImplementedError) as exc:
        raise ModelSourceError(f"config {spec!r}: {exc}") from exc
    return cfg


def _embedded_config(checkpoint: str) -> DAQConfig:
    try:
        cfg = read_checkpoint(checkpoint).daq_config()
    except CheckpointError as exc:
        raise ModelSourceError(str(exc)) from exc
    if cfg is None:
        raise ModelSourceError(f"checkpoint {checkpoint} stores no config: pass --config PRESET|yaml")
    cfg.check_buildable()
    return cfg


def without_fragment_merging(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the official post-processing: ``test.merge_fragments_iou`` 0 (its config hash,
    and so the provenance key, changes only if merging was on)."""
    if spec.config.test.merge_fragments_iou == 0:
        return spec
    return dataclasses.replace(spec, config=spec.config.with_overrides({"test.merge_fragments_iou": 0.0}))


def _checkpoint_sha256(url: str, storage_options: dict[str, Any] | None) -> str:
    if not storage_options:
        return file_sha256(url)
    digest = hashlib.sha256()
    try:
        fs, path = url_to_fs(url, storage_options)
        with fs.open(path, "rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {url}: file does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {url}: cannot read: {exc}") from exc
    return digest.hexdigest()


def resolve_model(checkpoint: str | None, config: str | None, model_name: str | None = None,
                  storage_options: dict[str, Any] | None = None) -> ModelSpec:
    """Resolve ``--checkpoint`` / ``--config``; either may be omitted (shipped model, config
    stored in the checkpoint). Reads the checkpoint once for its sha256 (``storage_options``:
    fsspec options for a remote checkpoint)."""
    origin = "explicit"
    shipped_name = None
    if checkpoint is None:
        shipped = shipped_model()
        if shipped is None:
            raise ModelSourceError(
                "no default model is shipped with this version of daq-label yet "
                f"({PRETRAINED_DIR} has none): pass --checkpoint PATH|URL and --config PRESET|yaml")
        checkpoint, shipped_config, shipped_name = shipped
        config = config or shipped_config
        origin = "shipped"
    try:
        digest = _checkpoint_sha256(checkpoint, storage_options)
    except CheckpointError as exc:
        raise ModelSourceError(str(exc)) from exc
    if config:
        cfg = _load_config(config)
    elif storage_options:  # read the stored config from a local copy fetched with the options
        cfg = _embedded_config(local_checkpoint(checkpoint, digest, storage_options))
    else:
        cfg = _embedded_config(checkpoint)
    name = model_name or shipped_name or cfg.name
    return ModelSpec(checkpoint, cfg, name, digest, origin)


def local_checkpoint(url: str, expected_sha256: str, storage_options: dict[str, Any] | None = None) -> str:
    """A local path holding the checkpoint ``url`` with the expected sha256 (remote checkpoints are
    copied once per machine into a cache named by their hash). Raises if the content changed."""
    fs, path = url_to_fs(url, storage_options)
    if is_local(fs):
        actual = file_sha256(url)
        if actual != expected_sha256:
            raise ModelSourceError(f"checkpoint {url} changed since the job started "
                                   f"(sha256 {actual[:12]}..., expected {expected_sha256[:12]}...)")
        return path
    cache_dir = Path(tempfile.gettempdir()) / "daq_label_checkpoints"
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{expected_sha256}.pt"
    if target.exists() and file_sha256(str(target)) == expected_sha256:
        return str(target)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        actual = file_sha256(tmp)
        if actual != expected_sha256:
            raise ModelSourceError(f"checkpoint {url} changed since the job started "
                                   f"(sha256 {actual[:12]}..., expected {expected_sha256[:12]}...)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("copied checkpoint %s to %s", url, target)
    return str(target)
