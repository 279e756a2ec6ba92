"""The one exception type for mistakes a user can fix; every layer raises it or a subclass."""


class UserError(Exception):
    """An error caused by the user's input. Its message is one sentence saying what happened
    and what to do; the CLI prints it without a traceback and exits non-zero."""
