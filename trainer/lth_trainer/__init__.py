"""The IMP trainer: one level (or control branch) of iterative magnitude pruning per run."""
