"""surelock: locks for when a plain mutex is not enough.

Drop-in replacements for what Python programs already use, over libsurelock.so.1:

    RLock(name=None)      threading.RLock; with a name, the process-wide guard that C code,
                          plugins and other bindings in this process share
    Lock()                threading.Lock, error-checking (re-acquire: OSError EDEADLK)
    RWLock()              read() / write() context managers, writer-preferring
    Condition(lock=None)  threading.Condition over any of these locks
    Group(*locks, shared=False)
                          takes every member or none; groups never deadlock
    IpcLock(path, ...)    robust cross-process lock in a file, with a shared payload
    Semaphore(value=1), BoundedSemaphore(value=1)
                          threading's semaphores, strictly FIFO
    AsyncLock(), AsyncSemaphore(value=1)
                          asyncio.Lock / asyncio.Semaphore, strictly FIFO, any loop/thread

Errors are OSError subclasses from the library's errno (TimeoutError, PermissionError,
FileExistsError, ...) with surelock_errmsg()'s text. A holder that died holding an in-process
lock is never an exception: the next acquire succeeds, sets `owner_died` and issues an
OwnerDiedWarning.

Decisions where the contract is silent:
  - Blocking acquires try first with the GIL held and release it only to wait; in the main
    thread they wait in 20 ms slices and run signal handlers between them (Ctrl-C).
  - locked() on Lock/RLock probes with a try-lock; a probe that meets a dead owner takes its
    notice (owner_died is set on that object).
  - Condition uses threading.Condition's algorithm over the surelock lock (exact notify(n),
    FIFO), not surelock_cond, whose signal wakes "at least one".
  - AsyncLock is a one-permit surelock_sem (the library's amutex is the same thing), so
    locked() and release-when-unlocked (RuntimeError) are exact.
  - Semaphore waits join the library's FIFO through the async call and sleep on a futex, so
    a timeout or Ctrl-C leaves the queue without losing anyone's place or a permit.
  - One Group object may be used from several threads: a per-group gate serialises them (the
    C group is used by one thread at a time). A group keeps its members alive.
  - A lock object dropped while held is leaked, never freed under its holder; an IpcLock is
    never unmapped while held or while a payload memoryview lives (close() says why).
  - With warnings turned into errors, an OwnerDiedWarning from an acquire releases an
    in-process lock before it propagates; an IpcLock stays held (releasing it would make it
    unrecoverable for every process).
"""

from __future__ import annotations

import asyncio as _asyncio
import os as _os
import struct as _struct
import threading as _threading
from typing import Any, NamedTuple, Optional

from . import _surelock
from ._surelock import Group, Lock, OwnerDiedWarning, RLock, library_version

__all__ = [
    "AsyncLock", "AsyncSemaphore", "BoundedSemaphore", "Condition", "Group", "IpcLock",
    "IpcStatus", "Lock", "OwnerDiedWarning", "RLock", "RWLock", "Semaphore", "library_version",
]

__version__ = "1.1.0"

# After fork() in a non-main thread, threading makes that thread the child's main thread:
# follow it, so the child's blocking acquires still answer Ctrl-C.
_os.register_at_fork(
    after_in_child=lambda: _surelock._set_main_thread(_threading.main_thread().ident))


# ---- RWLock ------------------------------------------------------------------------------------

class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: "RWLock") -> None:
        self._lock = lock

    def __enter__(self) -> "RWLock":
        self._lock.acquire_read()
        return self._lock

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


class _WriteGuard(_ReadGuard):
    __slots__ = ()

    def __enter__(self) -> "RWLock":
        self._lock.acquire_write()
        return self._lock


class RWLock(_surelock._RWLock):
    """A writer-preferring reader-writer lock; a thread holds it at most once, in one mode
    (asking again in either mode is OSError EDEADLK).

        rw = surelock.RWLock()
        with rw.read():  ...     # shared
        with rw.write(): ...     # exclusive

    acquire_read()/acquire_write() take threading's (blocking=True, timeout=-1); release()
    drops the caller's hold in either mode.
    """

    __slots__ = ()

    def read(self) -> _ReadGuard:
        """A context manager holding the lock shared."""
        return _ReadGuard(self)

    def write(self) -> _WriteGuard:
        """A context manager holding the lock exclusively."""
        return _WriteGuard(self)


