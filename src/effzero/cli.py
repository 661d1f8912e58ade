"""Entry-point helpers: turn the errors a user can fix into one clear message."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from effzero.config import SCHEMAS
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


def check_overrides(config_dir: str, config_name: str, argv: Sequence[str]) -> None:
    """Compose the config once before Hydra does, to explain an unknown key with the valid ones.

    Hydra's own message says a key is not in a schema; this one also lists the schema's keys
    and the closest match. Sweeps (`-m`, `a=1,2`) and Hydra's flags are left to Hydra.
    """
    if any(arg.startswith("-") for arg in argv) or any("," in arg or "(" in arg for arg in argv):
        return
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            compose(config_name=config_name, overrides=list(argv))
    except (HydraException, OmegaConfBaseException) as error:
        missing = (ConfigKeyError, ConfigAttributeError)
        cause = error if isinstance(error, missing) else error.__cause__
        if not isinstance(cause, missing) or not cause.full_key:
            return  # Hydra explains the rest well
        group, _, key = str(cause.full_key).partition(".")
        schema = cause.object_type if dataclasses.is_dataclass(cause.object_type) else SCHEMAS.get(group)
        if schema is None or "." in key:
            return
        valid = [f.name for f in dataclasses.fields(schema)]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean {group}.{close[0]}?" if close else ""
        print(
            f"error: {group} has no setting {key!r}.{hint}\n  valid {group} settings: {', '.join(valid)}",
            file=sys.stderr,
        )
        sys.exit(1)
