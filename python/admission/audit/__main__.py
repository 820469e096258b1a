"""``python -m admission.audit``: the same as ``admission audit`` (see `admission.audit.cli`)."""

from admission.audit.cli import main

raise SystemExit(main(prog="python -m admission.audit"))
