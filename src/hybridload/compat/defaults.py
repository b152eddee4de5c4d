"""The built-in compatibility entries: what transformers 4.x remote code imports or reads that 5.x removed.

Sources, checked against the released wheels (not guessed):
* the config defaults are the attributes ``PretrainedConfig.__init__`` of transformers **4.57.6** (the last
  4.x release) sets on every config, with its defaults, minus what 5.x ``PreTrainedConfig`` still defines
  (``return_dict``, ``output_hidden_states``, ``output_attentions``, ``dtype``, ``chunk_size_feed_forward``,
  ``is_encoder_decoder``, ``architectures``, ``id2label``/``label2id``/``num_labels``, ``problem_type``...);
* "removed_in" is the first release whose source no longer has the name where 4.x code imported it
  (4.53.3/4.54.1, 4.56.2/4.57.1, 4.57.6/5.0.0, 5.1.0/5.2.0 were compared).
"""
from __future__ import annotations

from typing import Any

from .catalog import CompatEntry, alias, config_default, moved, probe, removed

_UTILS = ("transformers.utils.import_utils", "transformers.utils")
_GEN_UTILS = ("transformers.generation.utils",)


def _torch_available() -> bool:
    from transformers.utils.import_utils import is_torch_available

    return bool(is_torch_available())


def _flash_attn_2_10() -> bool:
    # 4.57.6: False unless the flash_attn distribution is installed at version >= 2.1.0
    import importlib.metadata

    from packaging import version

    try:
        installed = importlib.metadata.version("flash_attn")
    except importlib.metadata.PackageNotFoundError:
        return False
    return version.parse(installed) >= version.parse("2.1.0")


def _loss_kwargs() -> Any:
    # The 4.53 definition: a TypedDict used only in annotations (``class KwargsForCausalLM(..., LossKwargs)``).
    from typing import Optional, TypedDict

    import torch

    return TypedDict("LossKwargs", {"num_items_in_batch": Optional[torch.Tensor]}, total=False)


def _generation_attr(name: str) -> Any:
    import transformers.generation.utils as gen

    return getattr(gen, name)


def _generation_union(*names: str) -> Any:
    from typing import Union

    import transformers.generation.utils as gen

    return Union[tuple(getattr(gen, n) for n in names)]  # type: ignore[return-value]


# 4.57.6 generation/utils.py defined these as aliases of the Generate* outputs (deprecated in 4.x, gone in 5.0.0)
_OUTPUT_ALIASES = {
    "GreedySearchDecoderOnlyOutput": "GenerateDecoderOnlyOutput",
    "ContrastiveSearchDecoderOnlyOutput": "GenerateDecoderOnlyOutput",
    "SampleDecoderOnlyOutput": "GenerateDecoderOnlyOutput",
    "GreedySearchEncoderDecoderOutput": "GenerateEncoderDecoderOutput",
    "ContrastiveSearchEncoderDecoderOutput": "GenerateEncoderDecoderOutput",
    "SampleEncoderDecoderOutput": "GenerateEncoderDecoderOutput",
    "BeamSearchDecoderOnlyOutput": "GenerateBeamDecoderOnlyOutput",
    "BeamSampleDecoderOnlyOutput": "GenerateBeamDecoderOnlyOutput",
    "BeamSearchEncoderDecoderOutput": "GenerateBeamEncoderDecoderOutput",
    "BeamSampleEncoderDecoderOutput": "GenerateBeamEncoderDecoderOutput",
}
_OUTPUT_UNIONS = {
    "GreedySearchOutput": ("GenerateEncoderDecoderOutput", "GenerateDecoderOnlyOutput"),
    "SampleOutput": ("GenerateEncoderDecoderOutput", "GenerateDecoderOnlyOutput"),
    "ContrastiveSearchOutput": ("GenerateEncoderDecoderOutput", "GenerateDecoderOnlyOutput"),
    "BeamSearchOutput": ("GenerateBeamEncoderDecoderOutput", "GenerateBeamDecoderOnlyOutput"),
    "BeamSampleOutput": ("GenerateBeamEncoderDecoderOutput", "GenerateBeamDecoderOnlyOutput"),
}

