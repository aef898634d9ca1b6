from easytrain.cli import main

raise SystemExit(main())
