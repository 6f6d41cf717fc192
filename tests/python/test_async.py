"""AsyncLock / AsyncSemaphore: asyncio's interfaces, strictly FIFO over the C *_async
callbacks, cancellation with the contract's semantics, several loops in several threads."""

import asyncio
import gc
import random
import threading
import time
import weakref

import pytest

import surelock
from conftest import Worker, wait_until

BOUND = 30  # seconds: every await that could hang is bounded by this


async def bounded(aw):
    return await asyncio.wait_for(aw, BOUND)


@pytest.mark.asyncio
async def test_async_lock_interface_matches_asyncio_lock():
    lock = surelock.AsyncLock()
    assert not lock.locked()
    assert await lock.acquire() is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    async with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(TypeError):
        surelock.AsyncLock(2)


@pytest.mark.asyncio
async def test_many_tasks_are_served_strictly_first_in_first_out():
    lock = surelock.AsyncLock()
    order = []
    await lock.acquire()

    async def task(i):
        async with lock:
            order.append(i)
            await asyncio.sleep(0)

    tasks = []
    for i in range(500):
        tasks.append(asyncio.ensure_future(task(i)))
        await asyncio.sleep(0)  # queue in creation order
    lock.release()
    await bounded(asyncio.gather(*tasks))
    assert order == list(range(500))
    assert not lock.locked()


@pytest.mark.asyncio
async def test_async_semaphore_limits_concurrency_and_counts_exactly():
    sem = surelock.AsyncSemaphore(3)
    with pytest.raises(ValueError):
        surelock.AsyncSemaphore(-1)
    inside = 0
    peak = 0

    async def task():
        nonlocal inside, peak
        async with sem:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await bounded(asyncio.gather(*[task() for _ in range(200)]))
    assert peak == 3
    assert sem._available == 3 and not sem.locked()


@pytest.mark.asyncio
async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_is_served():
    lock = surelock.AsyncLock()
    await lock.acquire()
    first = asyncio.ensure_future(lock.acquire())
    second = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    lock.release()
    assert await bounded(second) is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()


@pytest.mark.asyncio
async def test_granted_then_cancelled_gives_the_permit_back():
    lock = surelock.AsyncLock()
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0.01)
    lock.release()  # granted now: the grant is on its way to the loop
    waiter.cancel()  # ... and cancelled before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not lock.locked()  # the permit came back, not leaked
    assert await bounded(lock.acquire())
    lock.release()


@pytest.mark.asyncio
async def test_a_cancellation_storm_never_leaks_or_duplicates_a_permit():
    sem = surelock.AsyncSemaphore(4)
    rng = random.Random(1234)
    inside = 0
    peak = 0

    async def task():
        nonlocal inside, peak
        async with sem:
            inside += 1
            try:
                peak = max(peak, inside)
                await asyncio.sleep(rng.random() * 0.002)
            finally:
                inside -= 1

    for _ in range(20):
        tasks = [asyncio.ensure_future(task()) for _ in range(100)]
        for _ in range(5):
            await asyncio.sleep(rng.random() * 0.002)
            for t in rng.sample(tasks, 15):
                t.cancel()
        await bounded(asyncio.gather(*tasks, return_exceptions=True))
        assert inside == 0
        assert sem._available == 4, "a permit leaked or was duplicated"
    assert peak <= 4


@pytest.mark.asyncio
async def test_release_from_another_thread_wakes_the_loop():
    lock = surelock.AsyncLock()
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0.01)
    t = threading.Timer(0.05, lock.release)
    t.start()
    assert await bounded(waiter) is True
    t.join()
    lock.release()


def run_loop_in_thread(coro_fn, *args):
    return Worker(lambda: asyncio.run(coro_fn(*args)))


def test_two_loops_in_two_threads_share_one_lock_fifo_and_exclusive():
    lock = surelock.AsyncLock()
    sem = surelock.AsyncSemaphore(2)
    inside = [0]
    bad = []
    count = [0]

    async def work(tag):
        for i in range(400):
            async with lock:
                inside[0] += 1
                if inside[0] != 1:
                    bad.append(tag)
                count[0] += 1
                if i % 7 == 0:
                    await asyncio.sleep(0)
                inside[0] -= 1
            async with sem:
                await asyncio.sleep(0)

    async def many(tag):
        await asyncio.gather(*[work((tag, k)) for k in range(5)])

    loops = [run_loop_in_thread(many, t) for t in range(2)]
    for w in loops:
        w.join(60)
    assert bad == []
    assert count[0] == 2 * 5 * 400
    assert not lock.locked() and sem._available == 2


def test_a_grant_to_a_closed_loop_gives_the_permit_back():
    lock = surelock.AsyncLock()
    assert lock._try_acquire()
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    waiter = lock._acquire_async(loop, fut)
    assert waiter is not None  # queued
    loop.close()
    lock.release()  # the callback cannot reach the closed loop: the permit must come back
    assert not lock.locked()
    assert waiter.cancel() is True  # settled: nothing held by this waiter


def test_a_lock_dropped_with_a_queued_waiter_stays_valid_until_the_waiter_settles():
    lock = surelock.AsyncLock()
    assert lock._try_acquire()
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    waiter = lock._acquire_async(loop, fut)
    ref = weakref.ref(lock)
    release = lock.release
    del lock
    gc.collect()
    assert ref() is not None  # the queued waiter keeps the semaphore (and its storage) alive
    release()
    loop.run_until_complete(asyncio.wait_for(fut, BOUND))
    loop.close()
    del waiter, release, fut
    gc.collect()
    assert ref() is None


def test_a_task_abandoned_with_its_closed_loop_returns_its_permit():
    lock = surelock.AsyncLock()
    assert lock._try_acquire()

    async def wait():
        await lock.acquire()

    loop = asyncio.new_event_loop()
    task = loop.create_task(wait())
    loop.run_until_complete(asyncio.sleep(0.01))
    lock.release()  # granted to a task whose loop will never run again
    loop.close()
    assert lock.locked()
    del task  # its coroutine is closed: the granted permit must come back
    gc.collect()
    assert not lock.locked()


@pytest.mark.asyncio
async def test_async_semaphore_try_never_jumps_the_queue():
    sem = surelock.AsyncSemaphore(1)
    await sem.acquire()
    waiter = asyncio.ensure_future(sem.acquire())
    await asyncio.sleep(0.01)
    sem.release()  # handed to the waiter
    assert sem._try_acquire() is False
    assert await bounded(waiter)
    sem.release()
    assert not sem.locked()


@pytest.mark.asyncio
async def test_a_blocking_thread_and_tasks_share_one_fifo():
    sem = surelock.AsyncSemaphore(0)
    order = []
    thread_waiter = Worker(lambda: sem._acquire(True, BOUND) and order.append("thread"))
    wait_until(lambda: sem._blocked == 1)

    async def task():
        await sem.acquire()
        order.append("task")

    t = asyncio.ensure_future(task())
    await asyncio.sleep(0.01)
    sem.release()
    thread_waiter.join()
    sem.release()
    await bounded(t)
    assert order == ["thread", "task"]
