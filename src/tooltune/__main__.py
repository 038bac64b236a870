from tooltune.cli import main

raise SystemExit(main())
