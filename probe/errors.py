"""The one exception type users see, and the CLI wrapper that turns it into one line."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class ToolkitError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


def cli_command(fn: F) -> F:
    """Wrap a command body: a ToolkitError becomes one red line and exit 2; Ctrl-C exits 130."""
    import typer
    from rich.console import Console

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            Console(stderr=True).print("interrupted: finished work is kept; run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
