#!/usr/bin/env python3
"""Benchmark of the surelock Python package against what its users switch from, in one
process: the median of repeated, interleaved runs of each measurement, and the ratio to the
peer (below 1.00 = surelock is faster).

    PYTHONPATH=build/src/bindings/python /usr/bin/python3 tests/bench/bench_python.py \
        [--runs N] [--quick]
    meson compile -C build bench-python        # the same, through meson

Rows:
  uncontended acquire+release   one thread, `acquire(); release()` in a loop (ns per pair)
  contended, 2 threads          two threads each `with lock: n += 1` for a fixed time (ops/s)
  IpcLock                       against filelock.FileLock (python3-filelock) and a ctypes
                                robust process-shared pthread mutex in a mapped file, the way
                                pymutex does it
  AsyncLock                     `async with lock:` in one task (uncontended) and among 10
                                tasks that yield inside (contended), against asyncio.Lock
Speed is measured here, never asserted in tests. Exit 0 always, unless the package is missing.
"""

import argparse
import asyncio
import ctypes
import ctypes.util
import mmap
import os
import statistics
import sys
import tempfile
import threading
import time

try:
    import surelock
except ImportError as e:
    sys.exit("surelock is not importable (%s): build it and set PYTHONPATH=<build>/src/bindings/"
             "python, or install it with meson install" % e)

try:
    import filelock
except ImportError:
    filelock = None


# ---- a pymutex-style lock: a robust, process-shared pthread mutex in a mapped file ----------

class CtypesRobustMutex:
    """What pymutex does with ctypes: pthread_mutex_t in an mmap()ed file, initialised
    PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST; EOWNERDEAD is repaired with consistent."""

    SIZE = 64  # >= sizeof(pthread_mutex_t) (40 on x86-64 glibc)

    def __init__(self, path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._lock_fn = libc.pthread_mutex_lock
        self._unlock_fn = libc.pthread_mutex_unlock
        self._consistent = libc.pthread_mutex_consistent
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, mmap.PAGESIZE)
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        os.close(fd)
        self._buf = (ctypes.c_char * self.SIZE).from_buffer(self._map)
        self._addr = ctypes.addressof(self._buf)
        attr = ctypes.create_string_buffer(64)
        libc.pthread_mutexattr_init(attr)
        libc.pthread_mutexattr_setpshared(attr, 1)  # PTHREAD_PROCESS_SHARED
        libc.pthread_mutexattr_setrobust(attr, 1)  # PTHREAD_MUTEX_ROBUST
        libc.pthread_mutex_init(ctypes.c_void_p(self._addr), attr)
        self._ptr = ctypes.c_void_p(self._addr)

    def acquire(self):
        rc = self._lock_fn(self._ptr)
        if rc == 130:  # EOWNERDEAD
            self._consistent(self._ptr)
        return True

    def release(self):
        self._unlock_fn(self._ptr)

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---- measurements -------------------------------------------------------------------------------

def uncontended_ns(lock, n):
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter_ns() - t0) / n


def contended_ops(lock, seconds):
    count = [0, 0]
    stop = threading.Event()
    go = threading.Barrier(3)

    def work(k):
        go.wait()
        n = 0
        while not stop.is_set():
            for _ in range(100):
                with lock:
                    n += 1
        count[k] = n

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - t0)


def async_uncontended_ns(make_lock, n):
    async def run():
        lock = make_lock()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            async with lock:
                pass
        return (time.perf_counter_ns() - t0) / n
    return asyncio.run(run())


def async_contended_ops(make_lock, n):
    async def run():
        lock = make_lock()

        async def task():
            for _ in range(n):
                async with lock:
                    await asyncio.sleep(0)

        t0 = time.perf_counter()
        await asyncio.gather(*[task() for _ in range(10)])
        return 10 * n / (time.perf_counter() - t0)
    return asyncio.run(run())


# ---- the table -------------------------------------------------------------------------------

def measure(rows, runs):
    """rows: [(label, unit, [(name, fn)...], target)]; runs every fn `runs` times,
    interleaved, and returns the medians."""
    results = []
    for label, unit, cells, target in rows:
        samples = {name: [] for name, _ in cells}
        for _ in range(runs):
            for name, fn in cells:
                samples[name].append(fn())
        results.append((label, unit, [(n, statistics.median(samples[n])) for n, _ in cells],
                        target))
    return results


