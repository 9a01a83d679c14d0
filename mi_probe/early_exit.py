"""Early-exit (logit-lens) accuracy: how well each layer's residual stream predicts the target.

For layer l (0 = the embedding output, l = 1..L the output of block l) and each example,
take the residual stream h_l at the **last prompt token**, apply the model's final norm and
LM head, ``logits_l = lm_head(final_norm(h_l))``, and score the arg-max against the first
target token. At l = L this is the model's own prediction (for models whose head does no
more than norm + linear map; extra logit scaling or soft-capping is not applied).

The residual stream comes from :func:`mi_probe.extract.extract_states` (forward hooks on
the blocks, last-prompt-token rows only, the LM head never run on the whole sequence).
Hooks already on the blocks, such as a residual scaling from :mod:`mi_probe.rescale`, run
first, so the lens sees the scaled stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .adapters import ModelAdapter, find_adapter
from .errors import CheckpointError
from .extract import extract_states
from .probe_data import ProbeExample
from .rescale_train import model_max_length

_ROWS = 256


@dataclass
class EarlyExitResult:
    """Per-layer logit-lens scores on one data set.

    Attributes:
        layers: 0..L (0 = embedding output).
        accuracy: fraction of examples whose first target token is the arg-max, per layer.
        loss: mean cross-entropy of the first target token (nats), per layer.
        examples: number of examples.
    """

    layers: list[int]
    accuracy: list[float]
    loss: list[float]
    examples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def early_exit(model: Any, examples: Sequence[ProbeExample], adapter: ModelAdapter | None = None,
               batch_size: int = 32) -> EarlyExitResult:
    """Logit-lens accuracy and loss of every layer on ``examples`` (see module doc)."""
    import torch
    import torch.nn.functional as F

    adapter = adapter or find_adapter(model)
    head = adapter.unembedding()
    if head is None:
        raise CheckpointError("the model has no LM head, so early-exit accuracy is undefined")
    norm = adapter.final_norm() or torch.nn.Identity()
    max_len = model_max_length(model)
    prompts = [ex.input_ids[-max_len:] if max_len else ex.input_ids for ex in examples]
    states = extract_states(model, prompts, adapter=adapter, final_norm=False,
                            batch_size=batch_size)
    param = next(head.parameters())
    targets = torch.tensor([ex.target_ids[0] for ex in examples], device=param.device)
    accuracy, loss = [], []
    with torch.no_grad():
        for layer in range(adapter.num_layers + 1):
            right, total = 0, 0.0
            for lo in range(0, len(examples), _ROWS):  # (rows, vocab) logits at a time
                h = torch.from_numpy(states.layers[layer][lo:lo + _ROWS])
                logits = head(norm(h.to(param.device, param.dtype))).float()
                y = targets[lo:lo + _ROWS]
                right += int((logits.argmax(-1) == y).sum())
                total += float(F.cross_entropy(logits, y, reduction="sum"))
            accuracy.append(right / len(examples))
            loss.append(total / len(examples))
    return EarlyExitResult(list(range(adapter.num_layers + 1)), accuracy, loss, len(examples))
