"""Tests of the operator on a cluster: manifests, chart, images, metrics (no API server)."""
