"""Which classes a load builds, decided from config.json and the trust decision without running any code.

Mirrors transformers' own choice (``AutoConfig.from_pretrained`` / ``AutoModel*.from_config``): remote code
when the repo has an ``auto_map`` entry *and* it is trusted *and* no user-registered class takes precedence,
the native class otherwise; never a native model around a remote config or the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError, PlanError, TrustError
from .code import CodeRef, parse_ref, tokenizer_refs
from .model import NATIVE, REMOTE
from .trust import TrustDecision, opt_in_instructions
from .validate import explain_config_failure


@dataclass(frozen=True)
class ClassChoice:
    """The class decision, made from config.json and the trust decision without running any code."""

    config_class: str
    config_source: str
    model_class: str
    model_source: str
    native_model: type | None
    model_ref: CodeRef | None
    refs: tuple[CodeRef, ...]  # remote references that will run (config, model, tokenizer)
    unused: dict[str, Any]  # auto_map entries the plan does not use: recorded, not run


def auto_class(name: str) -> type:
    """The transformers Auto class named ``name`` (the task head a plan builds), or a PlanError."""
    import transformers

    cls = getattr(transformers, name, None) if name.startswith("Auto") else None
    if cls is None or getattr(cls, "_model_mapping", None) is None:
        raise PlanError(
            f"auto_class={name!r} is not a transformers AutoModel class; use e.g. 'AutoModelForCausalLM', "
            "'AutoModel', 'AutoModelForSeq2SeqLM', 'AutoModelForImageTextToText'"
        )
    return cls


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _native_config_class(model_type: str | None) -> type | None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type is None or model_type not in CONFIG_MAPPING:
        return None
    return CONFIG_MAPPING[model_type]


def _native_model_class(auto_cls: type, config_cls: type | None, config: Mapping[str, Any]) -> type | None:
    """What ``auto_cls.from_config`` picks for a native config (transformers' _get_model_class, on names)."""
    if config_cls is None:
        return None
    try:
        supported = auto_cls._model_mapping[config_cls]
    except KeyError:
        return None
    if not isinstance(supported, (list, tuple)):
        return supported
    by_name = {c.__name__: c for c in supported}
    for arch in config.get("architectures") or []:
        if arch in by_name:
            return by_name[arch]
    return supported[0]


def _is_explicit_local(cls: type | None) -> bool:
    """A class registered by the user (not shipped by transformers) wins over remote code, as in transformers."""
    return cls is not None and not cls.__module__.startswith("transformers.")


def choose_classes(
    repo: str, where: str, config: Mapping[str, Any], model_type: str | None, auto_name: str, trusted: TrustDecision,
) -> ClassChoice:
    auto_map = config.get("auto_map") or {}
    if not isinstance(auto_map, dict):
        raise ConfigError(f"{where}: 'auto_map' must be an object mapping Auto classes to 'module.Class', got {auto_map!r}")
    auto_cls = auto_class(auto_name)
    config_ref = parse_ref("AutoConfig", auto_map["AutoConfig"], where) if "AutoConfig" in auto_map else None
    model_ref = parse_ref(auto_name, auto_map[auto_name], where) if auto_name in auto_map else None
    native_config = _native_config_class(model_type)
    use_remote_config = config_ref is not None and trusted.trusted and not _is_explicit_local(native_config)
    if not use_remote_config and native_config is None:
        if config_ref is not None:
            raise TrustError(
                f"{repo} needs remote code: its config (model_type {model_type!r}) has no native transformers class "
                f"and auto_map AutoConfig -> {config_ref.raw} is not trusted ({trusted.reason}). "
                + opt_in_instructions(repo, [config_ref.repo or repo])
            )
        import transformers

        raise ConfigError(
            f"{where}: model_type {model_type!r} is not known to transformers {transformers.__version__} and the "
            "repo has no auto_map AutoConfig; upgrade transformers or fix 'model_type'"
        )
    native_model = None if use_remote_config else _native_model_class(auto_cls, native_config, config)
    use_remote_model = model_ref is not None and trusted.trusted and not _is_explicit_local(native_model)
    if not use_remote_model and native_model is None:
        others = sorted(k for k in auto_map if k.startswith("AutoModel"))
        if model_ref is not None:
            raise TrustError(
                f"{repo} needs remote code: {auto_name} has no native class for it and auto_map {auto_name} -> "
                f"{model_ref.raw} is not trusted ({trusted.reason}). " + opt_in_instructions(repo, [model_ref.repo or repo])
            )
        raise PlanError(
            f"{repo}: {auto_name} cannot build this model (model_type {model_type!r}"
            + (", remote config class" if use_remote_config else "")
            + f", no auto_map {auto_name} entry). "
            + (f"Its auto_map offers {', '.join(others)}: pass auto_class=<one of them>." if others else "Pass another auto_class=.")
        )
    refs: list[CodeRef] = []
    if use_remote_config:
        refs.append(config_ref)  # type: ignore[arg-type]
    if use_remote_model:
        refs.append(model_ref)  # type: ignore[arg-type]
    tokenizer, not_code = tokenizer_refs(auto_map, where) if trusted.trusted else ([], [])
    refs += tokenizer
    used = {"AutoConfig"} if use_remote_config else set()
    if use_remote_model:
        used.add(auto_name)
    if tokenizer and not not_code:
        used.add("AutoTokenizer")
    unused = {key: value for key, value in auto_map.items() if key not in used}
    return ClassChoice(
        config_class=config_ref.raw if use_remote_config else _dotted(native_config),  # type: ignore[union-attr,arg-type]
        config_source=REMOTE if use_remote_config else NATIVE,
        model_class=model_ref.raw if use_remote_model else _dotted(native_model),  # type: ignore[union-attr,arg-type]
        model_source=REMOTE if use_remote_model else NATIVE,
        native_model=None if use_remote_model else native_model,
        model_ref=model_ref if use_remote_model else None,
        refs=tuple(refs),
        unused=unused,
    )


def check_native_config(
    native_config_path: str, config: Mapping[str, Any], where: str, remote_ref: str | None, trusted: bool, repo: str
) -> None:
    """Parse config.json with the native class now, so a parse failure names the field and the fix."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[config["model_type"]]
    try:
        cls.from_dict(dict(config))
    except Exception as exc:
        raise explain_config_failure(exc, config, where, native_config_path, remote_ref, trusted, repo) from None
