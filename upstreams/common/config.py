"""Reading the optional ``-g`` model configuration that s3prl passes as ``model_config``."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "load_model_config", "warn_unknown_keys"]

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A ``-g`` configuration that cannot be used."""


def load_model_config(model_config: str | os.PathLike | Mapping | None) -> dict[str, Any]:
    """``None``/empty -> ``{}``; a mapping -> a copy; a path -> the parsed YAML mapping."""
    if model_config is None or (isinstance(model_config, str) and not model_config.strip()):
        return {}
    if isinstance(model_config, Mapping):
        return dict(model_config)
    path = Path(model_config).expanduser()
    if not path.is_file():
        raise ConfigError(f"model config (-g) not found: {path}")
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"model config (-g) {path} is not valid YAML: {error}") from error
    if not isinstance(data, Mapping):
        raise ConfigError(f"model config (-g) {path} must be a YAML mapping, got {type(data).__name__}")
    return dict(data)


def warn_unknown_keys(cfg: Mapping[str, Any], known: Iterable[str], where: str) -> list[str]:
    """Log (not fail) keys that the model does not use; returns them."""
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", where, ", ".join(unknown))
    return unknown