_CONSTRAINED = "constrained beam search was removed from transformers in 5.0.0"
_BEAM = "beam scorers were removed when beam search was folded into generate() in 5.0.0"


def _name_entries() -> list[CompatEntry]:
    out: list[CompatEntry] = [
        probe(
            "is_torch_fx_available",
            _UTILS,
            _torch_available,
            "function returning is_torch_available(), as 4.57.6 did",
            "5.0.0",
        ),
        probe(
            "is_torch_sdpa_available",
            _UTILS,
            _torch_available,
            "function returning is_torch_available(), as 4.57.6 did (sdpa works on every supported torch)",
            "5.0.0",
        ),
        probe(
            "is_flash_attn_greater_or_equal_2_10",
            _UTILS,
            _flash_attn_2_10,
            "function answering as 4.57.6: True only if flash_attn>=2.1.0 is installed",
            "deprecated in 5.x (removal announced for 5.8; still present in 5.23.0)",
        ),
        moved(
            "OutputRecorder",
            ("transformers.utils.generic",),
            "transformers.utils.output_capturing:OutputRecorder",
            "5.2.0",
        ),
        moved("PretrainedConfig", ("transformers.modeling_utils",), "transformers.configuration_utils:PreTrainedConfig", "5.0.0"),
        moved("apply_chunking_to_forward", ("transformers.modeling_utils",), "transformers.pytorch_utils:apply_chunking_to_forward", "5.0.0"),
        moved("prune_linear_layer", ("transformers.modeling_utils",), "transformers.pytorch_utils:prune_linear_layer", "5.0.0"),
        moved("no_init_weights", ("transformers.modeling_utils",), "transformers.initialization:no_init_weights", "5.0.0"),
        moved(
            "AutoModelForVision2Seq",
            ("transformers", "transformers.models.auto", "transformers.models.auto.modeling_auto"),
            "transformers.models.auto.modeling_auto:AutoModelForImageTextToText",
            "5.0.0",
        ),
        alias(
            "LossKwargs",
            ("transformers.utils", "transformers.utils.generic"),
            _loss_kwargs,
            "a TypedDict with num_items_in_batch, as defined in 4.53 (used in annotations only)",
            "4.54",
        ),
    ]
    for name, target in _OUTPUT_ALIASES.items():
        out.append(
            alias(
                name,
                _GEN_UTILS,
                lambda target=target: _generation_attr(target),
                f"transformers.generation.utils.{target} (4.57.6 defined it as this alias)",
                "5.0.0",
            )
        )
    for name, members in _OUTPUT_UNIONS.items():
        out.append(
            alias(
                name,
                _GEN_UTILS,
                lambda members=members: _generation_union(*members),
                f"Union[{', '.join(members)}] (4.57.6 defined it as this union)",
                "5.0.0",
            )
        )
    for name in ("Constraint", "PhrasalConstraint", "DisjunctiveConstraint", "ConstraintListState"):
        out.append(
            removed(
                name,
                ("transformers", "transformers.generation", "transformers.generation.beam_constraints"),
                "5.0.0",
                _CONSTRAINED,
            )
        )
    out.append(
        removed(
            "ConstrainedBeamSearchScorer",
            ("transformers", "transformers.generation", "transformers.generation.beam_search"),
            "5.0.0",
            _CONSTRAINED,
        )
    )
    for name in ("BeamScorer", "BeamSearchScorer", "BeamHypotheses"):
        out.append(
            removed(
                name,
                # top-level export already gone in 4.57.0 (older remote code still imports it from there)
                ("transformers", "transformers.generation", "transformers.generation.beam_search"),
                "5.0.0 (top-level export: 4.57.0)",
                _BEAM,
            )
        )
    out.append(
        removed(
            "find_pruneable_heads_and_indices",
            ("transformers.pytorch_utils", "transformers.modeling_utils"),
            "5.0.0",
            "attention-head pruning helpers were removed",
        )
    )
    for name in ("HybridCache", "OffloadedCache"):
        out.append(
            removed(
                name,
                ("transformers", "transformers.cache_utils"),
                "5.0.0",
                "cache classes were consolidated into DynamicCache/StaticCache with per-layer types",
            )
        )
    out.append(
        removed(
            "MambaCache",
            ("transformers", "transformers.models.mamba.modeling_mamba"),
            "5.0.0",
            "MambaCache was folded into the per-model caches",
        )
    )
    return out


