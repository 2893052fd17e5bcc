"""Tests of lth.results: the report, the model card, the plot."""
