"""Checkpoint files: written so that a kill mid-write never damages one, refused clearly when damaged.

Every checkpoint goes to a hidden temporary file in its own directory, is flushed to disk, and
then takes the final name with `os.replace`, which is atomic on POSIX: a reader (or a resumed
run) sees the previous complete file or the new complete file, never a torn one. A process
killed mid-write leaves only `.<name>.<pid>.tmp` behind, which is safe to delete.

A torch checkpoint is a zip archive with a CRC-32 per record; `verify` checks the archive's
directory and every CRC, so a truncated or bit-flipped file is refused before anything starts
(torch.load itself reads a bit-flipped tensor without complaint).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read back; the message names the file and the way out."""


def write_atomically(path: _PATH, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, make it durable, then rename it to `path`."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:  # an interrupt mid-write too: leave no partial file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync(directory)  # the rename itself survives a power cut only once the directory is flushed


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def verify(path: _PATH) -> None:
    """Raise `CorruptCheckpoint` unless `path` is a complete checkpoint whose records match their CRCs."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise CorruptCheckpoint(refusal(path, f"it is truncated or not a checkpoint ({error})")) from None
    if bad is not None:
        raise CorruptCheckpoint(
            refusal(path, f"its record {bad!r} fails its checksum (the file is corrupted)")
        )


def refusal(path: _PATH, reason: str) -> str:
    """The message for a checkpoint that cannot be used: what is wrong and which files to try instead."""
    path = Path(path)
    others = sorted(
        (p for p in path.parent.glob("*.ckpt") if p.name != path.name),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if others:
        choices = ", ".join(p.name for p in others)
        hint = f"use another checkpoint of the run, newest first: {choices} (in {path.parent})"
    else:
        hint = "use another checkpoint of the run (last.ckpt, interrupted.ckpt or an earlier step_<N>.ckpt)"
    return f"cannot load checkpoint {path}: {reason}. It cannot be resumed or evaluated; {hint}"


def load(path: _PATH) -> dict[str, Any]:
    """A verified checkpoint, loaded on the CPU (for evaluation and inspection)."""
    verify(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a valid zip that is not a torch checkpoint
        raise CorruptCheckpoint(refusal(path, f"torch cannot read it ({error})")) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic, durable writes and a clear refusal on load.

    (Lightning's own save first serialises the whole checkpoint, replay included, into memory,
    and its rename is neither fsynced nor, for local files, guaranteed atomic.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_atomically(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Any = lambda storage, loc: storage,  # Lightning's default: where it was saved
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as error:  # whatever torch.load meets in a damaged file
            raise CorruptCheckpoint(refusal(path, f"torch cannot read it ({error})")) from None
