"""IpcLock: the robust cross-process lock in a file, its payload, recovery, bad files."""

import errno
import os
import signal
import stat
import struct
import threading
import time

import pytest

import surelock
from conftest import Worker, in_child


def spawn_holder(path, payload_size=0, body=None):
    """Forks a child that takes the lock (optionally runs body(lock)), then reports through a
    pipe and sleeps holding it. Returns (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            lock = surelock.IpcLock(path, payload_size=payload_size)
            lock.acquire()
            if body:
                body(lock)
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(3)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


def reap(pid):
    for _ in range(2000):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    raise AssertionError("child %d not reaped" % pid)


def test_the_survivor_of_a_sigkilled_holder_gets_owner_died_and_its_payload(tmp_lock_path):
    def write_half(lock):
        lock.payload[0:8] = struct.pack("=Q", 41)  # the child's half-done update

    pid = spawn_holder(tmp_lock_path, payload_size=64, body=write_half)
    lock = surelock.IpcLock(tmp_lock_path, payload_size=64)
    assert lock.acquire(False) is False
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    with pytest.warns(surelock.OwnerDiedWarning):
        assert lock.acquire(timeout=10) is True  # not an exception
    assert lock.owner_died and lock.needs_recovery
    assert lock.status().needs_recovery
    assert struct.unpack("=Q", lock.payload[0:8])[0] == 41  # the dead holder's write survives
    lock.payload[0:8] = struct.pack("=Q", 42)  # repaired
    lock.consistent()
    assert not lock.owner_died and not lock.needs_recovery
    lock.release()
    # The next process sees the repaired payload and a healthy lock.
    def check():
        other = surelock.IpcLock(tmp_lock_path)
        with other:
            assert not other.owner_died
            assert struct.unpack("=Q", other.payload[0:8])[0] == 42
    assert in_child(check) == 0
    st = lock.status()
    assert st.owner_deaths == 1 and not st.held and not st.needs_recovery


def test_a_with_block_that_raises_after_an_owner_death_leaves_the_lock_unrepaired(tmp_lock_path):
    pid = spawn_holder(tmp_lock_path)
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    lock = surelock.IpcLock(tmp_lock_path)
    with pytest.warns(surelock.OwnerDiedWarning):
        with pytest.raises(ZeroDivisionError):
            with lock:
                assert lock.owner_died
                1 / 0  # the repair failed: consistent() never called
    assert lock.status().not_recoverable
    with pytest.raises(OSError) as e:
        lock.acquire()
    assert e.value.errno == errno.ENOTRECOVERABLE
    assert e.value.filename == tmp_lock_path


def test_payload_is_shared_between_processes_under_the_lock(tmp_lock_path):
    lock = surelock.IpcLock(tmp_lock_path, payload_size=8)
    assert len(lock.payload) == 8 and not lock.payload.readonly

    def add():
        mine = surelock.IpcLock(tmp_lock_path, payload_size=8)
        for _ in range(500):
            with mine:
                v = struct.unpack("=Q", mine.payload)[0]
                mine.payload[:] = struct.pack("=Q", v + 1)

    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                add()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    add()
    for pid in pids:
        assert os.waitstatus_to_exitcode(reap(pid)) == 0
    with lock:
        assert struct.unpack("=Q", lock.payload)[0] == 2000


def test_two_handles_in_one_process_exclude_each_other_across_threads(tmp_lock_path):
    a = surelock.IpcLock(tmp_lock_path)
    b = surelock.IpcLock(tmp_lock_path)
    with a:
        assert Worker(lambda: b.acquire(timeout=0.05)).join() is False
    assert Worker(lambda: b.acquire(False) and (b.release() or True)).join()


def test_reacquire_is_edeadlk_unless_recursive(tmp_path):
    plain = surelock.IpcLock(str(tmp_path / "plain"))
    with plain:
        with pytest.raises(OSError) as e:
            plain.acquire()
        assert e.value.errno == errno.EDEADLK
    rec = surelock.IpcLock(str(tmp_path / "rec"), recursive=True)
    assert rec.recursive
    with rec:
        with rec:
            assert rec.status().held
    assert not rec.status().held
    with pytest.raises(RuntimeError):
        rec.release()
    with pytest.raises(OSError) as e:  # recursion is fixed at creation
        surelock.IpcLock(str(tmp_path / "plain"), recursive=True)
    assert e.value.errno == errno.EINVAL


def test_bad_arguments_raise_before_the_file_is_touched(tmp_path):
    path = str(tmp_path / "never")
    with pytest.raises(TypeError):
        surelock.IpcLock(42)
    with pytest.raises(ValueError):
        surelock.IpcLock(path, payload_size=-1)
    with pytest.raises(TypeError):
        surelock.IpcLock(path, payload_size="8")
    with pytest.raises(ValueError):
        surelock.IpcLock(path, mode=0o1777)
    with pytest.raises(TypeError):
        surelock.IpcLock(path, True)  # the options are keyword-only
    with pytest.raises(ValueError):
        surelock.IpcLock("")
    assert not os.path.exists(path)
    lock = surelock.IpcLock(path)
    with pytest.raises(ValueError):
        lock.acquire(False, 1)


def test_foreign_symlinked_and_unsafe_files_raise_the_librarys_errors_untouched(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"not a lock file\n" * 300)
    before = foreign.read_bytes()
    with pytest.raises(OSError) as e:
        surelock.IpcLock(str(foreign))
    assert e.value.errno == errno.EPROTO and str(foreign) in str(e.value)
    assert e.value.strerror  # the library's message, not an empty one
    assert foreign.read_bytes() == before

    link = tmp_path / "link"
    os.symlink(str(tmp_path / "target"), str(link))
    with pytest.raises(OSError) as e:
        surelock.IpcLock(str(link))
    assert e.value.errno == errno.ELOOP
    assert not (tmp_path / "target").exists()

    loose = tmp_path / "loose"
    surelock.IpcLock(str(loose)).close()
    os.chmod(str(loose), 0o666)
    with pytest.raises(PermissionError) as e:
        surelock.IpcLock(str(loose))
    assert e.value.errno == errno.EPERM
    assert stat.S_IMODE(os.stat(str(loose)).st_mode) == 0o666

    with pytest.raises(FileNotFoundError):
        surelock.IpcLock(str(tmp_path / "missing"), create=False)
    with pytest.raises(OSError) as e:
        surelock.IpcLock(str(loose.with_name("sized")), payload_size=8).close()
        surelock.IpcLock(str(loose.with_name("sized")), payload_size=16)
    assert e.value.errno == errno.EINVAL


def test_close_is_refused_while_held_or_while_a_payload_view_lives(tmp_lock_path):
    lock = surelock.IpcLock(tmp_lock_path, payload_size=16)
    view = lock.payload
    with pytest.raises(BufferError):
        lock.close()
    view.release()
    lock.acquire()
    with pytest.raises(OSError) as e:
        lock.close()
    assert e.value.errno == errno.EBUSY
    lock.release()
    lock.close()
    assert lock.closed
    lock.close()  # idempotent
    with pytest.raises(ValueError):
        lock.acquire()
    with pytest.raises(ValueError):
        lock.payload


def test_a_payload_view_keeps_its_mapping_alive_after_the_lock_object_is_dropped(tmp_lock_path):
    view = surelock.IpcLock(tmp_lock_path, payload_size=32).payload
    import gc
    gc.collect()
    view[0:4] = b"abcd"  # still mapped: the view holds the IpcLock
    assert bytes(view[0:4]) == b"abcd"
    view.release()
    with surelock.IpcLock(tmp_lock_path) as again:
        assert bytes(again.payload[0:4]) == b"abcd"


def test_a_handle_dropped_while_held_is_kept_mapped(tmp_lock_path):
    lock = surelock.IpcLock(tmp_lock_path)
    lock.acquire()
    del lock  # close() would be EBUSY: the mapping is leaked, never unmapped under a holder
    other = surelock.IpcLock(tmp_lock_path)
    assert Worker(lambda: other.acquire(False)).join() is False


def test_blocking_acquire_answers_keyboardinterrupt(tmp_lock_path):
    pid = spawn_holder(tmp_lock_path)
    try:
        lock = surelock.IpcLock(tmp_lock_path)
        threading.Timer(0.15, signal.pthread_kill,
                        (threading.main_thread().ident, signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()
        assert time.monotonic() - t0 < 0.15 + 0.1
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)


def test_a_group_of_ipc_and_in_process_locks(tmp_path):
    a = surelock.IpcLock(str(tmp_path / "a"))
    b = surelock.IpcLock(str(tmp_path / "b"))
    m = surelock.Lock()
    g = surelock.Group(m, b, a)
    with g:
        assert a.status().held and b.status().held
        assert Worker(lambda: m.acquire(False)).join() is False
    assert not a.status().held and not b.status().held
    with pytest.raises(FileExistsError):
        surelock.Group(a, surelock.IpcLock(str(tmp_path / "a")))  # the same file
    closed = surelock.IpcLock(str(tmp_path / "c"))
    closed.close()
    with pytest.raises(ValueError):
        surelock.Group(closed)


def test_a_group_reports_a_dead_ipc_holder_on_that_member(tmp_path):
    path = str(tmp_path / "g")
    pid = spawn_holder(path)
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    member = surelock.IpcLock(path)
    g = surelock.Group(surelock.Lock(), member)
    with pytest.warns(surelock.OwnerDiedWarning):
        g.acquire(timeout=10)
    assert g.owner_died and member.owner_died and member.needs_recovery
    member.consistent()
    g.release()
    assert not member.status().needs_recovery


def test_status_describes_the_file_without_taking_it(tmp_lock_path):
    lock = surelock.IpcLock(tmp_lock_path, payload_size=100)
    st = lock.status()
    assert (st.held, st.owner_deaths, st.same_boot, st.payload_size) == (False, 0, True, 100)
    with lock:
        st = lock.status()
        assert st.held and st.holder_tid == threading.get_native_id() and st.holder_alive


def test_status_with_an_unreadable_boot_id_is_an_error_not_another_boot(tmp_lock_path,
                                                                        monkeypatch):
    import builtins
    lock = surelock.IpcLock(tmp_lock_path)
    real_open = builtins.open

    def no_boot_id(path, *args, **kwargs):
        if path == "/proc/sys/kernel/random/boot_id":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    with lock:
        monkeypatch.setattr(builtins, "open", no_boot_id)
        with pytest.raises(OSError) as e:
            lock.status()
        monkeypatch.undo()
    assert e.value.errno == errno.EACCES and "boot_id" in str(e.value)


def test_an_owner_death_warning_turned_into_an_error_keeps_the_ipc_lock_held(tmp_lock_path):
    import warnings
    pid = spawn_holder(tmp_lock_path)
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    lock = surelock.IpcLock(tmp_lock_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", surelock.OwnerDiedWarning)
        with pytest.raises(surelock.OwnerDiedWarning):
            lock.acquire()
    # Still held and still in need of recovery: releasing now would make it unrecoverable.
    assert lock.needs_recovery and lock.status().held
    lock.consistent()
    lock.release()
    assert not lock.status().needs_recovery
