"""A ticket found by another run, fitted to this run's (target) model: level 0 of a transfer run.

The body (every layer but the classifier head) comes from the ticket bit for bit: its
mask and its rewind or final weights, BatchNorm statistics included, so the target
trains exactly the subnetwork that was found. The head is the ticket's (same classes),
or the target model's fresh one: dense, or pruned at random to the ticket head's density.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth.api import RunSpec
from lth.storage.tickets import TicketError, TicketFiles, inspect
from lth_trainer import pruning
from lth_trainer.models import head_name
from lth_trainer.pruning import Mask
from lth_trainer.store import TrainerError, load_tensors


@dataclass(frozen=True)
class Transferred:
    mask: Mask
    weights: dict[str, torch.Tensor]
    origin: dict[str, object]


def check_description(description: Path, arch: str) -> None:
    """ticket.json: every file's checksum, and the architecture it was found on."""
    try:
        info = inspect(description.parent)
    except TicketError as error:
        raise TrainerError(str(error)) from error
    if info.get("architecture") != arch:
        raise TrainerError(
            f"{description}: a {info.get('architecture')} ticket, but spec.model.arch is {arch}"
        )


def transfer(spec: RunSpec, ticket: TicketFiles, model: nn.Module, head_seed: int) -> Transferred:
    """The ticket's mask and weights for `model` (freshly built with spec.training.seed);
    `head_seed` draws the random mask of a re-initialised, pruned head."""
    settings = spec.ticket
    assert settings is not None, "a transfer run"
    arch = spec.model.arch
    if ticket.description is not None:
        check_description(ticket.description, arch)
    source = ticket.rewind if settings.weights == "rewind" else ticket.final
    found = load_tensors(ticket.mask, "ticket mask")
    loaded = load_tensors(source, f"ticket weights (spec.ticket.weights {settings.weights})")
    head = head_name(model)
    weights = fit_weights(loaded, dict(model.state_dict()), head, settings.head == "reinit", source, arch)
    ignore = spec.pruning.ignore_layers
    shapes = {name: keep.shape for name, keep in pruning.full_mask(model, ignore).items()}
    head_weight = f"{head}.weight"
    body = set(shapes) - {head_weight}
    for name in sorted(body | (set(found) - {head_weight})):
        if name not in found:
            raise TrainerError(
                f"{ticket.mask}: no mask for layer {name}, a prunable weight of the target {arch} "
                f"(spec.pruning.ignoreLayers {ignore})"
            )
        if name not in body:
            raise TrainerError(
                f"{ticket.mask}: a mask for layer {name}, which the target {arch} does not prune "
                f"(spec.pruning.ignoreLayers {ignore})"
            )
        pruning.check_layer(found[name], shapes[name], name, str(ticket.mask))
    mask = {name: found[name] for name in sorted(body)}
    origin: dict[str, object] = {
        "mask": f"ticket {ticket.mask}",
        "weights": f"ticket {source} ({settings.weights} weights)",
        "head": f"{settings.head}, not pruned (spec.pruning.ignoreLayers)",
    }
    if head_weight in shapes:
        mask[head_weight], origin["head"] = head_mask(
            spec, head_weight, found.get(head_weight), shapes[head_weight], head_seed, ticket.mask
        )
    return Transferred(mask, weights, origin)


def head_mask(
    spec: RunSpec, name: str, found: torch.Tensor | None, shape: torch.Size, seed: int, source: Path
) -> tuple[torch.Tensor, str]:
    """The mask of the head's weight `name`, and where it came from. `found`: the ticket's
    (None when the source run did not prune its head, which is then dense)."""
    settings = spec.ticket
    assert settings is not None, "a transfer run"
    if settings.head == "keep":
        keep = found if found is not None else torch.ones(shape, dtype=torch.bool)
        pruning.check_layer(keep, shape, name, str(source))
        return keep, "kept from the ticket"
    fresh = f"fresh init (seed {spec.training.seed})"
    if not settings.prune_head or found is None:
        return torch.ones(shape, dtype=torch.bool), f"{fresh}, dense"
    kept = round(int(found.sum()) / found.numel() * shape.numel())
    keep = pruning.random_mask(shape, kept, torch.Generator().manual_seed(seed))
    return (
        keep,
        f"{fresh}, a random mask of the ticket head's density ({kept} of {shape.numel()}, seed {seed})",
    )


def fit_weights(
    loaded: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    head: str,
    reinit: bool,
    source: Path,
    arch: str,
) -> dict[str, torch.Tensor]:
    """The ticket's tensor for every entry of the target's state_dict; the target's own
    for the head when it is re-initialised."""
    missing, extra = sorted(set(target) - set(loaded)), sorted(set(loaded) - set(target))
    if missing or extra:
        raise TrainerError(
            f"{source}: the ticket's weights do not fit the target {arch} "
            f"(missing {missing}, unexpected {extra})"
        )
    ticket_classes, target_classes = loaded[f"{head}.weight"].shape[0], target[f"{head}.weight"].shape[0]
    if not reinit and ticket_classes != target_classes:
        raise TrainerError(
            f"spec.ticket.head: keep needs the ticket's classes, but the ticket has {ticket_classes} "
            f"classes and this run {target_classes} (head: reinit trains a fresh head)"
        )
    fresh = {key for key in target if reinit and key.startswith(f"{head}.")}
    for key, tensor in target.items():
        if key not in fresh and loaded[key].shape != tensor.shape:
            raise TrainerError(
                f"{source}: {key} is {tuple(loaded[key].shape)}, the target {arch}'s is {tuple(tensor.shape)}"
            )
    return {key: target[key] if key in fresh else loaded[key] for key in target}
