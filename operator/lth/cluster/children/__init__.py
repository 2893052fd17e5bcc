"""The run's children as Kubernetes objects, one module per kind, and what is read back from
them: the SparkApplication that preprocesses (`spark_application`), the job of each level, a
PyTorchJob (`pytorchjob`) or a TrainJob (`trainjob`), one `LevelJobApi` each (`level_api`, listed
in `level_jobs`), the export Job (`export_job`); what every child shares (`objects`)."""
