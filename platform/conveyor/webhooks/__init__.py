"""Webhooks: what a request may ask for, the SSRF guard, signatures, delivery."""
