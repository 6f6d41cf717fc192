"""A small reusable ctypes binding of libsurelock for the Python tests.

    import surelock_ctypes as sl
    lib = sl.load()                      # SURELOCK_LIB, or the first argv that names a file
    m = sl.new_amutex(lib)
    sl.check(lib, lib.surelock_amutex_lock(m), "surelock_amutex_lock")

What it gives:
  - load(path=None): opens the shared library and declares argtypes/restype for every function
    in SIGNATURES (extend that table, or call declare(lib, more) for other sections);
  - errmsg(lib): the calling thread's surelock_errmsg() as str;
  - SurelockError (an OSError carrying .errno and the library's errmsg) and check(), which
    raises it for any non-zero return except those the caller allows;
  - Waiter: a 16-byte aligned surelock_waiter in ctypes-owned memory (ctypes has no alignment
    attribute before Python 3.13, so a larger buffer is allocated and the address rounded up);
  - WAKE_FN: the surelock_wake_fn callback type. A CFUNCTYPE object must stay referenced for as
    long as C may call it, and a Waiter for as long as it is queued: keep both alive.

Constants mirror include/surelock.h (section 5 and the conventions). Nothing here is specific
to one test; the asyncio wrapper lives in test_asyncio.py.
"""

import ctypes
import errno
import os
import sys
from ctypes import CFUNCTYPE, POINTER, c_char_p, c_int, c_uint64, c_void_p

SURELOCK_FOREVER = 2**64 - 1
SURELOCK_WAITER_SIZE = 64
SURELOCK_WAITER_ALIGN = 16
SURELOCK_SEM_MAX = 0x1FFFFFFFFFFFFFFF

# typedef void (*surelock_wake_fn)(void *ctx, int status);   status 0 = granted, ECANCELED
WAKE_FN = CFUNCTYPE(None, c_void_p, c_int)

_vp = c_void_p
_pvp = POINTER(c_void_p)

# name: (restype, argtypes). Handles are opaque: c_void_p. Out-pointers: POINTER(c_void_p).
# Waiters are passed as their aligned address (c_void_p), see Waiter.
SIGNATURES = {
    "surelock_version": (c_char_p, []),
    "surelock_errmsg": (c_char_p, []),
    # section 5: async FIFO semaphore and mutex
    "surelock_sem_new": (c_int, [c_uint64, _pvp]),
    "surelock_sem_free": (c_int, [_vp]),
    "surelock_sem_acquire": (c_int, [_vp, c_uint64]),
    "surelock_sem_tryacquire": (c_int, [_vp, c_uint64]),
    "surelock_sem_timedacquire": (c_int, [_vp, c_uint64, c_uint64]),
    "surelock_sem_acquire_async": (c_int, [_vp, c_uint64, _vp, WAKE_FN, _vp]),
    "surelock_sem_cancel": (c_int, [_vp, _vp]),
    "surelock_sem_release": (c_int, [_vp, c_uint64]),
    "surelock_sem_shutdown": (c_int, [_vp]),
    "surelock_sem_available": (c_uint64, [_vp]),
    "surelock_amutex_new": (c_int, [_pvp]),
    "surelock_amutex_free": (c_int, [_vp]),
    "surelock_amutex_lock": (c_int, [_vp]),
    "surelock_amutex_trylock": (c_int, [_vp]),
    "surelock_amutex_timedlock": (c_int, [_vp, c_uint64]),
    "surelock_amutex_lock_async": (c_int, [_vp, _vp, WAKE_FN, _vp]),
    "surelock_amutex_cancel": (c_int, [_vp, _vp]),
    "surelock_amutex_unlock": (c_int, [_vp]),
}


class SurelockError(OSError):
    """A surelock call returned an errno; .errno is the code, .errmsg the library's detail."""

    def __init__(self, code, call, detail):
        super().__init__(code, "%s: %s (%s)" % (call, errno.errorcode.get(code, code), detail))
        self.call = call
        self.errmsg = detail


def lib_path_from(argv=None, environ=None):
    """The library to test: $SURELOCK_LIB, else the first argument that names a file."""
    environ = os.environ if environ is None else environ
    path = environ.get("SURELOCK_LIB")
    if path:
        return path
    for arg in (sys.argv[1:] if argv is None else argv):
        if not arg.startswith("-") and os.path.isfile(arg):
            return arg
    return None


def declare(lib, signatures=None):
    """Sets restype/argtypes from a {name: (restype, argtypes)} table (default SIGNATURES)."""
    for name, (restype, argtypes) in (SIGNATURES if signatures is None else signatures).items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def load(path=None):
    """Opens libsurelock (CDLL: the GIL is released during every call, so C may call back into
    Python from any thread) and declares its functions. Raises OSError when it cannot."""
    path = path or lib_path_from()
    if not path:
        raise OSError(errno.ENOENT, "no library: set SURELOCK_LIB or pass its path")
    return declare(ctypes.CDLL(path))


def errmsg(lib):
    """The calling thread's surelock_errmsg() (valid until its next surelock call)."""
    raw = lib.surelock_errmsg()
    return "" if raw is None else raw.decode("utf-8", "replace")


def check(lib, rc, call, allowed=(0,)):
    """Returns rc if it is one of `allowed`; raises SurelockError otherwise."""
    if rc in allowed:
        return rc
    raise SurelockError(rc, call, errmsg(lib))


def new_sem(lib, permits):
    out = c_void_p()
    check(lib, lib.surelock_sem_new(permits, ctypes.byref(out)), "surelock_sem_new")
    return out.value


def new_amutex(lib):
    out = c_void_p()
    check(lib, lib.surelock_amutex_new(ctypes.byref(out)), "surelock_amutex_new")
    return out.value


class Waiter:
    """Storage for one surelock_waiter: SURELOCK_WAITER_SIZE bytes at a 16-byte aligned address
    inside a ctypes buffer this object owns. Keep the object alive (and do not reuse it) while
    it is queued; `address` is what the *_async and *_cancel functions take."""

    __slots__ = ("_buf", "address")

    def __init__(self):
        words = (SURELOCK_WAITER_SIZE + SURELOCK_WAITER_ALIGN) // 8
        self._buf = (ctypes.c_ulonglong * words)()
        base = ctypes.addressof(self._buf)
        self.address = (base + SURELOCK_WAITER_ALIGN - 1) & ~(SURELOCK_WAITER_ALIGN - 1)
        assert self.address + SURELOCK_WAITER_SIZE <= base + ctypes.sizeof(self._buf)
