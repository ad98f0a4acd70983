"""The one exception type that means "the user gave us something wrong".

The CLI prints it as a single line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input (a missing file, a wrong field, an unknown model...). The message names the culprit."""
