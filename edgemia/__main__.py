from edgemia.cli import main

raise SystemExit(main())
