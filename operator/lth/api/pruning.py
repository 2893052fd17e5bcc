"""spec.pruning: iterative magnitude pruning with rewinding, its stop rules, controls and search."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from lth.api.branches import ControlBranch
from lth.api.search import METHODS
from lth.api.search.base import SEARCH_LEVEL as SEARCH_LEVEL
from lth.api.search.base import Method

if TYPE_CHECKING:
    from lth.api.spec import RunSpec
from lth.api.wire import (
    REWIND_PATTERN,
    ApiModel,
)


class StopRules(ApiModel):
    """When IMP stops before the level budget."""

    target_density: float | None = Field(
        None, gt=0, le=1, description="Stop once a level's density is at or below this fraction."
    )
    max_top1_drop: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Stop after the first level whose top-1 is more than this many points below dense.",
    )


class ControlsSpec(ApiModel):
    """Control branches that show whether a ticket is a ticket."""

    branches: list[ControlBranch] = Field(
        default_factory=list,
        json_schema_extra={"uniqueItems": True},
        description=(
            "random-reinit: the level's mask with a fresh random init; random-prune: a random "
            "mask with the same density in every layer, trained from the rewind weights."
        ),
    )
    levels: list[int] | None = Field(
        None,
        json_schema_extra={"uniqueItems": True},
        description="Pruned levels (>= 1) that get the control branches; every level when absent.",
    )

    @field_validator("levels")
    @classmethod
    def _positive_levels(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(level < 1 for level in value):
            raise ValueError("control levels are pruned levels, >= 1")
        return value


StabilityPart = Literal["a", "b", "path"]
"""The instability analysis' jobs at one rewind point: its two copies, and the linear path between them."""
STABILITY_PARTS: tuple[StabilityPart, ...] = ("a", "b", "path")


class StabilitySpec(ApiModel):
    """rewindTo: auto: the rewind point chosen by instability analysis (Frankle, Dziugaite, Roy,
    Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis"). After level 0,
    for candidate points k, two copies train from theta_k with different data orders; the
    network is stable at k when the top-1 error along the straight line between them rises by
    at most `threshold` points above the mean of its ends. Levels 1, 2, ... rewind to the
    earliest stable k (the ladder is searched by bisection: instability falls as k grows)."""

    points: list[Annotated[float, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description=(
            "Candidate rewind points, in epochs (0.25: a quarter epoch), strictly increasing; default "
            "0, then 0.25 epochs doubling up to maxEpochs."
        ),
    )
    max_epochs: float | None = Field(
        None,
        gt=0,
        description="The default ladder's last point, at most this many epochs (default: a quarter of it).",
    )
    threshold: float = Field(
        2.0,
        ge=0,
        le=100,
        description=(
            "Stable: the instability (the largest top-1 error on the path, minus the mean of its two "
            "ends' errors), in points, at most this (the paper's 2, about the noise of one run)."
        ),
    )
    interpolation_points: int = Field(
        11, ge=3, le=101, description="Networks evaluated along the path, its two ends included."
    )
    horizon_epochs: int | None = Field(
        None,
        ge=1,
        description=(
            "Epoch of the schedule the copies train to (default: its end, as the paper does); fewer "
            "costs less but measures the stability of a shorter run."
        ),
    )
    density: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "Density of the network whose stability is measured. 1 (the default): the dense network "
            "of level 0, which is all the search has before level 1 and what the copies can train "
            "without a mask. The paper's IMP result concerns sparse subnetworks at the density they "
            "are pruned to, which may become stable later than the dense network: below 1, the "
            "copies train the one-shot magnitude mask of level 0's final weights at this density (a "
            "stand-in for IMP's mask there, which needs the rewind point first), at the same cost."
        ),
    )

    @field_validator("points")
    @classmethod
    def _increasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and value != sorted(set(value)):
            raise ValueError("points must be strictly increasing")
        return value

    def ladder(self, epochs: int) -> list[float]:
        """The candidate points, epochs: `points`, else 0 and 0.25 doubling up to maxEpochs
        (default a quarter of the `epochs` of the schedule)."""
        if self.points is not None:
            return list(self.points)
        cap = self.max_epochs if self.max_epochs is not None else epochs / 4
        ladder, point = [0.0], 0.25
        while point <= cap:
            ladder.append(point)
            point *= 2
        return ladder

    def horizon(self, epochs: int) -> int:
        """The epoch the copies train to."""
        return self.horizon_epochs if self.horizon_epochs is not None else epochs


