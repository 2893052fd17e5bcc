"""The control plane of the lottery-ticket system, one package per layer, each importing only
those below it (checked by lint-imports, `pyproject.toml`):

- `lth.cli`: the command line;
- `lth.cluster` (the kopf operator and the child objects), `lth.local` (`lth run`) and
  `lth.results` (report, plot, exported ticket): the executors and what a run yields;
- `lth.plan` (the pure planner) and `lth.storage` (files, locks, tickets);
- `lth.api`: the contract every part shares, the Spark job and the trainer included.
"""
