"""pymutex's SharedMutex over surelock.IpcLock.

    from surelock.compat.pymutex import SharedMutex   # was: from pymutex import SharedMutex
    m = SharedMutex("/tmp/app.mutex")
    if m.lock(timeout=5):
        try: ...
        finally: m.unlock()

Unlike a raw robust pthread mutex, the file is checked (owner, mode, format, boot) and a
holder's death is reported: `owner_died` after lock(); surelock repairs the mutex itself, so
the shim marks it consistent at once (pymutex had no recovery step to call).
"""

from __future__ import annotations

from typing import Any, Optional

from .. import IpcLock


class SharedMutex:
    """A mutex shared by every process that opens the same file."""

    def __init__(self, path: str, *, mode: int = 0o600) -> None:
        self._lock = IpcLock(path, mode=mode)
        self.owner_died = False

    @property
    def path(self) -> str:
        return self._lock.path

    def lock(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Takes the mutex; False if not blocking / timed out while another holds it."""
        if timeout is None:
            got = self._lock.acquire(blocking)
        else:
            got = self._lock.acquire(blocking, timeout)
        if got:
            self.owner_died = self._lock.owner_died
            if self._lock.needs_recovery:
                self._lock.consistent()
        return got

    def unlock(self) -> None:
        self._lock.release()

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> "SharedMutex":
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()
