"""One remote-code fixture per transformers-4.x compatibility entry, for the one-build-path parity tests.

Each fixture is the compat tests' tiny causal LM (compat_fixtures.py) whose code uses exactly one entry: a
removed or moved name imported at module level (probes called there too), a 4.x config attribute read in
``__init__``, or one of the behaviours (removed modules, generation kwargs kept on a config, 4.x weight tying,
value reads during a meta build).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "compat") not in sys.path:
    sys.path.insert(0, str(TESTS / "compat"))

from compat_fixtures import write_compat_model  # noqa: E402

#: behaviour entries: (pattern of compat_fixtures, header line, config.json additions, environment)
_BEHAVIOURS: dict[str, tuple[str, str, dict[str, Any], dict[str, str]]] = {
    "compat.removed_module": ("inert", "from transformers.generation.beam_search import BeamSearchScorer\n", {}, {}),
    "config.generation_kwargs": ("inert", "", {"num_beams": 4}, {}),
    "model.tied_weights_keys": ("tied_list", "", {}, {}),
    "meta.cpu_scalars": ("item_on_meta", "", {}, {"HYBRIDLOAD_CPU_SCALARS": "1"}),
}


def entry_ids() -> list[str]:
    import hybridload.compat as compat

    return sorted(entry.id for entry in compat.entries())


def _use(entry: Any) -> tuple[str, str]:
    """(module-level header, line in the model's __init__) that make remote code use ``entry``."""
    if entry.kind == "config-default":
        return "", f"        _hl_uses = config.{entry.name}\n"
    header = f"from {entry.modules[0]} import {entry.name}\n"
    if entry.kind == "probe":
        header += f"_HL_PROBED = {entry.name}()\n"
    else:
        header += f"_HL_USES = [{entry.name}]\n"
    return header, ""


def write_entry_fixture(root: Path, entry_id: str) -> tuple[Path, dict[str, str]]:
    """The fixture folder for ``entry_id`` and the environment its builds need."""
    import hybridload.compat as compat

    entry = compat.get_entry(entry_id)
    if entry.kind == "behavior":
        pattern, header, config, env = _BEHAVIOURS[entry_id]
        folder = write_compat_model(root, pattern, **config)
        stem = pattern.replace("_", "")
        if header:
            path = folder / f"modeling_{stem}.py"
            path.write_text(path.read_text().replace("\n\n\nclass Block", f"\n{header}\n\nclass Block", 1))
        if entry_id == "config.generation_kwargs":
            path = folder / f"modeling_{stem}.py"
            path.write_text(path.read_text().replace("        self.post_init()\n", "        _hl_beams = config.num_beams\n        self.post_init()\n", 1))
        return folder, env
    header, init_line = _use(entry)
    folder = write_compat_model(root, "inert")
    if entry.kind == "config-default":  # a 4.x-style config that leaves every default to PretrainedConfig
        config_file = folder / "configuration_inert.py"
        config_file.write_text(
            config_file.read_text()
            .replace("pad_token_id=0, tie_word_embeddings=False, ", "")
            .replace("pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, ", "")
        )
    path = folder / "modeling_inert.py"
    text = path.read_text()
    if header:
        text = text.replace("\n\n\nclass Block", f"\n{header}\n\nclass Block", 1)
    if init_line:
        text = text.replace("        self.layers = nn.ModuleList", init_line + "        self.layers = nn.ModuleList", 1)
    path.write_text(text)
    return folder, {}


def write_all(root: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Every entry's fixture under ``root``: entry id -> (folder, environment)."""
    return {entry_id: (str(folder), env) for entry_id in entry_ids() for folder, env in [write_entry_fixture(root, entry_id)]}


if __name__ == "__main__":  # python entry_fixtures.py ROOT  -> prints the fixture map as JSON
    print(json.dumps(write_all(Path(sys.argv[1]))))
