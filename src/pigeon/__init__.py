"""pigeon: asynchronous tasks and messages for Python."""
