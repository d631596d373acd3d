"""Fixtures for the report tests; helpers live in ``report_fixtures`` (a unique module name, so
other test folders' ``conftest`` modules can never shadow them)."""

from report_fixtures import sweep  # noqa: F401  (re-exported as a fixture)
