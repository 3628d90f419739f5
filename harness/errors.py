"""The one error type users see: a single line, exit status 2."""


class HarnessError(Exception):
    """Bad input or configuration. The CLI prints `error: <message>` and exits 2."""

    exit_code = 2
