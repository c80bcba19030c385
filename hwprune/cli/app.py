"""The ``hwprune`` command group: every verb registers on :data:`main`.

Library errors (:class:`hwprune.HwpruneError`) and files that cannot be read or
written (``OSError``) become one line on stderr and exit status 1, here and nowhere
else; an interrupt says how to resume (status 130); anything else is a bug in hwprune:
one line that says so and exit status 70. ``--debug`` (or ``HWPRUNE_DEBUG=1``) shows
the traceback instead. Heavy imports happen inside commands so that ``hwprune --help``
is instant.
"""
from __future__ import annotations

import os
import sys

import click

from ..errors import HwpruneError

__all__ = ["main"]


def _debug(ctx) -> bool:
    return bool(ctx.meta.get("hwprune.debug")) or os.environ.get("HWPRUNE_DEBUG", "") not in ("", "0")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit, SystemExit):
            raise
        except Exception as e:
            if _debug(ctx):
                raise
            if isinstance(e, HwpruneError):
                click.echo(f"error: {_first_line(e)}", err=True)
                sys.exit(1)
            if isinstance(e, OSError):  # a path that cannot be read or written: the user's to fix
                where = f": {e.filename}" if e.filename else ""
                click.echo(f"error: {e.strerror or _first_line(e)}{where}", err=True)
                sys.exit(1)
            click.echo(f"error: {type(e).__name__}: {_first_line(e)}. This is a bug in hwprune, please report it "
                       f"with the command you ran (HWPRUNE_DEBUG=1 or --debug shows the traceback)", err=True)
            sys.exit(70)
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("interrupted; what was saved stays: run the same command with --resume to continue", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hwprune")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of one line.")
@click.pass_context
def main(ctx, debug: bool) -> None:
    """hwprune: hardware-aware channel pruning (MetaPruning with measured latency)."""
    ctx.meta["hwprune.debug"] = debug
