"""Running one invocation: validation, set-up once per process, output encoding.

Knows nothing of HTTP or Celery; imports torch only if a user's handler does.
"""

from __future__ import annotations

from conveyor.runtime.encoding import encode_output, error_payload
from conveyor.runtime.runner import Runner
from conveyor.runtime.validation import validate_input

__all__ = ["Runner", "encode_output", "error_payload", "validate_input"]
