"""Machine-independent class names for the modules of a tree.

A client and a server must give the same name to the same code, so three kinds of class are renamed:

* remote-code classes live in ``transformers_modules.<per-machine part>.<file>`` (a local folder gives
  ``<folder name>.<16-hex source hash>``, a Hub repo ``<org>.<repo>.<40-hex commit>``); they become
  ``remote:<file>.<qualname>``;
* structural twins (pure-torch classes built in place of kernel classes) carry
  ``__hybridload_twin_of__`` and are named after the real class, so a twin tree equals the real tree;
* stand-in classes carry ``__hybridload_path__`` and become ``standin:<path>`` (they should never be
  built into a tree; being explicit makes it visible when one is).
"""
from __future__ import annotations

import re

#: transformers' TRANSFORMERS_DYNAMIC_MODULE_NAME (a constant since v4; not imported to keep this light).
DYNAMIC_MODULE_PREFIX = "transformers_modules"
REMOTE_PREFIX = "remote:"
STANDIN_PREFIX = "standin:"

# the per-machine part ends at the local source hash (16 hex) or the Hub commit (40 hex)
_MACHINE_PART_END = re.compile(r"^(?:[0-9a-f]{16}|[0-9a-f]{40})$")


def normalise_module_name(module: str) -> str:
    """``transformers_modules.org.repo.<commit>.sub.modeling_x`` -> ``remote:sub.modeling_x``; others unchanged."""
    if module != DYNAMIC_MODULE_PREFIX and not module.startswith(DYNAMIC_MODULE_PREFIX + "."):
        return module
    parts = module.split(".")[1:]
    for index, part in enumerate(parts):
        if _MACHINE_PART_END.match(part):
            rest = parts[index + 1 :]
            break
    else:  # a layout we do not know: the file name is the only part that is surely not per-machine
        rest = parts[-1:]
    return REMOTE_PREFIX + ".".join(rest)


def normalise_dotted_path(path: str) -> str:
    """A dotted symbol path whose module part may be a dynamic (remote-code) module."""
    if path.startswith(DYNAMIC_MODULE_PREFIX + "."):
        module, _, name = path.rpartition(".")
        return f"{normalise_module_name(module)}.{name}"
    return path


def class_name(cls: type) -> str:
    """The canonical name recorded for modules of class ``cls``.

    Not cached globally (that would keep reloaded remote-code classes alive); callers that name many
    modules keep a per-call ``{cls: name}`` dict instead.
    """
    own = cls.__dict__  # own attributes only: a subclass of a twin is its own class, not the twin's
    twin_of = own.get("__hybridload_twin_of__")
    if isinstance(twin_of, str) and twin_of:
        return twin_of
    standin_path = own.get("__hybridload_path__")
    if isinstance(standin_path, str) and standin_path:
        return STANDIN_PREFIX + normalise_dotted_path(standin_path)
    module = own.get("__module__") or getattr(cls, "__module__", None) or "?"
    qualname = own.get("__qualname__") or getattr(cls, "__qualname__", None) or cls.__name__
    return f"{normalise_module_name(module)}.{qualname}"


def short_class_name(name: str) -> str:
    """The qualname's last part: ``remote:modeling_x.Outer.NemotronHBlock`` -> ``NemotronHBlock``."""
    return name.rpartition(".")[2].rpartition(":")[2]
