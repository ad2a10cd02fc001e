"""Fill a generic OpenID Connect config from the IdP's discovery document.

The one place in tenants/ that touches the network, and only when an admin asks for it.
"""
from __future__ import annotations

from typing import Any

import httpx

from tenants.fields import Invalid, as_url

WELL_KNOWN = "/.well-known/openid-configuration"


def discovery_document_url(url: str) -> str:
    """Accept the issuer or the full discovery URL; return the discovery URL."""
    url = as_url(url).rstrip("/")
    return url if url.endswith(WELL_KNOWN) else url + WELL_KNOWN


def fetch_discovery(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Fetch the discovery document and map it to generic-oauth fields.

    Returns {"authorize_url", "token_url", "userdata_url", "scope"}; raises :class:`Invalid` with a message for the
    admin when the URL does not answer or the document lacks an endpoint.  Safe to call twice.
    """
    target = discovery_document_url(url)
    try:
        response = httpx.get(target, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        document = response.json()
    except httpx.HTTPStatusError as exc:
        raise Invalid(f"{target} answered {exc.response.status_code}.") from None
    except httpx.HTTPError as exc:
        raise Invalid(f"Could not reach {target} ({exc.__class__.__name__}).") from None
    except ValueError:
        raise Invalid(f"{target} did not return a JSON document.") from None
    missing = [key for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")
               if not isinstance(document.get(key), str)]
    if missing:
        raise Invalid(f"The discovery document has no {', '.join(missing)}.")
    supported = document.get("scopes_supported") or []
    scope = [s for s in ("openid", "profile", "email", "groups") if not supported or s in supported]
    return {"authorize_url": document["authorization_endpoint"], "token_url": document["token_endpoint"],
            "userdata_url": document["userinfo_endpoint"], "scope": scope}