# transformers 4.57.6 ``PretrainedConfig.__init__``: attributes it set on every config, with their defaults,
# that 5.x ``PreTrainedConfig`` no longer defines.
CONFIG_DEFAULTS_4X: dict[str, Any] = {
    "torchscript": False,
    "pruned_heads": {},
    "tie_word_embeddings": True,
    "is_decoder": False,
    "cross_attention_hidden_size": None,
    "add_cross_attention": False,
    "tie_encoder_decoder": False,
    "finetuning_task": None,
    "task_specific_params": None,
    "tokenizer_class": None,
    "prefix": None,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "_commit_hash": None,
    "tf_legacy_loss": False,
    "use_bfloat16": False,
}
# 4.57.6 ``PretrainedConfig._get_global_generation_defaults()``, set on every config by ``__init__``
GENERATION_DEFAULTS_4X: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "num_return_sequences": 1,
    "output_scores": False,
    "return_dict_in_generate": False,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
}


def _config_entries() -> list[CompatEntry]:
    out = [config_default(name, value) for name, value in CONFIG_DEFAULTS_4X.items()]
    out += [
        config_default(name, value, note="a value passed in the config (5.x drops it) is kept instead, as 4.x kept it")
        for name, value in GENERATION_DEFAULTS_4X.items()
    ]
    return out


# Behaviours of the layer, recorded like entries so plans and signature headers can name them.
BEHAVIORS: list[CompatEntry] = [
    CompatEntry(
        id="compat.removed_module",
        kind="behavior",
        what="transformers modules 5.x deleted (transformers.generation.beam_search, .beam_constraints)",
        removed_in="5.0.0",
        served="a synthetic module, for a window's thread only, holding just the registry's names for it "
        "(removed from sys.modules when the window closes)",
    ),
    CompatEntry(
        id="config.generation_kwargs",
        kind="behavior",
        what="generation parameters passed to a config (4.x stored them as attributes)",
        removed_in="5.0.0",
        served="on remote config classes the values 5.x PreTrainedConfig drops are stored as attributes, as 4.x did",
    ),
    CompatEntry(
        id="model.tied_weights_keys",
        kind="behavior",
        what="4.x weight tying: output embeddings tied to input embeddings when tie_word_embeddings "
        "(a list or None _tied_weights_keys)",
        removed_in="5.0.0",
        served="on remote models whose config ties embeddings, _tied_weights_keys becomes the 5.x mapping "
        "{output embeddings weight: input embeddings weight} (empty when the model has no output embeddings)",
    ),
    CompatEntry(
        id="meta.cpu_scalars",
        kind="behavior",
        what="value-dependent __init__ (.item()/.tolist()/bool() on tensors made during a meta build)",
        removed_in="5.0.0 (meta-device init)",
        served="opt-in (cpu_scalars=True / HYBRIDLOAD_CPU_SCALARS=1): small tensors made during the build get a "
        "CPU shadow computed alongside; value reads on meta tensors are answered from it; parameters and "
        "buffers stay on meta",
    ),
]

DEFAULT_ENTRIES: list[CompatEntry] = _name_entries() + _config_entries() + BEHAVIORS
