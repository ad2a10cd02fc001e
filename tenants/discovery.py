"""Fill a generic OpenID Connect config from the IdP's discovery document.

Fetched only when an admin asks for it, through the guarded client (``tenants/outbound.py``): the admin learns
whether it worked, never what answered instead (a refused address, a 404, a redirect, a timeout); the operator's log
says what happened.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from tenants import outbound
from tenants.fields import Invalid, as_url

WELL_KNOWN = "/.well-known/openid-configuration"
MAX_BYTES = 1 << 20  # real discovery documents are a few KiB
FAILED = "Could not fetch the discovery document from that URL."
ENDPOINTS = {"authorize_url": "authorization_endpoint", "token_url": "token_endpoint",
             "userdata_url": "userinfo_endpoint"}

logger = logging.getLogger(__name__)


def discovery_document_url(url: str) -> str:
    """Accept the issuer or the full discovery URL; return the discovery URL."""
    url = as_url(url).rstrip("/")
    return url if url.endswith(WELL_KNOWN) else url + WELL_KNOWN


def fetch_discovery(url: str, policy: outbound.Policy) -> dict[str, Any]:
    """Fetch the discovery document and map it to generic-oauth fields.

    Returns {"authorize_url", "token_url", "userdata_url", "scope"}; raises :class:`Invalid` with :data:`FAILED`
    whatever went wrong (logged for the operator, by origin only: paths may hold tokens).  No redirect is followed.
    Safe to call twice.
    """
    target = discovery_document_url(url)
    try:
        answer = outbound.request("GET", target, policy, headers={"Accept": "application/json"}, max_bytes=MAX_BYTES)
        if answer.status != 200:
            raise outbound.Refused(f"answered {answer.status}")
        document = json.loads(answer.body)
        if not isinstance(document, dict):
            raise outbound.Refused("answered JSON that is not an object")
        missing = [key for key in ENDPOINTS.values() if not isinstance(document.get(key), str)]
        if missing:
            raise outbound.Refused(f"answered a document without {', '.join(missing)}")
    except (outbound.Refused, ValueError, RecursionError) as exc:
        logger.warning("discovery document from %s not taken: %s", outbound.origin(target), exc)
        raise Invalid(FAILED) from None
    supported = document.get("scopes_supported")
    supported = supported if isinstance(supported, list) else []
    scope = [s for s in ("openid", "profile", "email", "groups") if not supported or s in supported]
    return {**{field: document[key] for field, key in ENDPOINTS.items()}, "scope": scope}
