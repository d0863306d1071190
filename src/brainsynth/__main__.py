from brainsynth.cli import main

raise SystemExit(main())
