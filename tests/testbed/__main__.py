from tests.testbed.cli import main

raise SystemExit(main())
