"""libsurelock through Python ctypes, the way a binding would use it.

The library under test is the shared object named by the environment variable SURELOCK_LIB
(meson sets it to the freshly built libsurelock.so.1.1.0). Without it, or without ctypes, the
module exits 77 (meson's "skipped").

Everything that waits is bounded: locks are taken with timed forms, threads are joined with a
timeout and checked to have finished, child processes are waited for with a timeout and killed
otherwise. A broken lock fails a test; it never hangs the run.

The declarations live in this file (not in a shared wrapper) so that the module tests the raw
C ABI exactly as the header declares it.
"""

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

try:
    import ctypes
    from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int, c_size_t,
                        c_uint, c_uint32, c_uint64, c_void_p)
except ImportError:  # a Python built without ctypes
    print("ctypes is not available: skipping")
    sys.exit(77)

LIB_PATH = os.environ.get("SURELOCK_LIB")
if not LIB_PATH or not os.path.exists(LIB_PATH):
    print("SURELOCK_LIB does not name the built libsurelock.so.1: skipping")
    sys.exit(77)

SEC = 1_000_000_000            # nanoseconds
LONG_WAIT_NS = 10 * SEC        # "should succeed promptly": a generous ceiling, never forever
SHORT_WAIT_NS = 50_000_000     # "should stay busy": 50 ms
JOIN_TIMEOUT = 20.0            # seconds
SURELOCK_WAITER_SIZE = 64

WAKE_FN = CFUNCTYPE(None, c_void_p, c_int)


class IpcOptions(Structure):
    _fields_ = [("size", c_size_t), ("flags", c_uint32), ("mode", c_uint32),
                ("payload_size", c_size_t)]

    @classmethod
    def defaults(cls, payload_size=0, flags=0):
        o = cls()
        o.size = ctypes.sizeof(cls)
        o.flags = flags
        o.mode = 0o600
        o.payload_size = payload_size
        return o


