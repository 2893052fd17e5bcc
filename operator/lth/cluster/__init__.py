"""The operator on a cluster: kopf handlers that carry out the planner (`handlers`), what they
read from the API server (`observe`), one module per child kind with its manifest and what
is read back from it (`spark_application`, `pytorchjob`, `trainjob`, `export_job`; their shared parts in
`objects`), why a child's pods cannot run or why one failed (`pods`), Prometheus metrics
(`metrics`), `lth render` (`render`) and the kubeconfig reader (`kubeconfig`). Imports the
planner, storage and the API."""
