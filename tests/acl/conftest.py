"""Real local users for the access-control tests (tests/security/conftest.py makes them)."""

from tests.security.conftest import users  # noqa: F401 (the fixture, shared)
