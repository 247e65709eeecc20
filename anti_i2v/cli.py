"""The `anti-i2v` console script: one typer app gathering each stage's commands.

Command bodies live in `anti_i2v.commands` (one module a stage); this module only assembles them.
"""

from __future__ import annotations

import typer

from anti_i2v.commands import analyses as analyses_cli
from anti_i2v.commands import convert as convert_cli
from anti_i2v.commands import probe as probe_cli
from anti_i2v.commands import protect as protect_cli
from anti_i2v.commands import study as study_cli

app = typer.Typer(
    name="anti-i2v",
    help="Protect photos from image-to-video generation: probe a video model, analyse its layers, cloak photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
probe_cli.register(app)
analyses_cli.register(app)
protect_cli.register(app)
study_cli.register(app)
convert_cli.register(app)
