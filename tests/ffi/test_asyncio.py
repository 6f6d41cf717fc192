"""surelock_amutex from Python asyncio, through ctypes: a real event loop on the async API.

`AsyncMutex` below is the kind of wrapper a binding would ship: `async with m:` queues a
surelock_waiter with surelock_amutex_lock_async, and the C callback (which runs on whatever
thread releases the mutex, possibly another event loop's) resolves an asyncio Future through
`loop.call_soon_threadsafe`. A cancelled lock withdraws its waiter (surelock_amutex_cancel); if
the grant won that race (EALREADY) the wrapper hands the mutex straight back.

The library is the shared object named by SURELOCK_LIB (meson passes the freshly built one) or
by the first command-line argument. Exit codes: 0 all passed, 1 a failure or a hang, 77 skipped
(no ctypes, no library given, or a sanitizer runtime that a plain python3 cannot load).

Everything is bounded: each event loop runs under asyncio.wait_for, loop threads are joined
with a timeout, and faulthandler ends the whole process (exit 1, with every thread's stack) if
it runs past OVERALL_TIMEOUT_S, e.g. because a C call never returns.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import errno
import faulthandler
import os
import threading
import traceback
import unittest

try:
    import ctypes  # noqa: F401  (surelock_ctypes needs it; a Python without it skips)
except ImportError:
    print("ctypes is not available: skipping")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import surelock_ctypes as sl  # noqa: E402

OVERALL_TIMEOUT_S = 120   # the whole module, hang or not
LOOP_TIMEOUT_S = 60       # one event loop's work
JOIN_TIMEOUT_S = LOOP_TIMEOUT_S + 15

LOOPS = 2                 # event-loop threads
COROUTINES = 50           # in total, split over the loops
ROUNDS = 4                # acquisitions per coroutine


def _load_or_skip():
    path = sl.lib_path_from()
    if not path:
        print("no library: set SURELOCK_LIB or pass the path of libsurelock.so.1; skipping")
        sys.exit(77)
    try:
        return sl.load(path)
    except OSError as e:
        text = str(e)
        # An ASan/TSan-instrumented library needs its runtime preloaded into python3.
        if "runtime" in text or "static TLS" in text or "san" in text.lower():
            print("cannot load a sanitizer-instrumented library into python3 (%s): skipping" % text)
            sys.exit(77)
        raise


LIB = _load_or_skip()


# ---- one C callback for every waiter ------------------------------------------------------------

def _resolve(fut, status):
    """Runs on the future's own loop: the hand-off from the releasing thread."""
    if not fut.done():  # a cancelled lock() leaves a cancelled future behind
        fut.set_result(status)