def stability_problems(spec: RunSpec) -> list[tuple[str, str]]:
    """(field path, problem) of what rewindTo auto needs; its settings apply only with it."""
    pruning, path = spec.pruning, "spec.pruning.stability"
    stability, epochs = pruning.stability, spec.training.epochs
    if not pruning.auto_rewind:
        return [(path, "applies to spec.pruning.rewindTo auto only")] if stability != StabilitySpec() else []
    problems = []
    if pruning.rewind != "weights":
        problems.append(
            (
                "spec.pruning.rewindTo",
                "auto measures the stability of the weights theta_k that weight rewinding trains "
                "from: needs spec.pruning.rewind weights",
            )
        )
    if spec.ticket is not None:
        problems.append(("spec.pruning.rewindTo", "auto: a transfer run has no rewind point to choose"))
    elif spec.level_budget == 0:
        problems.append(("spec.pruning.rewindTo", "auto chooses where pruned levels rewind to: none run"))
    horizon = stability.horizon(epochs)
    if horizon > epochs:
        problems.append((f"{path}.horizonEpochs", f"{horizon} is past the schedule's {epochs} epochs"))
    ladder = stability.ladder(epochs)
    if ladder[-1] >= min(horizon, epochs):
        where = f"{path}.points" if stability.points is not None else f"{path}.maxEpochs"
        problems.append(
            (
                where,
                f"the last candidate point, {ladder[-1]:g} epochs, leaves the copies nothing to train "
                f"before epoch {min(horizon, epochs)}",
            )
        )
    if stability.points is not None and stability.max_epochs is not None:
        problems.append((f"{path}.maxEpochs", "caps the default ladder; give points or maxEpochs"))
    return problems


def instability(errors: list[float]) -> float:
    """The error barrier of a linear path (errors at evenly spaced points, both ends included):
    its largest error minus the mean of its two ends' errors; 0 for a network with itself."""
    return max(errors) - (errors[0] + errors[-1]) / 2


def epochs_text(epochs: float) -> str:
    """A rewind point of `epochs` epochs as spec.pruning.rewindTo writes it: 0, 2ep, 0.25ep."""
    return "0" if epochs == 0 else f"{epochs:g}ep"


def step_of(epochs: float, steps_per_epoch: int) -> int:
    """The optimizer step `epochs` epochs in (the trainer's, for a rewind point and a ladder's)."""
    return round(epochs * steps_per_epoch)


SearchMethod = Literal["imp", "gradual", "short-imp"]


class SearchSpec(ApiModel):
    """How the mask is searched for (spec.pruning.search). The final ticket is always trained
    in full from the rewind point, like an IMP level, beside the same control branches."""

    method: SearchMethod = Field(
        "imp",
        description=(
            "imp: plain IMP, one full training per level (level L prunes level L-1's final weights); "
            "gradual: level 0 trains the dense network, level 1 (the search) trains only the last "
            "search.epochs epochs of the schedule from level 0's final weights while pruning them "
            "step by step (IMP's densities at spec.pruning.fraction, global magnitude) down to the "
            "sparsest of search.densities, and levels 2, 3, ... train one ticket per density in full "
            "from the rewind point with the mask the search had at that density; "
            "short-imp: IMP with large steps and short retraining: levels 1 to S train only "
            "search.epochs epochs from the rewind point, each with the mask pruned from the level "
            "before (IMP's densities at spec.pruning.fraction, and search.densities), then one level "
            "per ticket trains its mask in full."
        ),
    )
    densities: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description=(
            "gradual, short-imp: densities of the tickets trained in full, in decreasing order (the "
            "levels after the search); default: the density spec.pruning.levels reaches at "
            "spec.pruning.fraction."
        ),
    )
    epochs: int = Field(
        2,
        ge=1,
        le=10000,
        description=(
            "gradual: epochs of the search run; prune steps are spread evenly over its first three "
            "quarters, the last quarter trains the sparsest mask. short-imp: epochs of each search level."
        ),
    )
    start: Literal["trained", "rewind"] = Field(
        "trained",
        description=(
            "gradual: where the search starts. trained: level 0's final weights, over the schedule's "
            "last search.epochs epochs (prune and fine-tune); rewind: the rewind point, over the "
            "search.epochs epochs of the schedule from there (the mask forms while the network first "
            "learns, as early-bird tickets do)."
        ),
    )

    @field_validator("densities")
    @classmethod
    def _decreasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and value != sorted(set(value), reverse=True):
            raise ValueError("densities must be strictly decreasing")
        return value


