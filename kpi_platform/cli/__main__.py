from kpi_platform.cli.command import main

raise SystemExit(main())
