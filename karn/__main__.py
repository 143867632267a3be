from karn.cli.main import main

raise SystemExit(main())
