"""Users' credentials and the SMART App Launch authorization server.

``bearer`` checks the bearer tokens of the FHIR and admin APIs (the admin token, users' API tokens and
SMART access tokens); the other modules are the SMART authorization server (``docs/smart.md``).
"""

from sandbox.auth.bearer import Authenticator, InvalidToken, Principal, bearer_token

__all__ = ["Authenticator", "InvalidToken", "Principal", "bearer_token"]
