"""4.x config defaults: remote config classes only, 4.x values, still answered after the window."""
from __future__ import annotations

import copy

import pytest
from transformers import AutoConfig, LlamaConfig, PretrainedConfig

import hybridload.compat as compat
import hybridload.compat.catalog as registry
from hybridload.compat.configs import adapt_config_class, is_remote_class
from hybridload.compat.defaults import CONFIG_DEFAULTS_4X, GENERATION_DEFAULTS_4X

CONFIG_ENTRIES = [e for e in compat.entries() if e.kind == registry.CONFIG_DEFAULT]


def _remote_config_class(**attrs):
    """A config class as transformers creates it from remote code (module under transformers_modules)."""
    namespace = {"__module__": "transformers_modules.hl_test.configuration_hl", "model_type": "hl_cfg", **attrs}

    def __init__(self, hidden_size=8, **kwargs):  # noqa: N807 - a 4.x-style remote __init__
        self.hidden_size = hidden_size
        super(cls, self).__init__(**kwargs)

    namespace["__init__"] = __init__
    cls = type("HlRemoteConfig", (PretrainedConfig,), namespace)
    return cls


# 4.x config attributes that some transformers 5.x still define (5.17 keeps ``_commit_hash``, 5.23 drops it);
# where the installed version answers one itself, its entry is inert: a default is served only on a miss
STILL_IN_EARLY_5X = {"_commit_hash"}


def _missing_here() -> list:
    bare = PretrainedConfig()
    return [e for e in CONFIG_ENTRIES if not hasattr(bare, e.name)]


def test_config_default_entries_are_exactly_the_4x_attributes_5x_lacks() -> None:
    bare = PretrainedConfig()
    names = {e.name for e in CONFIG_ENTRIES}
    assert names == set(CONFIG_DEFAULTS_4X) | set(GENERATION_DEFAULTS_4X)
    assert {n for n in names if hasattr(bare, n)} <= STILL_IN_EARLY_5X  # no other 4.x name is still a 5.x one
    assert len(_missing_here()) >= len(names) - len(STILL_IN_EARLY_5X)
    for entry in _missing_here():
        with pytest.raises(AttributeError):
            getattr(bare, entry.name)


def read_as_remote_code(obj, name):
    """``getattr(obj, name)`` from a frame of remote code (the reads hybridload records as the model's needs)."""
    namespace = {"__name__": "transformers_modules.hl_test.modeling_reader", "obj": obj, "name": name}
    exec("value = getattr(obj, name)", namespace)
    return namespace["value"]


def test_reads_by_other_code_are_answered_but_not_recorded() -> None:
    """A pipeline's ``getattr(config, "prefix", None)`` is not something the model needs."""
    with compat.compat_window() as record:
        config = _remote_config_class()()
        assert config.prefix is None
    assert record.fired == []
    with compat.compat_window() as record:
        assert read_as_remote_code(config, "prefix") is None
    assert record.fired == ["config.prefix"]


def test_remote_config_made_outside_a_window_is_adapted_by_the_window_that_builds_from_it() -> None:
    cls = _remote_config_class()
    config = cls(hidden_size=4)
    with pytest.raises(AttributeError):
        config.pad_token_id
    missing = _missing_here()
    with compat.compat_window(config) as record:
        values = {e.name: read_as_remote_code(config, e.name) for e in missing}
    assert values == {e.name: e.default for e in missing}
    assert set(record.fired) == {e.id for e in missing}  # inert entries (answered by transformers) never fire
    assert config.pad_token_id is None and config.tie_word_embeddings is True  # still answered afterwards
    assert config.to_dict().get("pad_token_id", "absent") == "absent"  # served, not stored


def test_explicit_values_win_and_only_missing_names_are_served() -> None:
    with compat.compat_window() as record:
        cls = _remote_config_class()  # remote classes are created inside windows (AutoConfig is wrapped)
        config = cls(pad_token_id=3, tie_word_embeddings=False)
        assert read_as_remote_code(config, "pad_token_id") == 3
        assert read_as_remote_code(config, "tie_word_embeddings") is False
        assert read_as_remote_code(config, "eos_token_id") is None
    assert record.fired == ["config.eos_token_id"]


def test_remote_getattr_of_its_own_runs_first() -> None:
    def __getattr__(self, name):  # noqa: N807
        if name == "pad_token_id":
            return 42
        raise AttributeError(name)

    with compat.compat_window():
        cls = _remote_config_class(__getattr__=__getattr__)
        config = cls()
        assert config.pad_token_id == 42
        assert config.bos_token_id is None


def test_mutable_defaults_are_per_instance() -> None:
    with compat.compat_window():
        cls = _remote_config_class()
        a, b = cls(), cls()
        a.pruned_heads[0] = [1]
        assert a.pruned_heads == {0: [1]}
        assert b.pruned_heads == {}


def test_copies_and_unknown_names_behave_normally() -> None:
    with compat.compat_window():
        config = _remote_config_class()()
    clone = copy.deepcopy(config)
    assert clone.forced_bos_token_id is None
    with pytest.raises(AttributeError, match="no_such_attribute"):
        config.no_such_attribute  # noqa: B018


def test_native_configs_are_never_adapted() -> None:
    assert not adapt_config_class(LlamaConfig)
    assert not is_remote_class(LlamaConfig)
    with compat.compat_window(LlamaConfig()) as record:
        native = LlamaConfig()
        with pytest.raises(AttributeError):
            native.forced_bos_token_id  # noqa: B018
        with pytest.raises(AttributeError):
            PretrainedConfig().pad_token_id  # noqa: B018
    assert record.fired == []
    assert "__getattr__" not in vars(LlamaConfig) and "__getattr__" not in vars(PretrainedConfig)


def test_remote_config_defined_inside_a_window_is_adapted_at_creation(remote) -> None:
    folder = remote("forced_bos")
    with compat.observe() as seen:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        # passed to super().__init__ (5.x drops it; kept as 4.x did)
        assert read_as_remote_code(config, "forced_eos_token_id") == 2
    assert is_remote_class(type(config))
    assert "config.forced_bos_token_id" in seen.fired  # read by the remote __init__
    assert "config.generation_kwargs" in seen.fired


def test_sub_configs_of_a_composite_config_are_adapted() -> None:
    inner_cls = _remote_config_class()
    outer_cls = _remote_config_class()
    outer = outer_cls()
    outer.text_config = inner_cls()
    with compat.compat_window(outer):
        assert outer.text_config.sep_token_id is None


def test_served_values_are_not_config_state(remote, tmp_path) -> None:
    """5.x refuses configs carrying generation parameters (generate, save_pretrained); served ones do not count."""
    config = AutoConfig.from_pretrained(remote("forced_bos", forced_bos_token_id=0), trust_remote_code=True)
    assert config.forced_bos_token_id == 0 and config.max_length == 20
    assert config._get_generation_parameters() == {}
    as_dict = config.to_dict()
    assert "forced_bos_token_id" not in as_dict and "max_length" not in as_dict
    assert not any(key.startswith("__hybridload") for key in as_dict)
    config.save_pretrained(tmp_path / "saved")
    kept = AutoConfig.from_pretrained(remote("forced_bos", use_cache=False, epsilon_cutoff=0.1), trust_remote_code=True)
    assert kept.use_cache is False and kept.epsilon_cutoff == 0.1  # not 4.x defaults, but 4.x kept them too
    assert copy.deepcopy(config).forced_bos_token_id == 0
    config.max_length = 7  # set explicitly: real config state, as 5.x sees it
    assert config._get_generation_parameters() == {"max_length": 7}
