"""The OpenID Connect provider: one issuer per tenant, built on Authlib's server components.

- ``clients``: portals from the config as Authlib clients (secrets compared as SHA-256 digests)
- ``keys``: per-tenant signing keys in the database, cached in memory, rotated by the CLI
- ``grants``: authorization code (+PKCE S256, +OpenID) and refresh token (rotation, reuse
  detection); codes and tokens are stored as digests and redeemed atomically
- ``endpoints``: revocation (RFC 7009) and introspection (RFC 7662)
- ``claims``: ID token and userinfo claims, including ``customer_accounts``
- ``server``: assembles one Authlib AuthorizationServer per tenant
- ``logout``: back-channel logout tokens to portals
"""
