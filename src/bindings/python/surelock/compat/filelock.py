"""filelock's FileLock over surelock.IpcLock.

    from surelock.compat.filelock import FileLock, Timeout   # was: from filelock import ...
    lock = FileLock("app.lock", timeout=10)
    with lock:
        ...

Same interface as filelock 3.x: FileLock(lock_file, timeout=-1), acquire(timeout=None,
poll_interval=..., blocking=True) (usable as a context manager), release(force=False),
is_locked, lock_counter, lock_file, timeout, with. Re-entrant in the holding thread, like
filelock's counter. The differences are what surelock adds: no polling (a waiter sleeps on
the lock and is woken at once), a holder that dies is reported (`owner_died`; the shim marks
the lock consistent, since filelock users have no recovery step), and the lock file is a
surelock lock file (an existing empty file, as filelock leaves behind, is adopted).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Union

from .. import IpcLock

__all__ = ["FileLock", "Timeout", "SoftFileLock", "UnixFileLock"]


class Timeout(TimeoutError):
    """The lock could not be acquired within the timeout."""

    def __init__(self, lock_file: str) -> None:
        super().__init__()
        self.lock_file = lock_file

    def __str__(self) -> str:
        return "The file lock '%s' could not be acquired." % self.lock_file


class _AcquireReturnProxy:
    def __init__(self, lock: "FileLock") -> None:
        self.lock = lock

    def __enter__(self) -> "FileLock":
        return self.lock

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


class FileLock:
    def __init__(self, lock_file: Union[str, "os.PathLike[str]"], timeout: float = -1,
                 mode: int = 0o644) -> None:
        self._lock_file = os.fspath(lock_file)
        self.timeout = timeout
        self._mode = mode
        self._ipc: Optional[IpcLock] = None
        self._counter = 0
        self._guard = threading.RLock()  # filelock's objects are shared between threads
        self.owner_died = False

    @property
    def lock_file(self) -> str:
        return self._lock_file

    @property
    def is_locked(self) -> bool:
        return self._counter > 0

    @property
    def lock_counter(self) -> int:
        return self._counter

    def _handle(self) -> IpcLock:
        if self._ipc is None:
            self._ipc = IpcLock(self._lock_file, recursive=True, mode=self._mode)
        return self._ipc

    def acquire(self, timeout: Optional[float] = None, poll_interval: float = 0.05, *,
                poll_intervall: Optional[float] = None,
                blocking: bool = True) -> _AcquireReturnProxy:
        if timeout is None:
            timeout = self.timeout
        with self._guard:
            ipc = self._handle()
        if not blocking:
            got = ipc.acquire(False)
        elif timeout is None or timeout < 0:
            got = ipc.acquire()
        else:
            got = ipc.acquire(True, timeout)
        if not got:
            raise Timeout(self._lock_file)
        if ipc.needs_recovery:
            self.owner_died = True
            ipc.consistent()
        with self._guard:
            self._counter += 1
        return _AcquireReturnProxy(self)

    def release(self, force: bool = False) -> None:
        with self._guard:
            if self._counter == 0:
                return
            times = self._counter if force else 1
            for _ in range(times):
                self._ipc.release()  # RuntimeError from a thread that does not hold it
                self._counter -= 1

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release(force=True)
        except Exception:
            pass


SoftFileLock = FileLock
UnixFileLock = FileLock
