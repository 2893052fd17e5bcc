"""How a run's files are written, held and shipped, shared by the control plane and the
workloads: the one atomic writer and the readers (`files`), process lifetime and the
one-writer lock (`lifetime`), exported tickets on disk (`tickets`), fetched over HTTP
(`fetch`) and in S3-compatible object storage (`objectstore`). Standard library, boto3 (when
a bucket is used) and `lth.api` only."""
