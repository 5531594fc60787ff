from pipeline.apps.cli import main

raise SystemExit(main())
