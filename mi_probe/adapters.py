"""Model adapters: where a causal LM keeps its blocks, embedding, final norm and LM head.

Adapters are registered by plugins (``register_adapters``) and chosen for a loaded model by
the first-result hook ``select_adapter``. :func:`find_adapter` tries, in order: a user
override (``blocks="model.layers"``), the registered adapters, a structural search for the
block list (the longest ``nn.ModuleList`` whose length equals ``config.num_hidden_layers``),
and otherwise raises :class:`CheckpointError`. It never falls back silently: the adapter
records how it was found in ``adapter.found_by``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .errors import CheckpointError
from .registry import get_registry

_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


def get_submodule(model: Any, path: str) -> Any:
    """``model.get_submodule(path)`` with a readable error."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise CheckpointError(
            f"the model has no submodule {path!r}; pass the dotted path of its block list "
            "with --blocks (e.g. --blocks model.layers)"
        ) from None


class ModelAdapter:
    """Knows the layout of one family of causal LMs.

    Subclasses set ``name``, ``model_types`` (the ``config.model_type`` values handled) and
    the dotted paths below; ``final_norm_path`` may be None when the model has none.
    ``parallel_residual`` is True for blocks computing x + attn(ln1 x) + mlp(ln2 x)
    (GPT-NeoX), which matters for how a residual scale is applied.
    """

    name: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    blocks_path: ClassVar[str] = ""
    final_norm_path: ClassVar[str | None] = None

    def __init__(self, model: Any, blocks_path: str | None = None, found_by: str = "registry"):
        self.model = model
        self.blocks_path = blocks_path or type(self).blocks_path
        self.found_by = found_by
        blocks = self.blocks()
        n_cfg = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if n_cfg is not None and len(blocks) != n_cfg:
            raise CheckpointError(
                f"{self.blocks_path!r} holds {len(blocks)} modules but config.num_hidden_layers "
                f"is {n_cfg}; pass the right block list with --blocks"
            )

    @property
    def num_layers(self) -> int:
        """Number of residual blocks L."""
        return len(self.blocks())

    @property
    def parallel_residual(self) -> bool:
        return bool(getattr(self.model.config, "use_parallel_residual", False))

    def blocks(self) -> Any:
        """The ``nn.ModuleList`` of residual blocks, in order."""
        blocks = get_submodule(self.model, self.blocks_path)
        if not hasattr(blocks, "__len__") or len(blocks) == 0:
            raise CheckpointError(f"{self.blocks_path!r} is not a non-empty list of blocks")
        return blocks

    def embedding(self) -> Any:
        """The input token embedding (``nn.Embedding``; weight shape (vocab, d_model))."""
        return self.model.get_input_embeddings()

    def unembedding(self) -> Any:
        """The LM head (maps d_model -> vocab), or None for a bare base model."""
        get = getattr(self.model, "get_output_embeddings", None)
        return get() if get is not None else None

    def final_norm(self) -> Any:
        """The norm applied after the last block, or None."""
        if self.final_norm_path is not None:
            return get_submodule(self.model, self.final_norm_path)
        return _guess_final_norm(self.model, self.blocks_path)


class GenericAdapter(ModelAdapter):
    """Adapter for a block list found by structure or given by the user."""

    name = "generic"


def _guess_final_norm(model: Any, blocks_path: str) -> Any:
    parent_path = blocks_path.rsplit(".", 1)[0] if "." in blocks_path else ""
    parent = model.get_submodule(parent_path) if parent_path else model
    for name in _FINAL_NORM_NAMES:
        mod = getattr(parent, name, None)
        if mod is not None:
            return mod
    return None


def structural_block_search(model: Any) -> str | None:
    """Dotted path of the longest ``nn.ModuleList`` of length ``config.num_hidden_layers``."""
    import torch.nn as nn

    n_cfg = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best: tuple[int, str] | None = None
    for path, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            if n_cfg is not None and len(mod) != n_cfg:
                continue
            if best is None or len(mod) > best[0]:
                best = (len(mod), path)
    return best[1] if best else None


def find_adapter(model: Any, blocks: str | None = None) -> ModelAdapter:
    """The adapter for a loaded model: user override, registered adapters, structure."""
    if blocks:
        return GenericAdapter(model, blocks_path=blocks, found_by="--blocks")
    config = getattr(model, "config", None)
    adapter = get_registry().pm.hook.select_adapter(model=model, config=config)
    if adapter is not None:
        return adapter
    path = structural_block_search(model)
    if path is not None:
        return GenericAdapter(model, blocks_path=path, found_by="structural search")
    model_type = getattr(config, "model_type", "?")
    raise CheckpointError(
        f"mi-probe does not know where the blocks of a {model_type!r} model are and found no "
        "nn.ModuleList matching config.num_hidden_layers; pass --blocks PATH (the dotted "
        "path of the block list) or install an adapter plugin"
    )
