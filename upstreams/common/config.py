"""One configuration system for the upstreams' ``-g``/keyword options and the pre-training configs.

Every family states its options as a dataclass (``config.py``); :func:`from_dict` builds it from
a mapping, turning YAML strings into the declared numbers/booleans and calling ``validate()``.
One rule for unknown keys, decided here for every family:

* the ``-g`` file and keyword options of an entry (:func:`options_from`): a **warning** naming the
  unknown and the valid keys, because official ``-g`` files (ARMHuBERT's training yaml, the
  MelHuBERT runner yaml, ...) carry keys that inference does not read;
* a pre-training config: an **error** naming the valid keys (a typo must not fall back to a
  default for a run of days).
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ConfigError", "load_model_config", "from_dict", "options_from", "parse_bool", "warn_unknown_keys"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says what to change."""


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


def parse_bool(value: Any, name: str) -> bool:
    """YAML/keyword booleans, also as strings ("true", "1", "off", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _unknown_message(unknown: list[str], known: list[str], where: str) -> str:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown key(s) in {where}: {', '.join(hints)}. Known keys: {', '.join(known)}"


def warn_unknown_keys(values: Mapping[str, Any], known, where: str) -> list[str]:
    """Log keys that nothing reads (the ``-g`` rule); returns them."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        logger.warning("%s; they are ignored", _unknown_message(unknown, sorted(known), where))
    return unknown


def _coerce(value: Any, annotation: str, default: Any, where: str) -> Any:
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and annotation.replace(" ", "") in ("bool", "bool|None"):
        return parse_bool(value, where)
    if isinstance(value, str) and ("float" in annotation or "int" in annotation) and "str" not in annotation:
        # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        return int(number) if annotation.startswith("int") and number.is_integer() else number
    return value


def from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str, *, unknown: str = "error") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise a :class:`ConfigError` naming
    the known ones (``unknown="warn"``: they are logged and dropped)."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extra = [k for k in values if k not in known]
    if extra:
        if unknown == "error":
            raise ConfigError(_unknown_message(extra, list(known), where))
        warn_unknown_keys(values, known, where)
        values = {k: v for k, v in values.items() if k in known}
    for key, value in list(values.items()):
        field = known[key]
        values[key] = _coerce(value, str(field.type), field.default, f"{where}.{key}")
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}") from None
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def options_from(cls: type[T], model_config: Any, kwargs: Mapping[str, Any], where: str) -> T:
    """An entry's options: the ``-g`` YAML (or mapping) overlaid with the keyword arguments."""
    try:
        values = {**load_model_config(model_config), **{k: v for k, v in kwargs.items() if v is not None}}
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return from_dict(cls, values, f"{where} (-g / keyword options)", unknown="warn")