class _Dispatch:
    """The single surelock_wake_fn for all waiters. `ctx` is an integer token naming a pending
    entry (loop, future, waiter). The CFUNCTYPE object lives as long as this module, and each
    waiter's buffer stays referenced from its entry until fn has run or cancel returned 0."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = {}
        self._next = 1
        self.wakes = []  # (token, thread ident of the caller of fn, status): for the tests
        self.callback = sl.WAKE_FN(self._on_wake)

    def register(self, loop, fut, waiter):
        with self._lock:
            token = self._next
            self._next += 1
            self._pending[token] = (loop, fut, waiter)
        return token

    def forget(self, token):
        with self._lock:
            self._pending.pop(token, None)

    def pending(self):
        with self._lock:
            return len(self._pending)

    def _on_wake(self, ctx, status):
        # On the releasing thread, inside its surelock call, holding the GIL. fn must not
        # unwind: nothing may escape (ctypes would print and swallow it, but be explicit).
        try:
            with self._lock:
                entry = self._pending.pop(ctx, None)
                self.wakes.append((ctx, threading.get_ident(), status))
            if entry is None:
                return
            loop, fut, _waiter = entry
            loop.call_soon_threadsafe(_resolve, fut, status)
        except BaseException:  # e.g. the loop was closed meanwhile
            traceback.print_exc()


DISPATCH = _Dispatch()


# ---- the asyncio wrapper -------------------------------------------------------------------------

class LockRequest:
    """One queued (or immediately granted) lock_async. `rc` is 0 (held now) or EINPROGRESS."""

    def __init__(self, mutex, loop):
        self.mutex = mutex
        self.loop = loop
        self.fut = loop.create_future()
        self.waiter = sl.Waiter()
        self.token = DISPATCH.register(loop, self.fut, self.waiter)
        self.withdrawn = None  # what surelock_amutex_cancel said, if the wait was cancelled
        self.rc = LIB.surelock_amutex_lock_async(mutex.handle, self.waiter.address,
                                                  DISPATCH.callback, self.token)
        if self.rc != errno.EINPROGRESS:
            DISPATCH.forget(self.token)  # fn is never called for any other return
            sl.check(LIB, self.rc, "surelock_amutex_lock_async")

    async def wait(self):
        """Returns once the mutex is held. On cancellation the waiter is withdrawn."""
        if self.rc == 0:
            return
        try:
            status = await self.fut
        except asyncio.CancelledError:
            self._withdraw()
            raise
        if status != 0:
            raise sl.SurelockError(status, "lock (callback)", "the waiter was cancelled")

    def _withdraw(self):
        rc = LIB.surelock_amutex_cancel(self.mutex.handle, self.waiter.address)
        self.withdrawn = rc
        if rc == 0:
            DISPATCH.forget(self.token)  # fn will never run; the waiter is free
        elif rc == errno.EALREADY:
            # Granted meanwhile: fn has run or will run once (its _resolve finds the future
            # cancelled). The mutex is ours; hand it on.
            self.mutex.unlock()
        else:
            sl.check(LIB, rc, "surelock_amutex_cancel")


class AsyncMutex:
    """A FIFO mutex for asyncio coroutines on any number of event loops and threads."""

    def __init__(self):
        self.handle = sl.new_amutex(LIB)

    def begin_lock(self):
        """Queues for the mutex now; await the result's wait() to hold it."""
        return LockRequest(self, asyncio.get_running_loop())

    async def lock(self):
        await self.begin_lock().wait()

    def unlock(self):
        sl.check(LIB, LIB.surelock_amutex_unlock(self.handle), "surelock_amutex_unlock")

    def trylock(self):
        return LIB.surelock_amutex_trylock(self.handle)

    async def __aenter__(self):
        await self.lock()
        return self

    async def __aexit__(self, *exc):
        self.unlock()
        return False

    def close(self):
        sl.check(LIB, LIB.surelock_amutex_free(self.handle), "surelock_amutex_free")
        self.handle = None


# ---- running coroutines on several event-loop threads -------------------------------------------