class PruningSpec(ApiModel):
    """Iterative magnitude pruning with rewinding."""

    strategy: Literal["global-magnitude"] = Field(
        "global-magnitude",
        description="Remove the smallest-magnitude weights across all conv and linear layers.",
    )
    fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of the remaining weights removed at each level."
    )
    levels: int | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "Pruned levels after level 0 (the level budget): default 10 for a search, 0 for a "
            "transfer run (spec.ticket), which then trains the transferred ticket once."
        ),
    )
    rewind_to: str = Field(
        "6ep",
        pattern=REWIND_PATTERN,
        description=(
            "Rewind point: 6ep or 0.5ep (epochs), 500it (steps), 0 (the initial weights), or auto: "
            "the earliest point where the network is stable, measured after level 0 by instability "
            "analysis (spec.pruning.stability)."
        ),
    )
    rewind: Literal["weights", "learning-rate"] = Field(
        "weights",
        description=(
            "weights: surviving weights reset to the rewind point, schedule resumes there; "
            "learning-rate: keep the trained weights, replay the whole schedule."
        ),
    )
    ignore_layers: list[str] = Field(
        default_factory=list,
        description=(
            "Glob patterns of weights or modules never pruned (a module's keeps all of it), e.g. conv1, "
            "layer1, fc.weight; one that keeps nothing of the network dense is refused."
        ),
    )
    match_tolerance: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Top-1 points below dense that still count as matching (picks the best ticket).",
    )
    stop: StopRules = Field(default_factory=StopRules, description="Early stop rules.")
    controls: ControlsSpec = Field(default_factory=ControlsSpec, description="Control branches.")
    search: SearchSpec = Field(
        default_factory=SearchSpec,
        description="How the mask is searched for: plain IMP (default) or a cheaper gradual search.",
    )
    stability: StabilitySpec = Field(
        default_factory=StabilitySpec,
        description="rewindTo auto: the candidate points and how stability is measured.",
    )

    @property
    def auto_rewind(self) -> bool:
        """rewindTo auto: the instability analysis runs between level 0 and level 1."""
        return self.rewind_to == "auto"

    @property
    def method(self) -> Method:
        """The search method's entry (lth.api.search): its levels, densities and level plans."""
        return METHODS[self.search.method]

    @property
    def searching(self) -> bool:
        """A search method other than plain IMP: search levels, then one full level per ticket."""
        return self.method.searches

    def search_levels(self) -> int:
        """Levels between the dense level 0 and the first ticket level."""
        return self.method.search_levels(self)

    def ticket_densities(self) -> list[float]:
        """gradual: the densities of the tickets trained in full (levels 2, 3, ...)."""
        if self.search.densities is not None:
            return list(self.search.densities)
        return [self.density(self.levels if self.levels is not None else 10)]

    def search_densities(self) -> list[float]:
        """gradual: the density after each prune step of the search run, decreasing: IMP's
        densities at `fraction` down to the sparsest ticket (but those within fraction / 2 of a
        ticket's, relative to it), and every ticket's density."""
        targets = self.ticket_densities()
        near = self.fraction / 2
        steps = {self.density(level) for level in range(1, self.levels_to_reach(targets[-1]) + 1)}
        steps = {d for d in steps if d > targets[-1] and all(abs(d - t) > near * t for t in targets)}
        return sorted(steps | set(targets), reverse=True)

    def level_density(self, level: int) -> float:
        """Expected density of main level `level` (the search method's)."""
        return self.method.level_density(self, level)

    def is_ticket_level(self, level: int) -> bool:
        """A level whose network trains in full from the rewind point (a ticket candidate):
        every pruned IMP level; a search's levels after its search levels."""
        return self.method.is_ticket_level(self, level)

    def density(self, level: int, start: float = 1.0) -> float:
        """Expected density after `level` levels from `start`: start * (1 - fraction) ** level."""
        return start * (1.0 - self.fraction) ** level

    def levels_to_reach(self, density: float) -> int:
        """Smallest level whose expected density is at or below `density`."""
        return max(0, math.ceil(math.log(density) / math.log(1.0 - self.fraction) - 1e-9))

    def rewind_point(self) -> tuple[float, Literal["ep", "it"]]:
        """(amount, unit) of a set rewind point; rewindTo auto has none until the analysis chose
        (lth.api.workload: the trainer's --rewind-to)."""
        if self.rewind_to == "0":
            return 0, "it"
        match = re.fullmatch(r"([0-9.]+)(ep|it)", self.rewind_to)
        assert match, f"rewindTo {self.rewind_to} is not a point"  # the pattern, and auto resolved
        if match.group(2) == "ep":
            return float(match.group(1)), "ep"
        return int(match.group(1)), "it"
