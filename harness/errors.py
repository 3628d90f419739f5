"""The one error type users see: a single line, exit status 2 (a subclass may say otherwise:
`harness.backends.openai.ServerError`, a server that kept failing, exits 1)."""


class HarnessError(Exception):
    """Bad input or configuration. The CLI prints `error: <message>` and exits 2."""

    exit_code = 2
