"""Shared fixtures for the surelock Python package tests.

Every test is bounded: a faulthandler watchdog dumps every thread's stack and exits the
process if one test runs longer than WATCHDOG_S, so a broken lock fails the suite instead of
hanging CI. Threads started by helpers are joined with a timeout, and a thread still alive
after it fails the test.
"""

import ctypes
import faulthandler
import os
import sys
import threading

import pytest

WATCHDOG_S = 120


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def lib():
    """libsurelock.so.1 through ctypes: dlopen by soname returns the copy the extension's
    DT_NEEDED already loaded, so C calls here and the package act on the same objects."""
    import surelock  # noqa: F401  (loads libsurelock.so.1 first)
    handle = ctypes.CDLL("libsurelock.so.1")
    handle.surelock_errmsg.restype = ctypes.c_char_p
    handle.surelock_rlock_global.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    for name in ("surelock_rlock_lock", "surelock_rlock_trylock", "surelock_rlock_unlock"):
        getattr(handle, name).argtypes = [ctypes.c_void_p]
    handle.surelock_rlock_depth.argtypes = [ctypes.c_void_p]
    handle.surelock_rlock_depth.restype = ctypes.c_uint
    return handle


class Worker:
    """A thread running fn; join() fails the test if it does not finish in time and
    re-raises whatever fn raised."""

    def __init__(self, fn, *args):
        self.result = None
        self.error = None

        def run():
            try:
                self.result = fn(*args)
            except BaseException as e:  # noqa: B902 - reported through join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout=30):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker thread did not finish within %ss" % timeout
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def tmp_lock_path(tmp_path):
    return str(tmp_path / "test.lock")


def wait_until(predicate, timeout=10.0, step=0.002):
    import time
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within %ss" % timeout)
        time.sleep(step)


def in_child(fn, timeout=30):
    """Runs fn in a forked child; returns its exit status (0 = fn returned normally)."""
    import time
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:  # noqa: B902
            import traceback
            traceback.print_exc()
        os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("child did not finish within %ss" % timeout)
        time.sleep(0.005)
