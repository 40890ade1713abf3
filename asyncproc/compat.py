"""The older loader checkpoint system's API, for code written against it.

Change the import line and nothing else::

    from asyncproc.compat import CheckpointManager, LoaderCheckpoint, checkpoint_loader

(and ``checkpoint_zaak_loader``, ``with_checkpoint`` where the older code used them).

These are sync, thread-safe classes with the older names and methods, over the native
async keyed layer (``asyncproc.CheckpointManager``, ``asyncproc.checkpointed``): same
runs, same on-disk format, same ``asyncproc list`` / ``show`` / ``delete``. They live
in their own module because ``asyncproc.CheckpointManager`` and
``asyncproc.LoaderCheckpoint`` already name the async classes; new code should use those.
"""

from .keyed.compat import CheckpointManager, LoaderCheckpoint
from .keyed.compat_decorator import (
    CheckpointContext,
    checkpoint_loader,
    checkpoint_zaak_loader,
    with_checkpoint,
)

__all__ = [
    "CheckpointContext",
    "CheckpointManager",
    "LoaderCheckpoint",
    "checkpoint_loader",
    "checkpoint_zaak_loader",
    "with_checkpoint",
]
