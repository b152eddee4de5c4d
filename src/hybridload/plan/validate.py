"""Config checks that turn deep transformers tracebacks into errors naming the file, the field and the fix.

Hybrid models describe their layer stack with a pattern (``hybrid_override_pattern`` such as ``"M-M*E"``,
``layers_block_type`` or ``layer_types`` lists). A wrong character or length otherwise surfaces as a
``KeyError: '-'`` from a native config class, or silently builds a different number of layers; both are
caught here before any class runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from .trust import how_to_trust

#: Characters of ``hybrid_override_pattern``: Mamba, MoE, attention, MLP (Nemotron-H convention).
HYBRID_PATTERN_CHARS: dict[str, str] = {"M": "mamba", "E": "moe", "*": "attention", "-": "mlp"}
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_LIST_PATTERN_KEYS = ("layers_block_type", "layer_types")


def read_config_json(path: Path, where: str) -> dict[str, Any]:
    """Parse config.json; malformed JSON or a non-object is a ConfigError naming the file and position."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text ({exc}); re-save it as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; fix the file "
            "(for example with `python -m json.tool config.json`)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a JSON object, got {type(data).__name__}")
    return data


def require_model_type(config: Mapping[str, Any], where: str) -> str | None:
    """model_type names the native config class; without it only an auto_map AutoConfig can parse the file."""
    model_type = config.get("model_type")
    auto_map = config.get("auto_map") or {}
    if model_type is None or model_type == "":
        if isinstance(auto_map, dict) and "AutoConfig" in auto_map:
            return None
        raise ConfigError(
            f"{where} has no 'model_type' (and no auto_map AutoConfig), so no config class can parse it; "
            'add the architecture\'s model type, e.g. "model_type": "llama"'
        )
    if not isinstance(model_type, str):
        raise ConfigError(f"{where}: 'model_type' must be a string, got {model_type!r}")
    return model_type


def layer_count(config: Mapping[str, Any]) -> tuple[str, int] | None:
    for key in _LAYER_COUNT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return key, value
    return None


def validate_layer_patterns(config: Mapping[str, Any], where: str) -> None:
    """Check hybrid layer patterns against the layer count: bad character or bad length -> ConfigError."""
    count = layer_count(config)
    pattern = config.get("hybrid_override_pattern")
    if pattern is not None:
        _check_pattern_string("hybrid_override_pattern", pattern, where, count)
    mtp = config.get("mtp_hybrid_override_pattern")
    if mtp is not None:
        _check_pattern_string("mtp_hybrid_override_pattern", mtp, where, None)
    for key in _LIST_PATTERN_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: {key!r} must be a list of non-empty strings, got {value!r}")
        if count is not None and len(value) != count[1]:
            raise ConfigError(
                f"{where}: {key!r} lists {len(value)} layers but {count[0]} is {count[1]}; make them agree "
                f"(one entry per layer)"
            )


def _check_pattern_string(key: str, pattern: Any, where: str, count: tuple[str, int] | None) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: {key!r} must be a non-empty string such as 'M-M*', got {pattern!r}")
    for index, char in enumerate(pattern):
        if char not in HYBRID_PATTERN_CHARS:
            known = ", ".join(f"{c!r} ({kind})" for c, kind in HYBRID_PATTERN_CHARS.items())
            raise ConfigError(
                f"{where}: {key!r} has unknown layer character {char!r} at position {index} of {pattern!r}; "
                f"allowed characters: {known}"
            )
    if count is not None and len(pattern) != count[1]:
        raise ConfigError(
            f"{where}: {key!r} has {len(pattern)} characters ({pattern!r}) but {count[0]} is {count[1]}; "
            "use one character per layer"
        )


def fields_mentioning(config: Mapping[str, Any], token: Any) -> list[str]:
    """Config fields whose value is, contains or is keyed by ``token`` (to name the field behind a KeyError)."""
    found = []
    for key, value in config.items():
        if value == token and not isinstance(value, bool):
            found.append(key)
        elif isinstance(value, str) and isinstance(token, str) and token and token in value:
            found.append(key)
        elif isinstance(value, (list, tuple)) and token in value:
            found.append(key)
        elif isinstance(value, dict) and token in value:
            found.append(key)
    return found


def explain_config_failure(
    exc: BaseException,
    config: Mapping[str, Any],
    where: str,
    config_class: str,
    remote_config_ref: str | None,
    trusted: bool,
    repo: str | None = None,
) -> ConfigError:
    """A ConfigError that names the field the native class choked on and the fix (often: trust the remote class)."""
    if isinstance(exc, KeyError) and exc.args:
        token = exc.args[0]
        fields = fields_mentioning(config, token)
        detail = f"unknown value {token!r}" + (f" in field(s) {', '.join(map(repr, fields))}" if fields else "")
    else:
        fields = [k for k in config if isinstance(k, str) and k in str(exc)]
        detail = f"{type(exc).__name__}: {exc}" + (f" (field(s) {', '.join(map(repr, fields))})" if fields else "")
    message = f"{where}: {config_class} cannot parse this config: {detail}."
    if remote_config_ref and not trusted:
        message += (
            f" The repository ships its own config class (auto_map AutoConfig -> {remote_config_ref}), which may "
            f"parse it: to use it, {how_to_trust(repo or '<repo>')} or set "
            f"HYBRIDLOAD_TRUST_REMOTE_CODE={repo or '<repo>'} after reviewing it, or upgrade transformers if a newer "
            "native class supports it."
        )
    else:
        message += " Fix the field in config.json, or upgrade transformers if a newer release supports it."
    return ConfigError(message)
