"""The audit's tests: the fixture files under ``fixtures/`` are code to be read, never
imported (they reference libraries that are not installed and do what the rules forbid)."""

collect_ignore_glob = ["fixtures/*"]
