"""What a run yields for people: the accuracy-vs-density table (`tables`), the plot (`plot`),
the model card (`model_card`) and the exported ticket directory (`export`). Imports the
planner (for costs), storage and the API."""