def fmt(value, unit):
    if unit == "ns":
        return "%.0f ns" % value if value >= 100 else "%.1f ns" % value
    return "%.2f Mops/s" % (value / 1e6) if value >= 1e6 else "%.0f kops/s" % (value / 1e3)


def print_table(results):
    print("| scenario | surelock | peers (ratio surelock/peer: time, or peer/surelock: "
          "throughput) | target |")
    print("|---|--:|---|---|")
    for label, unit, cells, target in results:
        ours = cells[0][1]
        peers = []
        ratios = {}
        for name, v in cells[1:]:
            ratio = ours / v if unit == "ns" else v / ours
            ratios[name] = ratio
            peers.append("%s %s (%.2fx)" % (name, fmt(v, unit), ratio))
        verdict = "-"
        if target:
            peer, limit = target
            r = ratios[peer]
            verdict = "<= %.2fx %s: %s (%.2fx)" % (limit, peer,
                                                    "met" if r <= limit else "MISSED", r)
        print("| %s | %s | %s | %s |" % (label, fmt(ours, unit), "; ".join(peers), verdict))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per cell (median); default 7")
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    n = 20000 if args.quick else 200000
    secs = 0.05 if args.quick else 0.3
    an = 2000 if args.quick else 50000
    tmp = tempfile.mkdtemp(prefix="surelock-bench-")
    ipc = surelock.IpcLock(os.path.join(tmp, "ipc.lock"))
    robust = CtypesRobustMutex(os.path.join(tmp, "robust.mutex"))
    fl = filelock.FileLock(os.path.join(tmp, "file.lock")) if filelock else None
    sl_lock, th_lock = surelock.Lock(), threading.Lock()
    sl_rlock, th_rlock = surelock.RLock(), threading.RLock()
    fn = max(n // 100, 200)  # filelock opens and closes a file each time: fewer rounds

    def cells(*pairs):
        return [(name, f) for name, f in pairs if f is not None]

    rows = [
        ("Lock uncontended acquire+release", "ns",
         cells(("surelock.Lock", lambda: uncontended_ns(sl_lock, n)),
               ("threading.Lock", lambda: uncontended_ns(th_lock, n))), None),
        ("RLock uncontended acquire+release", "ns",
         cells(("surelock.RLock", lambda: uncontended_ns(sl_rlock, n)),
               ("threading.RLock", lambda: uncontended_ns(th_rlock, n))),
         ("threading.RLock", 1.3)),
        ("Lock contended, 2 threads", "ops",
         cells(("surelock.Lock", lambda: contended_ops(sl_lock, secs)),
               ("threading.Lock", lambda: contended_ops(th_lock, secs))), None),
        ("RLock contended, 2 threads", "ops",
         cells(("surelock.RLock", lambda: contended_ops(sl_rlock, secs)),
               ("threading.RLock", lambda: contended_ops(th_rlock, secs))), None),
        ("IpcLock uncontended acquire+release", "ns",
         cells(("surelock.IpcLock", lambda: uncontended_ns(ipc, n)),
               ("filelock.FileLock", (lambda: uncontended_ns(fl, fn)) if fl else None),
               ("ctypes robust pthread", lambda: uncontended_ns(robust, n))),
         ("filelock.FileLock", 0.05) if fl else None),
        ("IpcLock contended, 2 threads", "ops",
         cells(("surelock.IpcLock", lambda: contended_ops(ipc, secs)),
               ("ctypes robust pthread", lambda: contended_ops(robust, secs))), None),
        ("AsyncLock uncontended async with", "ns",
         cells(("surelock.AsyncLock", lambda: async_uncontended_ns(surelock.AsyncLock, an)),
               ("asyncio.Lock", lambda: async_uncontended_ns(asyncio.Lock, an))),
         ("asyncio.Lock", 1.0)),
        ("AsyncLock contended, 10 tasks", "ops",
         cells(("surelock.AsyncLock", lambda: async_contended_ops(surelock.AsyncLock, an // 10)),
               ("asyncio.Lock", lambda: async_contended_ops(asyncio.Lock, an // 10))), None),
    ]
    if fl is None:
        print("note: python3-filelock is not installed: the FileLock column is left out")
    print("surelock bench python: %s, libsurelock %s, median of %d interleaved runs"
          % (sys.version.split()[0], surelock.library_version(), args.runs))
    print_table(measure(rows, args.runs))
    ipc.close()
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
