"""The ``zooforge`` command line: one typer app; each command parses, makes one API call, prints.

Commands live by family: :mod:`.ranking` (models, rank, evaluate, report, demo), :mod:`.training`
(tune, aggregate, compose, select), :mod:`.hub` (audit, catalogue), :mod:`.data` (export, cache);
:mod:`.common` holds the app, shared options and the checks that run before any work.

Exit codes: 0 when everything asked for was computed; 1 for an error (bad input, a missing file, an
unavailable device: nothing was computed, or what was is saved and named); 3 when the command ran
but some models or audit cells failed (their errors are printed and recorded in the table; pass
``--allow-failures`` to exit 0 all the same); 130 on Ctrl-C.
"""

from zooforge.cli.common import (
    EXIT_ERROR, EXIT_FAILURES, app,
)
# each registers its commands on the app, in the order `zooforge --help` lists them
from zooforge.cli import ranking, training, hub, data  # noqa: F401, I001


__all__ = ["EXIT_ERROR", "EXIT_FAILURES", "app", "main"]


def main() -> None:
    app()
