"""`lth run`: the planner's actions carried out on one machine, as subprocesses (`executor`),
the loop and the one-runner lock (`runner`), and the live console (`console`). Imports the
planner, storage and the API."""
