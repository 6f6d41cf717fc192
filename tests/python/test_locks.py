"""The in-process classes' contract: Lock, RLock, RWLock, Condition, Semaphore,
BoundedSemaphore, Group; errors, bad input, owner death, signals, the GIL, lifetimes."""

import ctypes
import errno
import gc
import os
import signal
import threading
import time
import warnings
import weakref

import pytest

import surelock
from conftest import Worker, in_child, wait_until

IN_PROCESS = [surelock.Lock, surelock.RLock]


def hold_in_thread(acquire, release):
    """Takes a lock in another thread and keeps it until the returned event is set."""
    taken, done = threading.Event(), threading.Event()

    def run():
        acquire()
        taken.set()
        assert done.wait(30)
        release()

    w = Worker(run)
    assert taken.wait(10)
    return done, w


def die_holding(acquire):
    """A thread that exits holding the lock (its owner-death notice goes to the next one)."""
    Worker(acquire).join()


# ---- Lock -----------------------------------------------------------------------------------

def test_lock_reacquire_by_its_holder_is_oserror_edeadlk_in_every_form():
    lock = surelock.Lock()
    assert lock.acquire()
    for call in (lambda: lock.acquire(), lambda: lock.acquire(False),
                 lambda: lock.acquire(timeout=0.01)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EDEADLK
        assert "already holds" in str(e.value)  # the library's errmsg
    lock.release()


def test_lock_release_by_a_thread_that_does_not_hold_it_is_runtimeerror():
    lock = surelock.Lock()
    with pytest.raises(RuntimeError):
        lock.release()
    done, w = hold_in_thread(lock.acquire, lock.release)
    with pytest.raises(RuntimeError):
        lock.release()
    done.set()
    w.join()


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_nonblocking_and_timed_acquire_fail_while_another_thread_holds_it(kind):
    lock = kind()
    done, w = hold_in_thread(lock.acquire, lock.release)
    assert lock.acquire(False) is False
    assert lock.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert lock.acquire(timeout=0.1) is False
    assert time.monotonic() - t0 >= 0.09
    assert lock.locked()
    done.set()
    w.join()
    assert not lock.locked()
    assert lock.acquire(timeout=5) is True
    lock.release()


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_blocked_acquire_gets_the_lock_when_the_holder_releases(kind):
    lock = kind()
    done, w = hold_in_thread(lock.acquire, lock.release)
    waiter = Worker(lambda: lock.acquire(timeout=20) and (lock.release() or True))
    time.sleep(0.05)
    done.set()
    w.join()
    assert waiter.join() is True


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_mutual_exclusion_holds_under_eight_threads(kind):
    lock = kind()
    inside = [0]
    total = [0]
    bad = []

    def work():
        for _ in range(2000):
            with lock:
                inside[0] += 1
                if inside[0] != 1:
                    bad.append(inside[0])
                total[0] += 1
                inside[0] -= 1

    workers = [Worker(work) for _ in range(8)]
    for w in workers:
        w.join(60)
    assert bad == []
    assert total[0] == 16000


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_bad_arguments_raise_before_any_c_call(kind):
    lock = kind()
    with pytest.raises(ValueError):
        lock.acquire(False, 1)  # a timeout with blocking=False
    with pytest.raises(ValueError):
        lock.acquire(timeout=-2)
    with pytest.raises(ValueError):
        lock.acquire(timeout=float("nan"))
    with pytest.raises(TypeError):
        lock.acquire(timeout="1")
    with pytest.raises(TypeError):
        lock.acquire(True, 1, 2)
    with pytest.raises(TypeError):
        lock.acquire(block=True)
    assert not lock.locked()  # nothing was taken by a rejected call


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_a_thread_dying_holding_it_makes_the_next_acquire_succeed_with_owner_died(kind):
    lock = kind()
    die_holding(lock.acquire)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lock.acquire(timeout=5) is True  # never an exception
    assert lock.owner_died is True
    assert [w.category for w in caught] == [surelock.OwnerDiedWarning]
    lock.release()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lock.acquire() is True
    assert lock.owner_died is False  # reported once per death
    assert caught == []
    lock.release()


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_an_owner_death_warning_turned_into_an_error_releases_the_lock_first(kind):
    lock = kind()
    die_holding(lock.acquire)
    with warnings.catch_warnings():
        warnings.simplefilter("error", surelock.OwnerDiedWarning)
        with pytest.raises(surelock.OwnerDiedWarning):
            with lock:
                pytest.fail("the body must not run")
    assert not lock.locked()  # not left held by a with-statement that never entered
    assert lock.acquire(False) and lock.owner_died is False
    lock.release()


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_blocking_acquire_in_the_main_thread_lets_keyboardinterrupt_through_within_100ms(kind):
    assert threading.current_thread() is threading.main_thread()
    lock = kind()
    done, w = hold_in_thread(lock.acquire, lock.release)
    sent = []

    def interrupt():
        time.sleep(0.2)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    killer = Worker(interrupt)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    latency = time.monotonic() - sent[0]
    killer.join()
    assert latency < 0.1, "KeyboardInterrupt took %.3f s" % latency
    done.set()
    w.join()
    assert lock.acquire(False)  # the interrupted acquire left nothing behind
    lock.release()


@pytest.mark.parametrize("which", ["group", "rwlock"])
def test_blocking_group_and_rwlock_acquires_answer_keyboardinterrupt_within_100ms(which):
    member = surelock.Lock()
    if which == "group":
        lock = surelock.Group(surelock.RLock(), member)
        done, w = hold_in_thread(member.acquire, member.release)
        acquire = lock.acquire
    else:
        lock = surelock.RWLock()
        done, w = hold_in_thread(lock.acquire_read, lock.release)
        acquire = lock.acquire_write
    sent = []

    def interrupt():
        time.sleep(0.2)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    killer = Worker(interrupt)
    with pytest.raises(KeyboardInterrupt):
        acquire()
    latency = time.monotonic() - sent[0]
    killer.join()
    done.set()
    w.join()
    assert latency < 0.1, "KeyboardInterrupt took %.3f s" % latency
    assert acquire(timeout=5)  # nothing was left half-taken
    lock.release()


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_a_waiting_acquire_releases_the_gil(kind):
    lock = kind()
    done, w = hold_in_thread(lock.acquire, lock.release)
    stop = threading.Event()
    count = [0]

    def spin():
        while not stop.is_set():
            count[0] += 1

    spinner = Worker(spin)
    time.sleep(0.02)
    before = count[0]
    assert lock.acquire(timeout=0.3) is False
    progressed = count[0] - before
    stop.set()
    spinner.join()
    done.set()
    w.join()
    assert progressed > 1000, "other Python threads made no progress while we waited"


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_a_lock_dropped_while_held_is_leaked_not_freed_under_its_holder(kind):
    lock = kind()
    lock.acquire()
    ref = weakref.ref(lock)
    del lock
    gc.collect()
    assert ref() is None  # the Python object is gone; the C lock is kept (EBUSY on free)
    # The holder's thread record still names the C lock: exiting must not touch freed memory.
    w = Worker(lambda: [kind().acquire() for _ in range(3)])
    w.join()


def test_lock_repr_and_weakref_follow_threading():
    lock = surelock.Lock()
    assert repr(lock).startswith("<unlocked surelock.Lock object at ")
    with lock:
        assert repr(lock).startswith("<locked surelock.Lock object at ")
    assert weakref.ref(lock)() is lock


# ---- RLock ---------------------------------------------------------------------------------

def test_rlock_reenters_and_counts_depth():
    lock = surelock.RLock()
    assert lock.depth == 0
    with lock:
        with lock:
            assert lock.depth == 2
            assert Worker(lambda: lock.acquire(False)).join() is False
        assert lock.depth == 1
    assert lock.depth == 0
    with pytest.raises(RuntimeError):
        lock.release()


def test_rlock_names_are_checked_before_the_c_call():
    with pytest.raises(ValueError):
        surelock.RLock("")
    with pytest.raises(ValueError):
        surelock.RLock("x" * 256)
    with pytest.raises(ValueError):
        surelock.RLock("a\0b")
    with pytest.raises(TypeError):
        surelock.RLock(42)
    assert surelock.RLock("x" * 255).name == "x" * 255


def test_two_rlocks_with_one_name_are_one_lock():
    a = surelock.RLock("test_locks:one-name")
    b = surelock.RLock(b"test_locks:one-name")
    with a:
        assert b.depth == 1  # re-entry through the other object
        assert Worker(lambda: b.acquire(False)).join() is False


def test_the_c_guard_and_the_python_rlock_of_one_name_are_one_lock(lib):
    name = b"libfoo.so.3:test_locks"
    guard = ctypes.c_void_p()
    assert lib.surelock_rlock_global(name, ctypes.byref(guard)) == 0
    py = surelock.RLock(name.decode())
    # Held from Python: C in this thread sees depth 1, C in another thread is kept out.
    with py:
        assert lib.surelock_rlock_depth(guard) == 1
        assert Worker(lambda: lib.surelock_rlock_trylock(guard)).join() == errno.EBUSY
    # Held from C in another thread: Python is kept out until C releases.
    done, w = hold_in_thread(lambda: lib.surelock_rlock_lock(guard),
                             lambda: lib.surelock_rlock_unlock(guard))
    assert py.acquire(False) is False
    assert py.locked()
    done.set()
    w.join()
    assert py.acquire(timeout=5)
    assert lib.surelock_rlock_depth(guard) == 1
    py.release()
    assert lib.surelock_rlock_depth(guard) == 0


def test_condition_helpers_save_and_restore_the_rlock_depth():
    lock = surelock.RLock()
    with pytest.raises(RuntimeError):
        lock._release_save()
    lock.acquire()
    lock.acquire()
    state = lock._release_save()
    assert lock.depth == 0 and not lock._is_owned()
    lock._acquire_restore(state)
    assert lock.depth == 2 and lock._is_owned()
    lock.release()
    lock.release()


# ---- RWLock -------------------------------------------------------------------------------

def test_rwlock_readers_share_and_writers_exclude():
    rw = surelock.RWLock()
    with rw.read():
        assert Worker(lambda: rw.acquire_read(False) and (rw.release() or True)).join()
        assert Worker(lambda: rw.acquire_write(False)).join() is False
    with rw.write():
        assert Worker(lambda: rw.acquire_read(timeout=0.05)).join() is False
        assert Worker(lambda: rw.acquire_write(False)).join() is False
    with pytest.raises(RuntimeError):
        rw.release()


def test_rwlock_asked_again_by_its_holder_is_edeadlk_in_either_mode():
    rw = surelock.RWLock()
    with rw.read():
        for again in (rw.acquire_read, rw.acquire_write):
            with pytest.raises(OSError) as e:
                again()
            assert e.value.errno == errno.EDEADLK


def test_a_writer_dying_holding_the_rwlock_is_reported_to_the_next_acquirer():
    rw = surelock.RWLock()
    die_holding(rw.acquire_write)
    with pytest.warns(surelock.OwnerDiedWarning):
        with rw.read():
            assert rw.owner_died


# ---- Condition ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [surelock.Lock, surelock.RLock, None])
def test_condition_wait_notify_over_each_surelock_lock(kind):
    cond = surelock.Condition(kind() if kind else None)
    items = []

    def consume():
        with cond:
            assert cond.wait_for(lambda: items, timeout=20)
            return items.pop()

    c = Worker(consume)
    time.sleep(0.05)
    with cond:
        items.append(7)
        cond.notify()
    assert c.join() == 7
    with cond:
        assert cond.wait(0.01) is False
    with pytest.raises(RuntimeError):
        cond.notify()


def test_condition_notify_n_wakes_exactly_n_waiters():
    cond = surelock.Condition(surelock.Lock())
    woken = []
    ready = threading.Semaphore(0)

    def wait():
        with cond:
            ready.release()
            if cond.wait(timeout=20):
                woken.append(1)

    workers = [Worker(wait) for _ in range(5)]
    for _ in range(5):
        assert ready.acquire(timeout=10)
    with cond:
        cond.notify(2)
    wait_until(lambda: len(woken) >= 2)
    time.sleep(0.2)  # no third one wakes
    assert len(woken) == 2
    with cond:
        cond.notify_all()
    for w in workers:
        w.join()
    assert len(woken) == 5


# ---- Semaphore / BoundedSemaphore ---------------------------------------------------------

def test_semaphore_serves_blocked_threads_first_in_first_out():
    sem = surelock.Semaphore(0)
    order = []
    workers = []
    for i in range(6):
        workers.append(Worker(lambda i=i: sem.acquire(timeout=20) and order.append(i)))
        wait_until(lambda: sem._blocked == i + 1)  # queued before the next one starts
    for k in range(6):
        sem.release()  # one permit at a time: it must go to the oldest waiter
        wait_until(lambda: len(order) == k + 1)
    for w in workers:
        w.join()
    assert order == list(range(6))


def test_semaphore_try_never_overtakes_a_queued_waiter():
    sem = surelock.Semaphore(0)
    w = Worker(lambda: sem.acquire(timeout=20))
    wait_until(lambda: sem._blocked == 1)
    sem.release()  # handed to the queued thread, not left for acquire(False)
    assert w.join() is True
    assert sem.acquire(False) is False


def test_semaphore_bad_values():
    with pytest.raises(ValueError):
        surelock.Semaphore(-1)
    with pytest.raises(TypeError):
        surelock.Semaphore(1.5)
    with pytest.raises(ValueError):
        surelock.Semaphore(2**62)
    sem = surelock.Semaphore(1)
    with pytest.raises(ValueError):
        sem.release(0)
    with pytest.raises(ValueError):
        sem.acquire(False, 1)
    sem.release(3)
    assert sem._value == 4


def test_bounded_semaphore_refuses_to_go_past_its_initial_value():
    sem = surelock.BoundedSemaphore(2)
    with pytest.raises(ValueError):
        sem.release()
    sem.acquire()
    sem.acquire()
    with pytest.raises(ValueError):
        sem.release(3)
    sem.release(2)
    assert repr(sem).endswith("value=2/2>")


def test_an_interrupted_semaphore_wait_leaves_the_queue_and_leaks_no_permit():
    sem = surelock.Semaphore(0)

    def interrupt():
        time.sleep(0.15)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    killer = Worker(interrupt)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sem.acquire()
    assert time.monotonic() - t0 < 0.15 + 0.1
    killer.join()
    # Not queued any more: a release goes to the next acquirer, not to a ghost.
    sem.release()
    assert sem.acquire(False) is True
    assert sem._value == 0


def test_a_timed_out_semaphore_wait_keeps_fifo_for_the_rest():
    sem = surelock.Semaphore(0)
    first = Worker(lambda: sem.acquire(timeout=0.2))
    wait_until(lambda: sem._blocked == 1)
    second = Worker(lambda: sem.acquire(timeout=20))
    wait_until(lambda: sem._blocked == 2)
    assert first.join() is False
    sem.release()
    assert second.join() is True
    assert sem._value == 0


# ---- Group ---------------------------------------------------------------------------------

def test_group_takes_every_member_or_none():
    a, b, r = surelock.Lock(), surelock.Lock(), surelock.RLock()
    g = surelock.Group(a, b, r)
    assert len(g) == 3
    done, w = hold_in_thread(b.acquire, b.release)
    assert g.acquire(False) is False
    assert g.acquire(timeout=0.05) is False
    assert not a.locked() and not r.locked()  # nothing kept from the failed attempts
    done.set()
    w.join()
    with g:
        assert Worker(lambda: a.acquire(False)).join() is False
        assert Worker(lambda: r.acquire(False)).join() is False
    assert not a.locked() and not b.locked() and not r.locked()


def test_groups_in_opposite_orders_never_deadlock():
    locks = [surelock.Lock() for _ in range(4)]
    g1 = surelock.Group(*locks)
    g2 = surelock.Group(*reversed(locks))
    count = [0]

    def work(g):
        for _ in range(500):
            with g:
                count[0] += 1

    ws = [Worker(work, g1), Worker(work, g2), Worker(work, g1)]
    for w in ws:
        w.join(60)
    assert count[0] == 1500


def test_one_group_shared_by_several_threads_is_serialised():
    g = surelock.Group(surelock.Lock(), surelock.RLock())
    inside = [0]
    bad = []

    def work():
        for _ in range(300):
            with g:
                inside[0] += 1
                if inside[0] != 1:
                    bad.append(1)
                inside[0] -= 1

    ws = [Worker(work) for _ in range(4)]
    for w in ws:
        w.join(60)
    assert bad == []


def test_group_bad_members_and_duplicates():
    with pytest.raises(TypeError):
        surelock.Group(threading.Lock())
    with pytest.raises(TypeError):
        surelock.Group(surelock.Lock(), "x")
    with pytest.raises(TypeError):
        surelock.Group(surelock.Lock(), exclusive=True)
    a = surelock.Lock()
    with pytest.raises(FileExistsError) as e:  # EEXIST from the library
        surelock.Group(a, a)
    assert e.value.errno == errno.EEXIST
    rw = surelock.RWLock()
    with pytest.raises(ValueError):
        surelock.Group(rw, shared=[surelock.RWLock()])  # not a member


def test_group_with_a_member_already_held_is_edeadlk_and_takes_nothing():
    a, b = surelock.Lock(), surelock.Lock()
    g = surelock.Group(a, b)
    with a:
        with pytest.raises(OSError) as e:
            g.acquire()
        assert e.value.errno == errno.EDEADLK
        assert not b.locked()
    with g:
        with pytest.raises(OSError) as e:
            g.acquire()  # the group again, by its holder
        assert e.value.errno == errno.EDEADLK
    with pytest.raises(RuntimeError):
        g.release()


def test_group_shared_rwlock_members_admit_other_readers():
    rw = surelock.RWLock()
    g = surelock.Group(surelock.Lock(), rw, shared=True)
    with g:
        assert Worker(lambda: rw.acquire_read(False) and (rw.release() or True)).join()
        assert Worker(lambda: rw.acquire_write(False)).join() is False
    g2 = surelock.Group(rw)  # exclusive by default
    with g2:
        assert Worker(lambda: rw.acquire_read(False)).join() is False


def test_a_group_keeps_its_members_alive_and_a_member_cannot_leave_early():
    a = surelock.Lock()
    ref = weakref.ref(a)
    g = surelock.Group(a, surelock.Lock())
    del a
    gc.collect()
    assert ref() is not None and g.members[0] is ref()
    with g:
        pass
    del g
    gc.collect()
    assert ref() is None


def test_a_group_dropped_while_held_does_not_crash():
    g = surelock.Group(surelock.Lock(), surelock.RLock())
    g.acquire()
    del g
    gc.collect()


def test_a_group_member_whose_holder_died_is_reported():
    a, b = surelock.Lock(), surelock.Lock()
    die_holding(b.acquire)
    g = surelock.Group(a, b)
    with pytest.warns(surelock.OwnerDiedWarning):
        assert g.acquire(timeout=5)
    assert g.owner_died
    g.release()


def test_a_fork_child_can_use_locks_its_parent_does_not_hold():
    lock, sem = surelock.Lock(), surelock.Semaphore(1)

    def child():
        assert lock.acquire(timeout=5)
        lock.release()
        assert sem.acquire(timeout=5)

    assert in_child(child) == 0
    assert lock.acquire(False)
    lock.release()
