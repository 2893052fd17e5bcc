"""The run's children as Kubernetes objects, one module per kind, and what is read back from
them: the SparkApplication that preprocesses (`spark_application`), the PyTorchJob of each
level (`pytorchjob`), the export Job (`export_job`); what every child shares (`objects`)."""
