"""Tests of lth.local: the local executor and lth run."""