def declare(lib):
    """Gives every function this module uses its C signature (header: include/surelock.h)."""
    vp, pvp = c_void_p, POINTER(c_void_p)
    sigs = {
        "surelock_version": (c_char_p, []),
        "surelock_errmsg": (c_char_p, []),
        "surelock_rlock_new": (c_int, [pvp]),
        "surelock_rlock_free": (c_int, [vp]),
        "surelock_rlock_global": (c_int, [c_char_p, pvp]),
        "surelock_rlock_lock": (c_int, [vp]),
        "surelock_rlock_trylock": (c_int, [vp]),
        "surelock_rlock_timedlock": (c_int, [vp, c_uint64]),
        "surelock_rlock_unlock": (c_int, [vp]),
        "surelock_rlock_depth": (c_uint, [vp]),
        "surelock_mutex_new": (c_int, [pvp]),
        "surelock_mutex_free": (c_int, [vp]),
        "surelock_mutex_lock": (c_int, [vp]),
        "surelock_mutex_trylock": (c_int, [vp]),
        "surelock_mutex_timedlock": (c_int, [vp, c_uint64]),
        "surelock_mutex_unlock": (c_int, [vp]),
        "surelock_group_new": (c_int, [pvp]),
        "surelock_group_free": (c_int, [vp]),
        "surelock_group_add_mutex": (c_int, [vp, vp]),
        "surelock_group_add_ipc": (c_int, [vp, vp]),
        "surelock_group_size": (c_size_t, [vp]),
        "surelock_group_lock": (c_int, [vp]),
        "surelock_group_trylock": (c_int, [vp]),
        "surelock_group_timedlock": (c_int, [vp, c_uint64]),
        "surelock_group_unlock": (c_int, [vp]),
        "surelock_ipc_open": (c_int, [c_char_p, POINTER(IpcOptions), pvp]),
        "surelock_ipc_close": (c_int, [vp]),
        "surelock_ipc_lock": (c_int, [vp]),
        "surelock_ipc_trylock": (c_int, [vp]),
        "surelock_ipc_timedlock": (c_int, [vp, c_uint64]),
        "surelock_ipc_consistent": (c_int, [vp]),
        "surelock_ipc_needs_recovery": (c_int, [vp]),
        "surelock_ipc_unlock": (c_int, [vp]),
        "surelock_ipc_payload": (c_void_p, [vp, POINTER(c_size_t)]),
        "surelock_ipc_unlink": (c_int, [c_char_p]),
        "surelock_amutex_new": (c_int, [pvp]),
        "surelock_amutex_free": (c_int, [vp]),
        "surelock_amutex_trylock": (c_int, [vp]),
        "surelock_amutex_timedlock": (c_int, [vp, c_uint64]),
        "surelock_amutex_lock_async": (c_int, [vp, vp, WAKE_FN, vp]),
        "surelock_amutex_cancel": (c_int, [vp, vp]),
        "surelock_amutex_unlock": (c_int, [vp]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


# ctypes.CDLL releases the GIL around every call, so a thread blocked in a lock call does not
# stop the others, and a C callback may re-enter Python from any thread.
lib = declare(ctypes.CDLL(LIB_PATH))


def new(ctor, *args):
    """Calls a surelock_*_new-style constructor and returns the handle (asserting success)."""
    out = c_void_p()
    rc = ctor(*args, byref(out))
    if rc != 0:
        raise OSError(rc, "%s: %s" % (ctor.__name__, lib.surelock_errmsg().decode()))
    return out


def in_thread(fn, *args):
    """Runs fn(*args) on a new thread, joins it with a timeout and returns its result."""
    box = {}

    def body():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # re-raised on the calling thread
            box["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join(JOIN_TIMEOUT)
    if t.is_alive():
        raise AssertionError("thread running %r did not finish within %ss" % (fn, JOIN_TIMEOUT))
    if "error" in box:
        raise box["error"]
    return box["result"]


def errname(rc):
    return errno.errorcode.get(rc, str(rc))


class SurelockTestCase(unittest.TestCase):
    def assertRc(self, rc, expected, what=""):
        if rc != expected:
            self.fail("%s returned %s, expected %s (errmsg: %r)" % (
                what or "call", errname(rc), errname(expected), lib.surelock_errmsg()))


class LibraryTest(SurelockTestCase):
    def test_version_is_the_header_version_and_errmsg_is_never_null(self):
        self.assertEqual(lib.surelock_version(), b"1.1.0")
        self.assertIsNotNone(in_thread(lib.surelock_errmsg))  # "" in a fresh thread
        self.assertRc(lib.surelock_rlock_lock(None), errno.EINVAL, "rlock_lock(NULL)")
        self.assertNotEqual(lib.surelock_errmsg(), b"")


class RlockAcrossHandlesTest(SurelockTestCase):
    """Two CDLL objects, made separately with different paths and modes, that load the same
    shared library share its process-wide named guards."""

    @classmethod
    def setUpClass(cls):
        real = os.path.realpath(LIB_PATH)
        soname_link = os.path.join(os.path.dirname(real), "libsurelock.so.1")
        other = soname_link if os.path.exists(soname_link) else real
        cls.first = declare(ctypes.CDLL(real))
        cls.second = declare(ctypes.CDLL(other, mode=ctypes.RTLD_GLOBAL))
        cls.name = b"libfoo.so.3:python-ffi-%d" % os.getpid()

    def guard(self, handle):
        out = c_void_p()
        self.assertRc(handle.surelock_rlock_global(self.name, byref(out)), 0, "rlock_global")
        return out.value

    def test_two_cdll_handles_get_the_same_named_guard(self):
        self.assertIsNot(self.first, self.second)
        a, b = self.guard(self.first), self.guard(self.second)
        self.assertIsNotNone(a)
        self.assertEqual(a, b)
        # And from another Python thread, too.
        self.assertEqual(in_thread(self.guard, self.second), a)
        # A different name is a different lock.
        out = c_void_p()
        self.assertRc(self.first.surelock_rlock_global(self.name + b":other", byref(out)), 0)
        self.assertNotEqual(out.value, a)

    def test_guard_held_through_one_handle_keeps_other_threads_out_through_the_other(self):
        g1, g2 = self.guard(self.first), self.guard(self.second)
        self.assertRc(self.first.surelock_rlock_timedlock(g1, LONG_WAIT_NS), 0, "lock")
        try:
            # Re-entry by the holder through the other handle deepens the same lock.
            self.assertRc(self.second.surelock_rlock_trylock(g2), 0, "re-entry")
            self.assertEqual(self.first.surelock_rlock_depth(g1), 2)
            self.assertRc(self.second.surelock_rlock_unlock(g2), 0, "unlock re-entry")
            self.assertEqual(self.second.surelock_rlock_depth(g2), 1)

            def outsider():
                g = self.guard(self.second)
                return (self.second.surelock_rlock_trylock(g),
                        self.second.surelock_rlock_timedlock(g, SHORT_WAIT_NS),
                        self.second.surelock_rlock_depth(g))

            self.assertEqual(in_thread(outsider), (errno.EBUSY, errno.ETIMEDOUT, 0))
        finally:
            self.assertRc(self.first.surelock_rlock_unlock(g1), 0, "unlock")
        self.assertEqual(self.first.surelock_rlock_depth(g1), 0)

        def taker():
            g = self.guard(self.second)
            rc = self.second.surelock_rlock_timedlock(g, LONG_WAIT_NS)
            if rc == 0:
                self.second.surelock_rlock_unlock(g)
            return rc

        self.assertRc(in_thread(taker), 0, "lock after release")

    def test_waiting_thread_gets_the_guard_when_the_holder_releases(self):
        g1 = self.guard(self.first)
        self.assertRc(self.first.surelock_rlock_timedlock(g1, LONG_WAIT_NS), 0)
        started = threading.Event()
        result = {}

        def waiter():
            g = self.guard(self.second)
            started.set()
            result["rc"] = self.second.surelock_rlock_timedlock(g, LONG_WAIT_NS)
            result["depth"] = self.second.surelock_rlock_depth(g)
            if result["rc"] == 0:
                self.second.surelock_rlock_unlock(g)

        t = threading.Thread(target=waiter)
        t.start()
        try:
            self.assertTrue(started.wait(JOIN_TIMEOUT))
            time.sleep(0.05)  # let it block (not required for correctness)
        finally:
            self.assertRc(self.first.surelock_rlock_unlock(g1), 0)
        t.join(JOIN_TIMEOUT)
        self.assertFalse(t.is_alive())
        self.assertEqual(result, {"rc": 0, "depth": 1})

    def test_python_thread_exiting_while_holding_makes_the_next_locker_see_eownerdead(self):
        out = c_void_p()
        name = self.name + b":thread-exit"
        self.assertRc(self.first.surelock_rlock_global(name, byref(out)), 0)

        def take_and_leave():
            g = c_void_p()
            self.second.surelock_rlock_global(name, byref(g))
            return self.second.surelock_rlock_timedlock(g, LONG_WAIT_NS)

        self.assertRc(in_thread(take_and_leave), 0, "lock in a thread that then exits")
        # Python's join() can return just before the OS thread runs its exit handlers (where
        # the library releases what the thread held, marked "owner died"): the timed lock
        # waits for that.
        self.assertRc(self.first.surelock_rlock_timedlock(out, LONG_WAIT_NS), errno.EOWNERDEAD)
        self.assertEqual(self.first.surelock_rlock_depth(out), 1)
        self.assertRc(self.first.surelock_rlock_unlock(out), 0)
        self.assertRc(self.first.surelock_rlock_trylock(out), 0, "usable afterwards")
        self.assertRc(self.first.surelock_rlock_unlock(out), 0)


# The holder process: opens the lock file, takes the lock, writes into the payload, says
# "locked" and sleeps until the parent SIGKILLs it.
IPC_HOLDER = r"""
import ctypes, os, sys, time
class O(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_uint32),
                ("mode", ctypes.c_uint32), ("payload_size", ctypes.c_size_t)]
lib = ctypes.CDLL(os.environ["SURELOCK_LIB"])
lib.surelock_ipc_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(O), ctypes.POINTER(ctypes.c_void_p)]
for f in ("surelock_ipc_lock", "surelock_ipc_unlock"):
    getattr(lib, f).argtypes = [ctypes.c_void_p]
lib.surelock_ipc_payload.restype = ctypes.c_void_p
lib.surelock_ipc_payload.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
o = O(ctypes.sizeof(O), 0, 0o600, int(sys.argv[2]))
m = ctypes.c_void_p()
rc = lib.surelock_ipc_open(sys.argv[1].encode(), ctypes.byref(o), ctypes.byref(m))
if rc: print("open", rc, flush=True); sys.exit(1)
rc = lib.surelock_ipc_lock(m)
if rc not in (0, 130): print("lock", rc, flush=True); sys.exit(1)
p = lib.surelock_ipc_payload(m, None)
ctypes.memmove(p, b"half-written by pid %d" % os.getpid(), 30)
print("locked", os.getpid(), flush=True)
if sys.argv[3] == "die":
    time.sleep(120)  # the parent kills us long before this
else:
    lib.surelock_ipc_unlock(m)
    print("unlocked", flush=True)
"""


class IpcAcrossProcessesTest(SurelockTestCase):
    PAYLOAD = 4096

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="surelock-ffi-")
        self.path = os.path.join(self.dir, "shared.lock").encode()
        self.handles = []
        self.children = []

    def tearDown(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.wait(JOIN_TIMEOUT)
            if p.stdout:
                p.stdout.close()
        for m in self.handles:
            lib.surelock_ipc_close(m)
        lib.surelock_ipc_unlink(self.path)
        shutil.rmtree(self.dir, ignore_errors=True)

    def open(self, payload=PAYLOAD):
        o = IpcOptions.defaults(payload_size=payload)
        m = new(lambda out: lib.surelock_ipc_open(self.path, byref(o), out))
        self.handles.append(m)
        return m

    def spawn_holder(self, mode):
        env = dict(os.environ, SURELOCK_LIB=LIB_PATH)
        p = subprocess.Popen([sys.executable, "-c", IPC_HOLDER, self.path.decode(),
                              str(self.PAYLOAD), mode],
                             stdout=subprocess.PIPE, bufsize=0, env=env)  # unbuffered:
        # select() below must see every line that readline() has not consumed yet
        self.children.append(p)
        return p

    def read_line(self, p, timeout=JOIN_TIMEOUT):
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        self.assertTrue(ready, "child said nothing within %ss" % timeout)
        return p.stdout.readline().decode().split()

    def test_survivor_of_sigkilled_holder_gets_eownerdead_recovers_and_continues(self):
        m = self.open()
        holder = self.spawn_holder("die")
        line = self.read_line(holder)
        self.assertEqual(line[:1], ["locked"], line)
        # While it is alive and holding, we are kept out.
        self.assertRc(lib.surelock_ipc_trylock(m), errno.EBUSY, "trylock while held")
        self.assertRc(lib.surelock_ipc_timedlock(m, SHORT_WAIT_NS), errno.ETIMEDOUT)

        os.kill(holder.pid, signal.SIGKILL)
        self.assertEqual(holder.wait(JOIN_TIMEOUT), -signal.SIGKILL)

        self.assertRc(lib.surelock_ipc_timedlock(m, LONG_WAIT_NS), errno.EOWNERDEAD,
                      "lock after the holder was killed")
        self.assertEqual(lib.surelock_ipc_needs_recovery(m), 1)
        size = c_size_t()
        p = lib.surelock_ipc_payload(m, byref(size))
        self.assertIsNotNone(p)
        self.assertGreaterEqual(size.value, self.PAYLOAD)
        # The dead holder's half-done work is visible; repair it, then mark it consistent.
        self.assertEqual(ctypes.string_at(p, 14), b"half-written b")
        ctypes.memmove(p, b"repaired\0", 9)
        self.assertRc(lib.surelock_ipc_consistent(m), 0, "consistent")
        self.assertEqual(lib.surelock_ipc_needs_recovery(m), 0)
        self.assertRc(lib.surelock_ipc_unlock(m), 0, "unlock")

        # The lock carries on as normal: another process takes and releases it...
        p2 = self.spawn_holder("release")
        self.assertEqual(self.read_line(p2)[:1], ["locked"])
        self.assertEqual(self.read_line(p2), ["unlocked"])
        self.assertEqual(p2.wait(JOIN_TIMEOUT), 0)
        # ...and so do we, with no recovery pending.
        self.assertRc(lib.surelock_ipc_timedlock(m, LONG_WAIT_NS), 0, "lock afterwards")
        self.assertEqual(lib.surelock_ipc_needs_recovery(m), 0)
        self.assertRc(lib.surelock_ipc_unlock(m), 0)

    def test_unlock_without_consistent_makes_the_lock_not_recoverable(self):
        m = self.open()
        holder = self.spawn_holder("die")
        self.assertEqual(self.read_line(holder)[:1], ["locked"])
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(JOIN_TIMEOUT)
        self.assertRc(lib.surelock_ipc_timedlock(m, LONG_WAIT_NS), errno.EOWNERDEAD)
        self.assertRc(lib.surelock_ipc_unlock(m), 0)
        self.assertRc(lib.surelock_ipc_timedlock(m, LONG_WAIT_NS), errno.ENOTRECOVERABLE)
        self.assertNotEqual(lib.surelock_errmsg(), b"")

    def test_two_handles_in_one_process_exclude_each_other_across_threads(self):
        a, b = self.open(), self.open()
        self.assertRc(lib.surelock_ipc_timedlock(a, LONG_WAIT_NS), 0)
        self.assertRc(lib.surelock_ipc_trylock(b), errno.EDEADLK, "same thread, other handle")
        self.assertEqual(in_thread(lib.surelock_ipc_trylock, b), errno.EBUSY)
        self.assertRc(lib.surelock_ipc_close(a), errno.EBUSY, "close while held")
        self.assertRc(lib.surelock_ipc_unlock(a), 0)


class GroupTest(SurelockTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="surelock-ffi-")
        self.path = os.path.join(self.dir, "group.lock").encode()
        self.mutex = new(lib.surelock_mutex_new)
        self.ipc = new(lambda out: lib.surelock_ipc_open(self.path, None, out))
        self.group = new(lib.surelock_group_new)
        self.assertRc(lib.surelock_group_add_ipc(self.group, self.ipc), 0, "add ipc")
        self.assertRc(lib.surelock_group_add_mutex(self.group, self.mutex), 0, "add mutex")

    def tearDown(self):
        self.assertRc(lib.surelock_group_free(self.group), 0, "group_free")
        self.assertRc(lib.surelock_mutex_free(self.mutex), 0, "mutex_free")
        self.assertRc(lib.surelock_ipc_close(self.ipc), 0, "ipc_close")
        lib.surelock_ipc_unlink(self.path)
        shutil.rmtree(self.dir, ignore_errors=True)

    def others_see(self):
        """(mutex trylock, ipc trylock) from another thread, releasing whatever it got."""
        def probe():
            rm = lib.surelock_mutex_trylock(self.mutex)
            ri = lib.surelock_ipc_trylock(self.ipc)
            if rm == 0:
                lib.surelock_mutex_unlock(self.mutex)
            if ri == 0:
                lib.surelock_ipc_unlock(self.ipc)
            return rm, ri
        return in_thread(probe)

    def test_group_of_mutex_and_ipc_takes_and_releases_both(self):
        self.assertEqual(lib.surelock_group_size(self.group), 2)
        self.assertRc(lib.surelock_group_add_mutex(self.group, self.mutex), errno.EEXIST)
        self.assertRc(lib.surelock_group_timedlock(self.group, LONG_WAIT_NS), 0, "group lock")
        self.assertEqual(self.others_see(), (errno.EBUSY, errno.EBUSY))
        self.assertRc(lib.surelock_mutex_free(self.mutex), errno.EBUSY, "free a member")
        self.assertRc(lib.surelock_group_free(self.group), errno.EBUSY, "free while held")
        self.assertRc(lib.surelock_group_unlock(self.group), 0, "group unlock")
        self.assertEqual(self.others_see(), (0, 0))
        self.assertRc(lib.surelock_group_unlock(self.group), errno.EPERM, "unlock again")

    def test_group_lock_is_edeadlk_and_takes_nothing_when_a_member_is_held(self):
        for take, give in ((lib.surelock_mutex_trylock, lib.surelock_mutex_unlock),
                           (lib.surelock_ipc_trylock, lib.surelock_ipc_unlock)):
            handle = self.mutex if take is lib.surelock_mutex_trylock else self.ipc
            self.assertRc(take(handle), 0, "take the member")
            self.assertRc(lib.surelock_group_lock(self.group), errno.EDEADLK, "group_lock")
            self.assertNotEqual(lib.surelock_errmsg(), b"")
            self.assertRc(lib.surelock_group_trylock(self.group), errno.EDEADLK, "trylock")
            self.assertRc(give(handle), 0, "release the member")
            # Nothing was left held by the refused group.
            self.assertEqual(self.others_see(), (0, 0))

    def test_group_held_by_another_thread_is_busy(self):
        self.assertRc(lib.surelock_group_timedlock(self.group, LONG_WAIT_NS), 0)
        try:
            def other():
                g = new(lib.surelock_group_new)
                try:
                    lib.surelock_group_add_mutex(g, self.mutex)
                    lib.surelock_group_add_ipc(g, self.ipc)
                    return (lib.surelock_group_trylock(g),
                            lib.surelock_group_timedlock(g, SHORT_WAIT_NS))
                finally:
                    lib.surelock_group_free(g)
            self.assertEqual(in_thread(other), (errno.EBUSY, errno.ETIMEDOUT))
        finally:
            self.assertRc(lib.surelock_group_unlock(self.group), 0)


class Waiter:
    """A surelock_waiter in ctypes memory: 64 bytes, 16-byte aligned (ctypes only promises
    the alignment of the element type, so over-allocate and align by hand)."""

    def __init__(self):
        self._buf = (ctypes.c_ubyte * (SURELOCK_WAITER_SIZE + 16))()
        addr = ctypes.addressof(self._buf)
        self.ptr = c_void_p(addr + (-addr) % 16)


class AmutexTest(SurelockTestCase):
    def setUp(self):
        self.m = new(lib.surelock_amutex_new)
        self.events = []  # (ctx, status, thread ident) per callback, in call order
        self.lock = threading.Lock()

        def on_wake(ctx, status):  # must not raise: nothing may unwind through C
            with self.lock:
                self.events.append((ctx, status, threading.get_ident()))

        self.callback = WAKE_FN(on_wake)  # kept alive as long as the test

    def tearDown(self):
        self.assertRc(lib.surelock_amutex_free(self.m), 0, "amutex_free")

    def test_queued_lock_async_callback_runs_on_the_unlocking_thread(self):
        self.assertRc(lib.surelock_amutex_trylock(self.m), 0)
        w = Waiter()
        self.assertRc(lib.surelock_amutex_lock_async(self.m, w.ptr, self.callback, 7),
                      errno.EINPROGRESS, "lock_async while held")
        self.assertEqual(self.events, [])
        self.assertRc(lib.surelock_amutex_trylock(self.m), errno.EBUSY, "trylock behind queue")
        # Release from another thread: the amutex is not owned by a thread.
        unlocker = in_thread(lambda: (lib.surelock_amutex_unlock(self.m), threading.get_ident()))
        self.assertRc(unlocker[0], 0, "unlock")
        self.assertEqual(self.events, [(7, 0, unlocker[1])])
        # The callback's owner now holds it.
        self.assertRc(lib.surelock_amutex_trylock(self.m), errno.EBUSY)
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)
        self.assertRc(lib.surelock_amutex_unlock(self.m), errno.EPERM, "unlock when free")

    def test_lock_async_on_a_free_amutex_returns_0_and_never_calls_back(self):
        w = Waiter()
        self.assertRc(lib.surelock_amutex_lock_async(self.m, w.ptr, self.callback, 1), 0)
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)
        self.assertEqual(self.events, [])

    def test_waiters_are_served_first_in_first_out_and_cancelled_ones_skipped(self):
        self.assertRc(lib.surelock_amutex_trylock(self.m), 0)
        waiters = [Waiter() for _ in range(5)]
        for i, w in enumerate(waiters, start=1):
            self.assertRc(lib.surelock_amutex_lock_async(self.m, w.ptr, self.callback, i),
                          errno.EINPROGRESS)
        self.assertRc(lib.surelock_amutex_cancel(self.m, waiters[2].ptr), 0, "cancel #3")
        self.assertRc(lib.surelock_amutex_cancel(self.m, waiters[2].ptr), errno.EINVAL)
        for _ in range(4):
            self.assertRc(lib.surelock_amutex_unlock(self.m), 0)
        self.assertEqual([e[:2] for e in self.events], [(1, 0), (2, 0), (4, 0), (5, 0)])
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)
        self.assertRc(lib.surelock_amutex_timedlock(self.m, 0), 0, "free at the end")
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)

    def test_callback_may_unlock_and_the_next_waiter_is_granted_in_the_same_dispatch(self):
        order = []

        def hand_on(ctx, status):
            order.append((ctx, status))
            if ctx != 3:  # the last one keeps it
                lib.surelock_amutex_unlock(self.m)

        cb = WAKE_FN(hand_on)
        self.assertRc(lib.surelock_amutex_trylock(self.m), 0)
        waiters = [Waiter() for _ in range(3)]
        for i, w in enumerate(waiters, start=1):
            self.assertRc(lib.surelock_amutex_lock_async(self.m, w.ptr, cb, i),
                          errno.EINPROGRESS)
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)
        self.assertEqual(order, [(1, 0), (2, 0), (3, 0)])
        self.assertRc(lib.surelock_amutex_trylock(self.m), errno.EBUSY)
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)

    def test_cancel_after_grant_is_ealready_and_the_canceller_holds_the_lock(self):
        self.assertRc(lib.surelock_amutex_trylock(self.m), 0)
        w = Waiter()
        self.assertRc(lib.surelock_amutex_lock_async(self.m, w.ptr, self.callback, 9),
                      errno.EINPROGRESS)
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)
        self.assertRc(lib.surelock_amutex_cancel(self.m, w.ptr), errno.EALREADY)
        self.assertEqual([e[:2] for e in self.events], [(9, 0)])
        self.assertRc(lib.surelock_amutex_unlock(self.m), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
