"""Where a sandbox's SMART endpoints are, and what they support: ``/.well-known/smart-configuration`` and the
CapabilityStatement's ``rest.security`` (the oauth-uris extension that older clients such as fhirclient read)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from sandbox.auth.backend_services import ALGORITHMS
from sandbox.auth.scopes import NON_RESOURCE
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.urls import fhir_base, public_root

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
]
# The non-resource scopes come from the one list the scope parser grants (``scopes.NON_RESOURCE``).
SCOPES_SUPPORTED = [
    *sorted(NON_RESOURCE),
    "patient/*.cruds",
    "user/*.cruds",
    "system/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.read",
    "user/*.write",
    "system/*.read",
    "system/*.write",
]


def auth_base(request: Request, sandbox_id: str) -> str:
    """The authorization server's endpoints of a sandbox: ``/auth`` for the default one, else under the sandbox."""
    root = public_root(request)
    return root + ("/auth" if sandbox_id == DEFAULT_SANDBOX else f"/sandboxes/{sandbox_id}/auth")


def endpoints(request: Request, sandbox_id: str) -> dict[str, str]:
    base = auth_base(request, sandbox_id)
    return {
        "authorize": base + "/authorize",
        "token": base + "/token",
        "introspect": base + "/introspect",
        "revoke": base + "/revoke",
        "jwks": public_root(request) + "/auth/jwks",
    }


def smart_configuration(request: Request, sandbox_id: str) -> dict[str, Any]:
    urls = endpoints(request, sandbox_id)
    return {
        "issuer": fhir_base(request, sandbox_id),
        "jwks_uri": urls["jwks"],
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "introspection_endpoint": urls["introspect"],
        "revocation_endpoint": urls["revoke"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def capability_security(request: Request, sandbox_id: str) -> dict[str, Any]:
    """``CapabilityStatement.rest.security``: SMART-on-FHIR, with the OAuth endpoints as the oauth-uris extension."""
    urls = endpoints(request, sandbox_id)
    return {
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": urls["authorize"]},
                    {"url": "token", "valueUri": urls["token"]},
                    {"url": "introspect", "valueUri": urls["introspect"]},
                    {"url": "revoke", "valueUri": urls["revoke"]},
                ],
            }
        ],
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "description": "SMART App Launch 2.0: see .well-known/smart-configuration under this FHIR base",
    }
