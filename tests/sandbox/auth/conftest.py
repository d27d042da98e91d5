"""SMART tests sign web users in to approve apps: the web tests' cheap password hashing applies here too."""

from tests.web.conftest import cheap_password_hashing  # noqa: F401
