"""Tests of lth.api: the models, the CRD, validation, the search methods."""
