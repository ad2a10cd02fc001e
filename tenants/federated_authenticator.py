"""The login of a hub whose institution chose federated login: OAuthenticator's GenericOAuthenticator against the
console's OpenID provider, which keeps a person's hub session while the console cannot answer.

GenericOAuthenticator's ``refresh_user`` treats a 4xx as an ended login but raises on a 5xx or when the console
cannot be reached, which breaks every page of the hub a few minutes into a console outage.  Here those errors keep
the session (the next refresh asks again); a 4xx still ends it, as revocation needs.

Runs inside the hub (local hubs import it beside their config file; Kubernetes hubs get its text as the chart's
``hub.extraConfig``), where Hubfleet is not installed: JupyterHub and OAuthenticator only.
"""
from oauthenticator.generic import GenericOAuthenticator


class FederatedAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator whose refresh survives the console being down."""

    async def refresh_user(self, user, handler=None, **kwargs):
        try:
            return await super().refresh_user(user, handler, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure to reach the console, but a refusal
            code = getattr(error, "code", None)
            if isinstance(code, int) and 400 <= code < 500:
                raise
            self.log.warning("Keeping %s signed in: the console did not answer the refresh (%s)", user.name, error)
            return True
