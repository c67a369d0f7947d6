"""Files in and out: uploads, file inputs and outputs, the file store (Redis or S3).

Bytes travel by reference: an input field typed :class:`~conveyor.handler_types.File` holds
``conveyor://files/<id>`` in the message and the record, a returned ``Path`` is stored and
replaced by the same; the API and the worker stream a file, never hold it.
"""
