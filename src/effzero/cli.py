"""Entry-point helpers: turn the errors a user can fix into one clear message."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TypeVar

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from effzero.agent import NonFiniteLoss
from effzero.config import SCHEMAS
from effzero.data.workers import WorkerDied

T = TypeVar("T")
log = logging.getLogger("effzero")

# Errors whose message already names the cause and the fix: no traceback wall for them.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    MemoryError,
    TimeoutError,
    WorkerDied,
    PermissionError,
    NonFiniteLoss,
)
LOCKED_DATABASE = (
    "the MLflow database is locked by another process (a run or an `mlflow` command writing to it) "
    "for longer than SQLite waits; once it is done, run again (from the interrupted.ckpt named above, if "
    "one was written), or give this run its own store: "
    "logger.mlflow.tracking_uri=sqlite:///<other>.db (eval: tracking_uri=...), or logger=none"
)


_claimed: dict[str, str] = {}


def claim_dir(path: str) -> str:
    """`path`, else `path_2`, `path_3`, …: the first that this process creates.

    Runs started in the same second (a SLURM array, sweeps side by side) would otherwise share
    their time-stamped run directory and overwrite each other's checkpoints. `mkdir` either
    creates or fails, atomically, also on network file systems. Asked again (Hydra resolves the
    run directory more than once), a process gets its own claim back.
    """
    path = os.path.normpath(path)  # `runs/x/` is `runs/x`, not a folder inside it
    if path not in _claimed:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        candidate, copy = path, 1
        while True:
            try:
                os.mkdir(candidate)
                break
            except FileExistsError:
                copy += 1
                candidate = f"{path}_{copy}"
        _claimed[path] = candidate
    return _claimed[path]


def register_resolvers() -> None:
    """`${claim_dir:<path>}` for the configs' run directories."""
    OmegaConf.register_new_resolver("claim_dir", claim_dir, replace=True)


def is_locked_database(error: BaseException) -> bool:
    """Whether `error`, or an error it wraps (Hydra, MLflow, SQLAlchemy), is SQLite's lock timeout."""
    seen: BaseException | None = error
    while seen is not None:
        if "database is locked" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _LockErrorsExplainedHere(logging.Filter):
    """MLflow logs a traceback for each SQLite lock timeout; `run_or_explain` reports them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


def run_or_explain(fn: Callable[..., T], *args) -> T:
    """Call `fn`; on a user-fixable error print its message and exit 1 (EFFZERO_DEBUG=1 re-raises)."""
    if os.environ.get("EFFZERO_DEBUG") != "1":
        logging.getLogger("mlflow.store.db.utils").addFilter(_LockErrorsExplainedHere())
    try:
        return fn(*args)
    except Exception as error:
        if os.environ.get("EFFZERO_DEBUG") == "1":
            raise
        if is_locked_database(error):
            message = LOCKED_DATABASE
        elif isinstance(error, USER_ERRORS):
            message = str(error)
        else:
            raise
        _to_log_file(f"{type(error).__name__}: {message}")
        print(f"\nerror: {message}\n(set EFFZERO_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(1)


def _to_log_file(message: str) -> None:
    """Record the error in the run's log file only: the console gets it once, from the print."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def preflight(config_dir: str, config_name: str, argv: Sequence[str]) -> None:
    """Check a run's config before Hydra starts it: unknown keys, and a log directory we can write.

    Sweeps (`-m`, `a=1,2`) and Hydra's flags are left to Hydra.
    """
    if any(arg.startswith("-") for arg in argv) or any("," in arg or "(" in arg for arg in argv):
        return
    cfg = check_overrides(config_dir, config_name, argv)
    if cfg is not None:
        check_log_dir(str(OmegaConf.select(cfg, "paths.log_dir")))


def check_log_dir(log_dir: str) -> None:
    """Exit with a message if `log_dir` cannot be created or written (Hydra would print a traceback)."""
    try:
        os.makedirs(log_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=log_dir):
            pass
    except OSError as error:
        print(
            f"error: cannot write the log directory {log_dir} ({error.strerror}): runs, checkpoints "
            "and the MLflow database go there. Point paths.log_dir at a writable directory, e.g. "
            "paths.log_dir=$HOME/effzero-logs",
            file=sys.stderr,
        )
        sys.exit(1)


def check_overrides(config_dir: str, config_name: str, argv: Sequence[str]) -> DictConfig | None:
    """Compose the config once before Hydra does, to explain an unknown key with the valid ones.

    Hydra's own message says a key is not in a schema; this one also lists the schema's keys
    and the closest match. Returns the composed config, or None where Hydra explains the error.
    """
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(argv))
    except (HydraException, OmegaConfBaseException) as error:
        missing = (ConfigKeyError, ConfigAttributeError)
        cause = error if isinstance(error, missing) else error.__cause__
        if not isinstance(cause, missing) or not cause.full_key:
            return None  # Hydra explains the rest well
        group, _, key = str(cause.full_key).partition(".")
        if not key:  # a top-level key: the root config's fields, prefixed in the hint
            group, key = "", group
        schema = cause.object_type if dataclasses.is_dataclass(cause.object_type) else SCHEMAS.get(group)
        if schema is None or "." in key:
            return None
        valid = [f.name for f in dataclasses.fields(schema)]
        close = difflib.get_close_matches(key, valid, n=1)
        where = f"{group}." if group else ""
        hint = f" Did you mean {where}{close[0]}?" if close else ""
        owner, label = (group, group) if group else (f"the {config_name} config", "top-level")
        print(
            f"error: {owner} has no setting {key!r}.{hint}\n  valid {label} settings: {', '.join(valid)}",
            file=sys.stderr,
        )
        sys.exit(1)
