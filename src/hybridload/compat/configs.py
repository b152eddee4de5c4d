"""4.x config defaults on remote config classes (``transformers_modules.*``), never on native ones.

4.x ``PretrainedConfig.__init__`` set ~45 attributes on every config (``pad_token_id``,
``forced_bos_token_id``, ``tie_word_embeddings``...); 5.x does not, and drops generation parameters passed to
a config. Remote code written for 4.x reads them, in ``__init__`` of the config itself (Florence-2) or of
the model (DNABERT-2). A remote config class is *adapted* once, when it is created inside a window (or when
a window is opened with an instance of it):

* a class-level ``__getattr__`` answers registered attribute names the instance does not have with the 4.x
  default (normal lookup, the class's own attributes and its own ``__getattr__`` win);
* a ``__post_init__`` wrapper keeps generation parameters passed to the config (5.x drops them), which
  ``__getattr__`` then answers instead of the default, as 4.x did;
* served values are not config state: ``to_dict()`` (hence ``save_pretrained`` and config hashes) and
  ``_get_generation_parameters()`` (which makes 5.x ``generate``/``save_pretrained`` refuse configs carrying
  generation parameters) see the config exactly as plain 5.x does.

The adaptation belongs to the remote class, so a config built inside a window keeps answering afterwards
(the server reads them in ``forward``), and it is deterministic: the same config dict gives the same
attributes on the client and on the server. Entries fire only while a window is open on the thread.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Iterator

from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch
from . import record as state
from .catalog import config_defaults

REMOTE_PREFIX = "transformers_modules"
_MARK = "__hybridload_compat_adapted__"
#: instance-dict key of the generation kwargs 5.x dropped (copied with the config, never serialized)
RETAINED = "__hybridload_retained__"
_lock = threading.Lock()


def is_remote_class(cls: type) -> bool:
    module = getattr(cls, "__module__", "") or ""
    return module == REMOTE_PREFIX or module.startswith(REMOTE_PREFIX + ".")


def _dropped_generation_params() -> frozenset[str]:
    from transformers import GenerationConfig

    return frozenset(GenerationConfig._get_default_generation_params())


def _read_by_remote_code() -> bool:
    """Whether the code reading the attribute (first frame outside hybridload) is the model's remote code.

    Frameworks read config attributes too (a pipeline's ``getattr(config, "prefix", None)``); they get the same
    answer, but only the model's own reads are recorded as entries the model needs, so a build records the
    same entries whether nnsight's pipeline or a plain ``from_config`` drove it.
    """
    frame = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not name.startswith("hybridload."):
            return name.startswith(REMOTE_PREFIX)
        frame = frame.f_back
    return False


def _make_getattr(cls: type, previous: Any) -> Any:
    def __getattr__(self: Any, name: str) -> Any:  # noqa: N807 - installed as the class's __getattr__
        if previous is not None:
            try:
                return previous(self, name)
            except AttributeError:
                pass
        if name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        retained = self.__dict__.get(RETAINED) or {}
        if name in retained:
            if _read_by_remote_code():
                state.fire("config.generation_kwargs", f"{type(self).__module__}.{type(self).__qualname__}.{name}")
            return retained[name]
        entry = config_defaults().get(name)
        if entry is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = entry.default_value()
        if isinstance(value, (dict, list, set)):
            # mutable 4.x defaults (pruned_heads={}) were per-instance attributes that code mutates in place
            object.__setattr__(self, name, value)
        if _read_by_remote_code():
            state.fire(entry.id, f"{type(self).__module__}.{type(self).__qualname__}")
        return value

    __getattr__.__hybridload_compat__ = True  # type: ignore[attr-defined]
    __getattr__.__qualname__ = f"{cls.__qualname__}.__getattr__"
    return __getattr__


def _make_post_init(cls: type, previous: Any) -> Any:
    def __post_init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        kept = {}
        if kwargs:
            dropped = _dropped_generation_params()
            kept = {k: v for k, v in kwargs.items() if k in dropped}
        previous(self, *args, **kwargs)
        if state.active():
            from .names import replay_for

            replay_for(type(self))
        kept = {k: v for k, v in kept.items() if k not in self.__dict__}
        if kept:
            self.__dict__.setdefault(RETAINED, {}).update(kept)

    __post_init__.__hybridload_compat__ = True  # type: ignore[attr-defined]
    __post_init__.__qualname__ = f"{cls.__qualname__}.__post_init__"
    return __post_init__


def _make_to_dict(cls: type, previous: Any) -> Any:
    def to_dict(self: Any) -> dict[str, Any]:
        out = previous(self)
        out.pop(RETAINED, None)
        return out

    to_dict.__hybridload_compat__ = True  # type: ignore[attr-defined]
    to_dict.__qualname__ = f"{cls.__qualname__}.to_dict"
    return to_dict


def _make_generation_parameters(cls: type, previous: Any) -> Any:
    def _get_generation_parameters(self: Any) -> dict[str, Any]:
        # only values the config really holds count; served 4.x defaults and kept kwargs do not
        return {k: v for k, v in previous(self).items() if k in self.__dict__}

    _get_generation_parameters.__hybridload_compat__ = True  # type: ignore[attr-defined]
    _get_generation_parameters.__qualname__ = f"{cls.__qualname__}._get_generation_parameters"
    return _get_generation_parameters


def adapt_config_class(cls: type) -> bool:
    """Give a remote config class the 4.x defaults (idempotent). Returns True if ``cls`` is (now) adapted."""
    if not isinstance(cls, type) or not is_remote_class(cls):
        return False
    with _lock:
        if cls.__dict__.get(_MARK):
            return True
        inherited_getattr = getattr(cls, "__getattr__", None)
        if not getattr(inherited_getattr, "__hybridload_compat__", False) or "__getattr__" in cls.__dict__:
            type.__setattr__(cls, "__getattr__", _make_getattr(cls, inherited_getattr))
        for name, make in (
            ("__post_init__", _make_post_init),
            ("to_dict", _make_to_dict),
            ("_get_generation_parameters", _make_generation_parameters),
        ):
            inherited = getattr(cls, name, None)
            if inherited is not None and (
                not getattr(inherited, "__hybridload_compat__", False) or name in cls.__dict__
            ):
                type.__setattr__(cls, name, make(cls, inherited))
        type.__setattr__(cls, _MARK, True)
    return True


def _configs_in(config: Any, depth: int = 0) -> Iterator[Any]:
    yield config
    if depth >= 3:
        return
    try:
        values = list(vars(config).values())
    except TypeError:
        return
    from transformers import PreTrainedConfig

    for value in values:
        if isinstance(value, PreTrainedConfig):
            yield from _configs_in(value, depth + 1)


def adapt_config_instance(config: Any) -> None:
    """Adapt the classes of ``config`` and of its sub-configs (a config made before the window opened)."""
    if config is None:
        return
    from transformers import PreTrainedConfig

    if not isinstance(config, PreTrainedConfig):
        return
    from .names import replay_for

    for item in _configs_in(config):
        if adapt_config_class(type(item)):
            replay_for(type(item))


def _make_init_subclass(original: Any) -> Any:
    @passes_through
    def __init_subclass__(cls: type, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        original(cls, *args, **kwargs)
        if state.active():
            adapt_config_class(cls)

    return __init_subclass__


def _pretrained_config() -> type:
    from transformers import PreTrainedConfig

    return PreTrainedConfig


#: while compat windows are open, remote config classes are adapted as they are created (a window's thread)
SUBCLASS_PATCH = Patch(
    _pretrained_config, "__init_subclass__", _make_init_subclass, lazy=True,
    key="transformers.PreTrainedConfig.__init_subclass__",
)
