"""A real OpenID Connect provider (npm ``oidc-provider``) for end-to-end tests; see :mod:`tests.idp.provider`."""
