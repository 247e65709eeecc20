"""The one exception type the CLI turns into a single line and a non-zero exit."""


class ToolkitError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
