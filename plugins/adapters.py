"""Built-in model adapters: GPT-2, the Llama family, GPT-NeoX/Pythia and OPT."""

from __future__ import annotations

from mi_probe.adapters import ModelAdapter
from mi_probe.hookspecs import hookimpl


class GPT2Adapter(ModelAdapter):
    name = "gpt2"
    model_types = ("gpt2",)
    blocks_path = "transformer.h"
    final_norm_path = "transformer.ln_f"


class LlamaFamilyAdapter(ModelAdapter):
    """Llama and its kin: decoder layers at ``model.layers``, final RMSNorm ``model.norm``."""

    name = "llama-family"
    model_types = (
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
        "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "granite", "cohere", "stablelm",
        "smollm3", "starcoder2", "exaone",
    )
    blocks_path = "model.layers"
    final_norm_path = "model.norm"


class GPTNeoXAdapter(ModelAdapter):
    name = "gpt-neox"
    model_types = ("gpt_neox",)
    blocks_path = "gpt_neox.layers"
    final_norm_path = "gpt_neox.final_layer_norm"


class OPTAdapter(ModelAdapter):
    name = "opt"
    model_types = ("opt",)
    blocks_path = "model.decoder.layers"
    final_norm_path = "model.decoder.final_layer_norm"


BUILTIN_ADAPTERS = (GPT2Adapter, LlamaFamilyAdapter, GPTNeoXAdapter, OPTAdapter)


@hookimpl
def register_adapters(register):
    for cls in BUILTIN_ADAPTERS:
        register(cls)


@hookimpl
def select_adapter(model, config):
    model_type = getattr(config, "model_type", None)
    for cls in BUILTIN_ADAPTERS:
        if model_type in cls.model_types:
            return cls(model)
    return None
