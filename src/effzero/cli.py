"""Entry-point helpers: turn the errors a user can fix into one clear message."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from effzero.data.workers import WorkerDied

T = TypeVar("T")
log = logging.getLogger("effzero")

# Errors whose message already names the cause and the fix: no traceback wall for them.
USER_ERRORS = (ValueError, FileNotFoundError, MemoryError, TimeoutError, WorkerDied, PermissionError)


def run_or_explain(fn: Callable[..., T], *args) -> T:
    """Call `fn`; on a user-fixable error print its message and exit 1 (EFFZERO_DEBUG=1 re-raises)."""
    try:
        return fn(*args)
    except USER_ERRORS as error:
        if os.environ.get("EFFZERO_DEBUG") == "1":
            raise
        log.error("%s: %s", type(error).__name__, error)
        print(f"\nerror: {error}\n(set EFFZERO_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(1)
