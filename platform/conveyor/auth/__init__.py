"""API keys and what they allow: scopes, the caller of a request."""
