"""The one exception type the entry points turn into a one-line message instead of a traceback."""


class UpdownError(Exception):
    """Bad input or configuration, with a message that names the file, key or id and what to do."""
