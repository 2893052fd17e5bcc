"""Masks: which weights are pruned, global magnitude pruning, layer-matched random masks.

A mask maps the name of each prunable weight (conv and linear `.weight`, and
attention's input projections; never biases or norms, never one that
spec.pruning.ignoreLayers keeps dense) to a bool tensor of its shape; True = kept.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from lth_trainer.store import TrainerError

Mask = dict[str, torch.Tensor]


WEIGHTED = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear
"""Modules whose `.weight` is pruned (attention's output projection is a Linear too)."""


def _weights(module: nn.Module) -> list[str]:
    """The prunable weights of one module, by their names in it: a conv's or linear's `weight`;
    attention's input projections (`in_proj_weight`, or `q/k/v_proj_weight`), which are linear
    weights held by nn.MultiheadAttention itself."""
    if isinstance(module, WEIGHTED):
        return ["weight"]
    if isinstance(module, nn.MultiheadAttention):
        return [name for name, _ in module.named_parameters(recurse=False) if name.endswith("_weight")]
    return []


def _ignored(weight: str, patterns: Sequence[str]) -> set[str]:
    """The patterns that keep `weight` dense: those matching its own name (as --list-prunable
    prints it), its module's, or a module holding that one (`layer1` keeps all of layer1)."""
    parts = weight.split(".")
    scopes = [weight, *(".".join(parts[:n]) for n in range(1, len(parts)))]
    return {p for p in patterns if any(fnmatch.fnmatchcase(scope, p) for scope in scopes)}


def prunable_names(model: nn.Module, ignore_layers: list[str]) -> list[str]:
    """Names of the prunable weights, sorted (the order global pruning ranks them in): conv and
    linear weights, attention's included, never biases or norms, but those spec.pruning.ignoreLayers
    keeps dense. A pattern that keeps no weight dense is refused: it names nothing in this
    network, and a run would prune what its author meant to keep."""
    weights = sorted(
        f"{module_name}.{weight}"
        for module_name, module in model.named_modules()
        for weight in _weights(module)
    )
    ignored = {name: _ignored(name, ignore_layers) for name in weights}
    used = set().union(*ignored.values())
    unused = [p for p in ignore_layers if p not in used]
    if unused:
        tops = sorted({name.split(".")[0] for name in weights})
        raise TrainerError(
            f"spec.pruning.ignoreLayers: {', '.join(map(repr, unused))} keeps none of the prunable weights "
            f"of {type(model).__name__} (patterns match a weight's name, its module's or one above it; "
            f"its top-level modules: {', '.join(tops)}; lth validate --list-prunable prints every weight)"
        )
    return [name for name in weights if not ignored[name]]


def full_mask(model: nn.Module, ignore_layers: list[str]) -> Mask:
    params = dict(model.named_parameters())
    return {
        name: torch.ones_like(params[name], dtype=torch.bool) for name in prunable_names(model, ignore_layers)
    }


def kept(mask: Mask) -> int:
    return sum(int(m.sum()) for m in mask.values())


def size(mask: Mask) -> int:
    return sum(m.numel() for m in mask.values())


def density(mask: Mask) -> float:
    return kept(mask) / size(mask)


def prune_global_magnitude(weights: dict[str, torch.Tensor], mask: Mask, fraction: float) -> Mask:
    """Remove round(fraction * kept) of the kept weights with the smallest |w|, across
    all layers at once. Ties break by position (over the sorted names, as a stable sort
    would), so the same weights always give the same mask. The cut is found by selection
    (kthvalue), not a sort: 8x faster on a CPU for VGG's 129M weights."""
    names = sorted(mask)
    magnitudes = torch.cat([weights[n].detach().float().abs().flatten().cpu() for n in names])
    alive = torch.cat([mask[n].flatten().cpu() for n in names])
    remove = round(fraction * int(alive.sum()))
    new_alive = alive.clone()
    if remove > 0:
        candidates = magnitudes if bool(alive.all()) else magnitudes[alive]
        cut = torch.kthvalue(candidates, remove).values  # the largest magnitude removed
        below = alive & (magnitudes < cut)
        ties = torch.nonzero(alive & (magnitudes == cut)).flatten()
        new_alive[below] = False
        new_alive[ties[: remove - int(below.sum())]] = False  # the first ones by position
    result: Mask = {}
    start = 0
    for n in names:
        count = mask[n].numel()
        result[n] = new_alive[start : start + count].reshape(mask[n].shape)
        start += count
    return result


PruningStrategy = Callable[[dict[str, torch.Tensor], Mask, float], Mask]
"""(weights, the mask so far, fraction of its kept weights to remove) -> the next mask."""
STRATEGIES: dict[str, PruningStrategy] = {"global-magnitude": prune_global_magnitude}
"""spec.pruning.strategy -> how a level's mask is pruned from the previous level's weights."""


def gradient_masks(params: Mapping[str, torch.Tensor], mask: Mask) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, float 0/1 keep) of every layer with a pruned entry (a dense level pays nothing).
    Each keep has its weight's device and strides (the layout autograd gives the gradient), so
    `mask_gradients` runs as one fused kernel per group even with channels_last weights."""
    pairs = []
    for name, keep in mask.items():
        if not keep.all():
            weight = params[name]
            pairs.append((weight, torch.empty_like(weight, dtype=torch.float32).copy_(keep)))
    return pairs


def mask_gradients(weights: Sequence[torch.Tensor], keeps: Sequence[torch.Tensor]) -> None:
    """Zero the gradients of pruned entries (keeps: float 0/1 on the weights' device). Before
    every optimizer step, so the weight, its momentum and its Adam moments stay exactly 0
    (weight decay of a zero weight is zero)."""
    torch._foreach_mul_([w.grad for w in weights], keeps)  # type: ignore[arg-type, misc]


def random_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask that keeps as many weights in every layer as `mask` does (a uniform
    random mask would starve small layers such as the classifier)."""
    return {n: random_mask(mask[n].shape, int(mask[n].sum()), generator) for n in sorted(mask)}


def random_within(allowed: Mask, mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask inside `allowed` that keeps as many weights in every layer as `mask` does."""
    result: Mask = {}
    for n in sorted(mask):
        where = allowed[n].flatten().nonzero().flatten()
        flat = torch.zeros(mask[n].numel(), dtype=torch.bool)
        flat[where[torch.randperm(len(where), generator=generator)[: int(mask[n].sum())]]] = True
        result[n] = flat.reshape(mask[n].shape)
    return result


def random_mask(shape: torch.Size, kept: int, generator: torch.Generator) -> torch.Tensor:
    """A bool mask of `shape` that keeps `kept` entries drawn uniformly at random."""
    flat = torch.zeros(shape.numel(), dtype=torch.bool)
    flat[torch.randperm(flat.numel(), generator=generator)[:kept]] = True
    return flat.reshape(shape)


def check_mask(mask: Mask, model: nn.Module, ignore_layers: list[str], source: str) -> None:
    """The mask fits the model: same names and shapes. `source` names the file."""
    prunable = set(prunable_names(model, ignore_layers))
    expected = {n: p.shape for n, p in model.named_parameters() if n in prunable}
    if set(mask) != set(expected):
        missing, extra = sorted(set(expected) - set(mask)), sorted(set(mask) - set(expected))
        raise TrainerError(f"{source}: mask does not fit the model (missing {missing}, unexpected {extra})")
    for n, shape in expected.items():
        check_layer(mask[n], shape, n, source)


def check_layer(keep: torch.Tensor, shape: torch.Size, name: str, source: str) -> None:
    """One layer's mask fits its weight: bool, of the weight's shape. `source` names the file."""
    if keep.dtype != torch.bool or keep.shape != shape:
        raise TrainerError(
            f"{source}: mask {name} is {keep.dtype} {tuple(keep.shape)}, expected bool {tuple(shape)}"
        )
