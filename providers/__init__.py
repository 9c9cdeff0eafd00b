"""Upstream identity providers: a shared OIDC/OAuth2 base and one small module per upstream."""
