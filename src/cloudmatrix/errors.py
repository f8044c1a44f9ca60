"""The one exception type for errors a user can cause.

Every message says what is wrong and how to fix it; the CLI prints it on one
line and exits non-zero, without a traceback.
"""


class CloudMatrixError(Exception):
    """Bad input: a config, a catalog file, a deployment that does not fit, a malformed request."""