def run_on_loop_threads(factories):
    """Runs factories[i]() on a fresh event loop in thread i; all start together. Returns
    (results, errors, thread idents). A thread still running after JOIN_TIMEOUT_S is a hang."""
    n = len(factories)
    barrier = threading.Barrier(n)
    results, errors, idents = [None] * n, [None] * n, [None] * n

    def main(i):
        idents[i] = threading.get_ident()
        loop = asyncio.new_event_loop()
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            results[i] = loop.run_until_complete(
                asyncio.wait_for(factories[i](), LOOP_TIMEOUT_S))
        except BaseException as e:
            errors[i] = e
        finally:
            loop.close()

    threads = [threading.Thread(target=main, args=(i,), name="loop-%d" % i, daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
        if t.is_alive():
            faulthandler.dump_traceback(all_threads=True)
            raise AssertionError("event-loop thread %s hangs" % t.name)
    return results, errors, idents


# ---- the tests ----------------------------------------------------------------------------------

class AsyncMutexOnEventLoops(unittest.TestCase):

    def test_fifty_coroutines_on_two_loops_are_served_in_fifo_order_and_the_count_is_exact(self):
        m = AsyncMutex()
        order_lock = threading.Lock()   # makes "queue, then record" one step across threads
        queued = []                     # (coroutine, round) in the order lock_async queued them
        rcs = []                        # lock_async's return for each entry of `queued`
        granted = []                    # (coroutine, round) in the order they held the mutex
        holder_thread = []              # the loop thread of each holder, in grant order
        counter = [0]

        async def worker(name):
            for r in range(ROUNDS):
                # Stagger the coroutines so the two loops' requests interleave in the queue.
                await asyncio.sleep(((name * 7 + r * 3) % 10) * 0.0005)
                with order_lock:
                    req = m.begin_lock()
                    queued.append((name, r))
                    rcs.append(req.rc)
                await req.wait()
                try:
                    granted.append((name, r))
                    holder_thread.append(threading.get_ident())
                    seen = counter[0]
                    # Suspend inside the critical section: everyone else keeps queuing.
                    await asyncio.sleep(0 if (name + r) % 3 else 0.0005)
                    counter[0] = seen + 1
                finally:
                    m.unlock()

        def loop_main(index):
            async def run():
                names = range(index, COROUTINES, LOOPS)
                await asyncio.gather(*(worker(n) for n in names))
            return run

        # Switch the GIL often, so the two loop threads really interleave their queuing.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)
        try:
            _, errors, idents = run_on_loop_threads([loop_main(i) for i in range(LOOPS)])
        finally:
            sys.setswitchinterval(interval)
        for e in errors:
            if e is not None:
                raise AssertionError("an event loop failed: %r" % (e,)) from e

        total = COROUTINES * ROUNDS
        self.assertEqual(counter[0], total, "the counter lost updates: not mutually exclusive")
        self.assertEqual(len(granted), total)
        self.assertEqual(sorted(granted), sorted(queued))
        first_difference = next((i for i, (a, b) in enumerate(zip(queued, granted)) if a != b),
                                None)
        self.assertIsNone(first_difference,
                          "not served in FIFO order: entry %s was queued as %s but served as %s"
                          % (first_difference,
                             queued[first_difference] if first_difference is not None else None,
                             granted[first_difference] if first_difference is not None else None))
        self.assertTrue(all(rc in (0, errno.EINPROGRESS) for rc in rcs))
        self.assertGreater(rcs.count(errno.EINPROGRESS), total // 2,
                           "hardly anyone queued: the test did not contend")
        # Both loops took part, and the mutex was handed from one loop's thread to the other's.
        self.assertEqual(set(holder_thread), set(idents))
        handoffs = sum(1 for a, b in zip(holder_thread, holder_thread[1:]) if a != b)
        self.assertGreater(handoffs, 0, "no hand-off between the two event-loop threads")
        print("\n# %d of %d acquisitions queued; %d hand-offs between the loop threads"
              % (rcs.count(errno.EINPROGRESS), total, handoffs), file=sys.stderr)
        self.assertEqual(DISPATCH.pending(), 0, "a waiter is still registered")
        self.assertEqual(m.trylock(), 0, "the mutex is not free at the end")
        m.unlock()
        m.close()

    def test_async_with_releases_the_mutex_when_the_body_raises(self):
        m = AsyncMutex()

        async def body():
            with self.assertRaises(ValueError):
                async with m:
                    self.assertEqual(m.trylock(), errno.EBUSY)
                    raise ValueError("inside")
            return m.trylock()

        self.assertEqual(asyncio.run(asyncio.wait_for(body(), LOOP_TIMEOUT_S)), 0)
        m.unlock()
        m.close()

    def test_a_cancelled_lock_withdraws_its_waiter_and_is_never_granted(self):
        m = AsyncMutex()

        async def body():
            await m.lock()
            req = m.begin_lock()
            self.assertEqual(req.rc, errno.EINPROGRESS)
            task = asyncio.ensure_future(req.wait())
            await asyncio.sleep(0)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(req.withdrawn, 0)
            m.unlock()  # nobody is queued any more: the mutex becomes free
            return m.trylock()

        wakes_before = len(DISPATCH.wakes)
        self.assertEqual(asyncio.run(asyncio.wait_for(body(), LOOP_TIMEOUT_S)), 0)
        self.assertEqual(len(DISPATCH.wakes), wakes_before, "fn ran for a withdrawn waiter")
        self.assertEqual(DISPATCH.pending(), 0)
        m.unlock()
        m.close()

    def test_a_lock_cancelled_after_its_grant_hands_the_mutex_back(self):
        m = AsyncMutex()

        async def body():
            await m.lock()
            req = m.begin_lock()
            task = asyncio.ensure_future(req.wait())
            await asyncio.sleep(0)
            m.unlock()     # grants req: fn runs here, its resolution is only scheduled
            task.cancel()  # ...and the task is cancelled before it sees it
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(req.withdrawn, errno.EALREADY)
            return m.trylock()

        self.assertEqual(asyncio.run(asyncio.wait_for(body(), LOOP_TIMEOUT_S)), 0)
        self.assertEqual(DISPATCH.pending(), 0)
        m.unlock()
        m.close()

    def test_errors_come_back_as_surelock_errors_with_the_librarys_message(self):
        m = AsyncMutex()
        with self.assertRaises(sl.SurelockError) as cm:
            m.unlock()
        self.assertEqual(cm.exception.errno, errno.EPERM)
        self.assertNotEqual(cm.exception.errmsg, "")
        with self.assertRaises(sl.SurelockError) as cm:
            sl.check(LIB, LIB.surelock_amutex_lock_async(m.handle, sl.Waiter().address,
                                                          sl.WAKE_FN(), None),
                     "surelock_amutex_lock_async")
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.assertNotEqual(cm.exception.errmsg, "")
        m.close()


def main():
    faulthandler.enable()
    faulthandler.dump_traceback_later(OVERALL_TIMEOUT_S, exit=True)  # a hang exits 1
    try:
        program = unittest.main(argv=[sys.argv[0], "-v"], exit=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
