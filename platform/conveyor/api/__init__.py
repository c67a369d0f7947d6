"""The HTTP API: a Litestar app whose controllers are given services, never Redis or Celery."""
