"""``python -m admission``: see `admission.cli`."""

from admission.cli import main

raise SystemExit(main())
