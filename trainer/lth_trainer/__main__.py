from lth_trainer.cli import main

raise SystemExit(main())
