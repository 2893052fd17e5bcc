"""`python -m lth_trainer.prunable --spec-json ...`: the weights a run prunes, one line each.

What `lth validate --list-prunable` prints (the control plane imports no torch, so it runs this
where the trainer is installed): every prunable weight of spec.model.arch, built as the trainer
builds it, with its shape and size; the classifier head marked; the layers that
spec.pruning.ignoreLayers keeps dense; the totals. Exit 2 on a spec or network that cannot be
built, naming the field."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from lth.api import RunSpec
from lth.api.workload import EXIT_BAD_INPUT
from lth_trainer.store import TrainerError


def describe(spec: RunSpec, num_classes: int, crop: int) -> list[str]:
    """The lines: one per prunable weight, then what is kept dense and the totals."""
    import torch

    from lth_trainer import models, pruning

    try:
        with torch.device("meta"):  # shapes only: no init cost, whatever the network's size
            model = models.build_model(spec.model.arch, num_classes, crop, 0)
    except NotImplementedError:  # a builder that computes with tensors (RegNet's widths)
        model = models.build_model(spec.model.arch, num_classes, crop, 0)
    ignore = spec.pruning.ignore_layers
    params = dict(model.named_parameters())
    names = pruning.prunable_names(model, ignore)
    head = f"{models.head_name(model)}.weight"
    width = max((len(n) for n in names), default=0)
    lines = [
        f"{name:<{width}}  {'x'.join(map(str, params[name].shape)):>16}  {params[name].numel():>12,}"
        + ("  (classifier head)" if name == head else "")
        for name in names
    ]
    dense = sorted(set(pruning.prunable_names(model, [])) - set(names))
    if dense:
        lines.append(f"kept dense by spec.pruning.ignoreLayers {ignore}: {', '.join(dense)}")
    total = sum(params[n].numel() for n in names)
    everything = sum(p.numel() for p in params.values())
    lines.append(
        f"{spec.model.arch}: {len(names)} prunable weights, {total:,} of its {everything:,} parameters "
        f"({num_classes} classes, {crop} px crops)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lth_trainer.prunable", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec-json", required=True, help="the run's spec, wire form (JSON)")
    parser.add_argument("--classes", type=int, required=True, help="the network's output classes")
    parser.add_argument("--crop", type=int, required=True, help="the crop size it is built for")
    args = parser.parse_args(argv)
    try:
        spec = RunSpec.model_validate_json(args.spec_json)
        print("\n".join(describe(spec, args.classes, args.crop)))
    except ValidationError as error:
        print(f"--spec-json: invalid spec: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainerError as error:
        print(str(error), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
