"""`harness`: the command line. Thin: parse, load the config, call a phase, print a summary.

    base.py    the group, one-line errors, signals, common options, the preflight call
    phases.py  a command per phase of the table; config, kinds
    study.py   run, compare, ui
    grids.py   sweep, grid, worker
"""
from __future__ import annotations

import os

from harness.cli import grids, phases, study
from harness.cli.base import main

for command in (*phases.phase_commands(), phases.config, phases.kinds, study.run_, study.compare, study.ui,
                grids.sweep, grids.grid, grids.worker):
    main.add_command(command)


def entry():
    """The `harness` console script: `main`, then, after a successful command, an immediate exit.
    Tearing down torch, MLflow and SQLAlchemy at interpreter exit takes 1.5-2 s here, paid by every
    command (and every sweep worker); all runs are ended and all files closed by then. A failing
    command exits normally, so that MLflow's exit hooks still end any run left open."""
    import logging
    import sys
    try:
        main(standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code
    if code not in (0, None):
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`harness config | head`)
            pass
    logging.shutdown()
    os._exit(0)
