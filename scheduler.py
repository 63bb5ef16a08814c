"""The scheduled refresh service (entry point).

Runs a refresh of the extracts in OUTCOMES_DATA_DIR (default ``var/demo``) and exits; the
APScheduler service with per-source schedules, leases and retries is tracked in its own issue.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from metrics.cli import main as cli

    data_dir = os.environ.get("OUTCOMES_DATA_DIR", "var/demo")
    return cli.main(["refresh", "--data", data_dir], standalone_mode=False) or 0


if __name__ == "__main__":
    sys.exit(main())