# ---- Condition ---------------------------------------------------------------------------------

class Condition(_threading.Condition):
    """threading.Condition over a surelock lock (default: a new surelock.RLock).

    The algorithm is threading's own (one waiter lock per wait, notify(n) wakes exactly the n
    oldest waiters), which surelock_cond's "wakes at least one" could not promise; the lock it
    guards is the surelock lock, through _release_save/_acquire_restore/_is_owned.
    """

    def __init__(self, lock: Any = None) -> None:
        super().__init__(RLock() if lock is None else lock)


# ---- Semaphores --------------------------------------------------------------------------------

def _check_release_count(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError("n must be an int, not %s" % type(n).__name__)
    if n < 1:
        raise ValueError("n must be one or more")


class Semaphore(_surelock._Sem):
    """threading.Semaphore, strictly FIFO: a release hands the permit to the oldest waiter."""

    __slots__ = ()

    def __init__(self, value: int = 1) -> None:
        pass  # built by _Sem.__new__ (which checks value)

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        if timeout is None:
            return self._acquire(blocking)
        return self._acquire(blocking, timeout)

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        _check_release_count(n)
        self._release(n)

    def __exit__(self, *exc: Any) -> None:
        self._release(1)

    @property
    def _value(self) -> int:
        return self._available


class BoundedSemaphore(Semaphore):
    """threading.BoundedSemaphore, FIFO: releasing above the initial value is ValueError."""

    __slots__ = ()

    def release(self, n: int = 1) -> None:
        _check_release_count(n)
        if self._available + n > self._initial:  # atomic: the GIL is held throughout
            raise ValueError("Semaphore released too many times")
        self._release(n)

    def __repr__(self) -> str:
        return "<surelock.BoundedSemaphore at %#x: value=%d/%d>" % (
            id(self), self._available, self._initial)


# ---- asyncio -------------------------------------------------------------------------------------

def _grant(fut: "_asyncio.Future[bool]", status: int) -> None:
    """Runs in the waiter's loop (handed there by call_soon_threadsafe from the C callback)."""
    if fut.done():  # cancelled meanwhile: the cancelling side settles the permits
        return
    if status == 0:
        fut.set_result(True)
    else:
        fut.set_exception(RuntimeError("surelock: the semaphore was shut down"))


_surelock._set_grant(_grant)


class AsyncSemaphore(_surelock._Sem):
    """asyncio.Semaphore, strictly FIFO, usable from several event loops in several threads.

    A task cancelled while waiting leaves the queue; if its permit had already been granted,
    the permit is given back (never leaked). Waiting never blocks a thread.
    """

    __slots__ = ()

    def __init__(self, value: int = 1) -> None:
        pass

    def locked(self) -> bool:
        """True when acquire() would wait."""
        return self._available == 0

    async def acquire(self) -> bool:
        if self._try_acquire():
            return True
        return await self._acquire_slow()

    async def _acquire_slow(self) -> bool:
        loop = _asyncio.get_running_loop()
        fut = loop.create_future()
        waiter = self._acquire_async(loop, fut)
        if waiter is None:
            return True
        try:
            await fut
        except BaseException:
            if not waiter.cancel():  # granted before the cancellation: give it back
                self._release(1)
            raise
        return True

    def release(self) -> None:
        self._release(1)

    async def __aenter__(self) -> None:
        if not self._try_acquire():
            await self._acquire_slow()

    async def __aexit__(self, *exc: Any) -> None:
        self._release(1)


class AsyncLock(AsyncSemaphore):
    """asyncio.Lock, strictly FIFO (a semaphore of one permit), usable from several event
    loops in several threads. Not owned by a task: release() from any task or thread."""

    __slots__ = ()

    def __new__(cls) -> "AsyncLock":
        return super().__new__(cls, 1)

    def __init__(self) -> None:
        pass

    def locked(self) -> bool:
        """True when the lock is held (or handed to a waiter)."""
        return self._available == 0

    def release(self) -> None:
        if self._available:  # atomic with the release below: the GIL is held
            raise RuntimeError("Lock is not acquired.")
        self._release(1)

    def __repr__(self) -> str:
        return "<surelock.AsyncLock at %#x [%s]>" % (
            id(self), "locked" if self.locked() else "unlocked")


# ---- IpcLock -------------------------------------------------------------------------------------

class IpcStatus(NamedTuple):
    """A snapshot of a lock file's header (see include/surelock.h for the layout)."""
    path: str
    held: bool                 # some thread holds it now
    holder_tid: int            # its kernel TID (0 when free)
    holder_alive: bool         # that thread still exists
    needs_recovery: bool       # a holder died; the next holder gets owner_died
    not_recoverable: bool      # unlocked without consistent(): unusable until re-created
    owner_deaths: int          # holders that died holding it
    same_boot: bool            # False: left from an earlier boot (reset by the next open)
    recursive: bool
    payload_size: int


_HEADER = _struct.Struct("=8sII HHHH 16s 40s Q 16s II Q Q Ii")
_FUTEX_TID_MASK = 0x3FFFFFFF
_FUTEX_OWNER_DIED = 0x40000000


class IpcLock(_surelock._IpcLock):
    """The robust cross-process lock in a file.

        lock = surelock.IpcLock("/run/myapp.lock", payload_size=64)
        with lock:
            if lock.owner_died:          # the previous holder died holding it
                repair(lock.payload)
                lock.consistent()        # without this, release makes it unusable
            lock.payload[0] += 1

    IpcLock(path, *, create=True, recursive=False, payload_size=0, mode=0o600,
    any_owner=False). Ownership is per thread. A with-block that ends (normally or by an
    exception) without consistent() after an owner death leaves the state unrepaired: the
    release makes the lock not recoverable (OSError ENOTRECOVERABLE for every process), as
    the contract says for pthread robust mutexes.
    """

    __slots__ = ()

    def status(self) -> IpcStatus:
        """Reads the file's header (nothing is changed, no lock is taken). OSError when the
        file is not a lock file or this boot's id cannot be read."""
        with open(self.path, "rb") as f:
            raw = f.read(4096)
        if len(raw) < 196 or raw[:8] != b"SURELOCK":
            raise OSError(71, "%s: not a surelock lock file" % self.path, self.path)  # EPROTO
        (_, _, _, _, _, _, _, _, boot_id, _, _, _, flags, payload_size, deaths, recovery,
         _tid) = _HEADER.unpack_from(raw, 0)
        word = _struct.unpack_from("=I", raw, 192)[0]
        # An unreadable boot id is an error, as in the library: "" would call every file one
        # from an earlier boot, and a held lock free.
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                this_boot = f.read().strip()
        except OSError as e:
            raise OSError(e.errno, "%s: cannot read this boot's id from "
                          "/proc/sys/kernel/random/boot_id (%s), needed to tell a lock file "
                          "from an earlier boot" % (self.path, e.strerror), self.path) from e
        if not this_boot:
            raise OSError(5, "%s: this boot's id in /proc/sys/kernel/random/boot_id is empty"
                          % self.path, self.path)  # EIO, as the library says
        same_boot = boot_id.rstrip(b"\0") == this_boot
        tid = word & _FUTEX_TID_MASK if same_boot else 0
        alive = False
        if tid:
            alive = _os.path.exists("/proc/%d" % tid)
        died_mark = same_boot and bool(word & _FUTEX_OWNER_DIED)
        return IpcStatus(
            path=self.path, held=tid != 0, holder_tid=tid, holder_alive=alive,
            needs_recovery=recovery == 1 or (died_mark and recovery == 0),
            not_recoverable=recovery == 2, owner_deaths=deaths + (1 if died_mark else 0),
            same_boot=same_boot, recursive=bool(flags & 0x2), payload_size=payload_size)

    def __repr__(self) -> str:
        return "<surelock.IpcLock %r%s>" % (self.path, " closed" if self.closed else "")

