"""Tests of lth.storage: tickets on disk, over HTTP and in S3."""
