"""Console output and progress: the only place widthlab draws on a terminal.

Nothing in the library below imports this package (checked by ``lint-imports``): the engine
and the stored analyses report :class:`~widthlab.engine.events.ProgressEvent` objects to a
callback, and the command line (or your own code) chooses how to show them.

Example::

    from widthlab.ui import engine_progress

    with engine_progress(quiet=False) as show:
        study.run("mnist", "quick", progress=show)   # a bar on a terminal, else one line per epoch
"""

from widthlab.ui.console import (
    console,
    download_progress,
    interactive,
    print_file_table,
    print_frame,
    print_records,
    print_run,
)
from widthlab.ui.progress import engine_progress, job_line

__all__ = ["console", "download_progress", "engine_progress", "interactive", "job_line",
           "print_file_table", "print_frame", "print_records", "print_run"]
