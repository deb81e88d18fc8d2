"""`python -m tgpipe` is the `tgpipe` command."""

from tgpipe.cli import main

raise SystemExit(main())
