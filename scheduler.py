"""The scheduled refresh service (entry point): ``python scheduler.py`` is ``outcomes serve``.

Runs in the foreground, refreshing each source on its schedule in ``definitions/schedule.yaml``
(incrementally: a source whose extracts haven't changed is skipped), one refresh at a time even
with several services on one store, logging one line per event to stdout. Stop it with SIGTERM
or Ctrl+C: a running refresh finishes (or rolls back) and the service exits 0.

    python scheduler.py                  # the schedule in definitions/schedule.yaml
    python scheduler.py --every-minute   # every job every minute, to try it out
    python scheduler.py --help

The store is OUTCOMES_DATABASE_URL; OUTCOMES_DATA_DIR overrides the schedule's extracts folder.
See metrics/service.py for how it works.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from metrics.cli import main as cli

    args = sys.argv[1:] if argv is None else argv
    try:
        return cli.main(["serve", *args], prog_name="scheduler.py", standalone_mode=False) or 0
    except SystemExit as exc:  # click's own exits (e.g. --help, usage errors) keep their code
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
