"""The ``hwprune`` command group: every verb registers on :data:`main`.

Library errors (:class:`hwprune.HwpruneError`) become one line on stderr and exit
status 1, here and nowhere else. Heavy imports happen inside commands so that
``hwprune --help`` is instant.
"""
from __future__ import annotations

import sys

import click

from ..errors import HwpruneError

__all__ = ["main"]


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HwpruneError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hwprune")
def main() -> None:
    """hwprune: hardware-aware channel pruning (MetaPruning with measured latency)."""
