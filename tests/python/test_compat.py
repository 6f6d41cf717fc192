"""surelock.compat: filelock's FileLock and pymutex's SharedMutex, switched by one import.
The FileLock tests run against Debian's python3-filelock too, to prove the shim behaves the
way that code's users rely on."""

import os
import signal
import time

import pytest

from conftest import Worker, in_child
from surelock.compat import filelock as compat_filelock
from surelock.compat.pymutex import SharedMutex

IMPLS = [compat_filelock]
try:
    import filelock as real_filelock
    IMPLS.append(real_filelock)
except ImportError:  # the comparison needs python3-filelock; the shim's own tests still run
    real_filelock = None


@pytest.fixture(params=IMPLS, ids=lambda m: m.__name__)
def impl(request):
    return request.param


def test_filelock_with_block_and_counter(impl, tmp_path):
    lock = impl.FileLock(str(tmp_path / "a.lock"))
    assert not lock.is_locked
    with lock:
        assert lock.is_locked
        with lock:  # re-entrant in the holder
            assert lock.is_locked
        assert lock.is_locked
    assert not lock.is_locked
    with lock.acquire() as same:  # acquire() returns a context manager
        assert same is lock and lock.is_locked
    assert not lock.is_locked
    assert lock.lock_file == str(tmp_path / "a.lock")


def test_filelock_timeout_is_raised_while_another_process_holds_it(impl, tmp_path):
    path = str(tmp_path / "b.lock")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            held = impl.FileLock(path)
            held.acquire()
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"x"
        lock = impl.FileLock(path, timeout=0.1)
        t0 = time.monotonic()
        with pytest.raises(impl.Timeout):
            lock.acquire()
        assert time.monotonic() - t0 >= 0.09
        with pytest.raises(impl.Timeout):
            lock.acquire(blocking=False)
        with pytest.raises(TimeoutError):  # filelock's Timeout is a TimeoutError
            lock.acquire(timeout=0)
        assert not lock.is_locked
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    lock = impl.FileLock(path, timeout=5)
    with lock:  # the dead holder's lock is free again
        assert lock.is_locked


def test_filelock_release_force_drops_every_level(impl, tmp_path):
    lock = impl.FileLock(str(tmp_path / "c.lock"))
    lock.acquire()
    lock.acquire()
    lock.release(force=True)
    assert not lock.is_locked
    other = impl.FileLock(str(tmp_path / "c.lock"))
    assert Worker(lambda: other.acquire(timeout=1) and other.release() is None).join()


def test_surelock_filelock_reports_a_holder_that_died(tmp_path):
    path = str(tmp_path / "d.lock")

    def die_holding():
        held = compat_filelock.FileLock(path)  # kept: FileLock.__del__ releases
        held.acquire()
        os.kill(os.getpid(), signal.SIGKILL)

    assert in_child(die_holding) == -signal.SIGKILL
    lock = compat_filelock.FileLock(path, timeout=5)
    with pytest.warns(Warning):
        lock.acquire()
    assert lock.owner_died  # filelock cannot tell; surelock can
    lock.release()
    again = compat_filelock.FileLock(path, timeout=5)
    with again:
        assert not again.owner_died  # marked consistent by the shim


def test_surelock_filelock_adopts_the_empty_file_filelock_leaves_behind(tmp_path):
    path = tmp_path / "e.lock"
    path.write_bytes(b"")
    with compat_filelock.FileLock(str(path)):
        assert path.stat().st_size > 0


def test_shared_mutex_lock_unlock_across_processes(tmp_path):
    path = str(tmp_path / "m")
    m = SharedMutex(path)
    assert m.lock() is True

    def child():
        other = SharedMutex(path)
        assert other.lock(blocking=False) is False
        assert other.lock(timeout=0.05) is False

    assert in_child(child) == 0
    m.unlock()

    def child2():
        other = SharedMutex(path)
        with other:
            pass

    assert in_child(child2) == 0
    with pytest.raises(RuntimeError):
        m.unlock()


def test_shared_mutex_survives_a_sigkilled_holder(tmp_path):
    path = str(tmp_path / "m2")

    def die_holding():
        SharedMutex(path).lock()
        os.kill(os.getpid(), signal.SIGKILL)

    assert in_child(die_holding) == -signal.SIGKILL
    m = SharedMutex(path)
    with pytest.warns(Warning):
        assert m.lock(timeout=5)
    assert m.owner_died
    m.unlock()
    assert m.lock(timeout=5) and not m.owner_died
    m.unlock()
