"""A hypothesis state machine drives surelock.Group: groups over any subset of a mixed set of
locks (Lock, RLock, RWLock shared or exclusive, IpcLock), taken and released by the main
thread while a helper thread holds single locks. A simple model predicts every outcome:
a group is taken whole exactly when no member conflicts with the helper, never in part, and
after every step a third thread's probe of each lock agrees with the model."""

import os
import queue
import tempfile
import threading

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

import surelock

KINDS = ["lock", "lock", "rlock", "rwlock", "rwlock", "ipc"]


class Agent:
    """A thread that runs the calls it is given, one at a time (locks belong to threads)."""

    def __init__(self):
        self.calls = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            fn, out = self.calls.get()
            if fn is None:
                return
            try:
                out.put((True, fn()))
            except BaseException as e:  # noqa: B902 - handed back to the caller
                out.put((False, e))

    def call(self, fn):
        out = queue.Queue()
        self.calls.put((fn, out))
        ok, value = out.get(timeout=20)
        if not ok:
            raise value
        return value

    def stop(self):
        self.calls.put((None, None))
        self.thread.join(20)
        assert not self.thread.is_alive()


class GroupMachine(RuleBasedStateMachine):
    groups = Bundle("groups")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.locks = []
        for i, kind in enumerate(KINDS):
            if kind == "lock":
                self.locks.append(surelock.Lock())
            elif kind == "rlock":
                self.locks.append(surelock.RLock())
            elif kind == "rwlock":
                self.locks.append(surelock.RWLock())
            else:
                self.locks.append(surelock.IpcLock(os.path.join(self.dir.name, "l%d" % i)))
        self.helper = Agent()
        self.prober = Agent()
        self.helper_holds = {}  # index -> "read" | "write"
        self.main_holds = {}  # index -> "read" | "write", through held groups
        self.held_groups = []  # (group, members, shared)

    # ---- the model ----
    @staticmethod
    def _compatible(a, b):
        return a == "read" and b == "read"

    def _mode(self, i, shared):
        return "read" if shared and KINDS[i] == "rwlock" else "write"

    # ---- rules ----
    @rule(target=groups,
          members=st.sets(st.integers(0, len(KINDS) - 1), min_size=1, max_size=len(KINDS)),
          shared=st.booleans(), order=st.randoms(use_true_random=False))
    def new_group(self, members, shared, order):
        members = list(members)
        order.shuffle(members)  # the order members are given in never matters
        g = surelock.Group(*[self.locks[i] for i in members], shared=shared)
        assert len(g) == len(members)
        return (g, frozenset(members), shared)

    @precondition(lambda self: len(self.held_groups) < 2)
    @rule(entry=groups, timed=st.booleans())
    def take_group(self, entry, timed):
        g, members, shared = entry
        if any(g is h[0] for h in self.held_groups) or members & set(self.main_holds):
            return  # overlapping holds by one thread are the C tests' business
        expected = all(i not in self.helper_holds or
                       self._compatible(self.helper_holds[i], self._mode(i, shared))
                       for i in members)
        got = g.acquire(timeout=0.01) if timed else g.acquire(False)
        assert got == expected
        if got:
            self.held_groups.append(entry)
            for i in members:
                self.main_holds[i] = self._mode(i, shared)

    @precondition(lambda self: self.held_groups)
    @rule(data=st.data())
    def release_group(self, data):
        entry = data.draw(st.sampled_from(self.held_groups))
        entry[0].release()
        self.held_groups.remove(entry)
        for i in entry[1]:
            del self.main_holds[i]

    @rule(i=st.integers(0, len(KINDS) - 1), read=st.booleans())
    def helper_take(self, i, read):
        if i in self.helper_holds:
            return
        lock = self.locks[i]
        mode = "read" if read and KINDS[i] == "rwlock" else "write"
        expected = i not in self.main_holds or self._compatible(self.main_holds[i], mode)
        if mode == "read":
            got = self.helper.call(lambda: lock.acquire_read(False))
        elif KINDS[i] == "rwlock":
            got = self.helper.call(lambda: lock.acquire_write(False))
        else:
            got = self.helper.call(lambda: lock.acquire(False))
        assert got == expected
        if got:
            self.helper_holds[i] = mode

    @precondition(lambda self: self.helper_holds)
    @rule(data=st.data())
    def helper_drop(self, data):
        i = data.draw(st.sampled_from(sorted(self.helper_holds)))
        self.helper.call(self.locks[i].release)
        del self.helper_holds[i]

    # ---- what must hold after every step ----
    @invariant()
    def every_lock_is_held_exactly_as_the_model_says(self):
        for i, lock in enumerate(self.locks):
            held = i in self.main_holds or i in self.helper_holds

            def probe(lock=lock, kind=KINDS[i]):
                take = lock.acquire_write if kind == "rwlock" else lock.acquire
                if take(False):
                    lock.release()
                    return True
                return False

            assert self.prober.call(probe) == (not held), "lock %d (%s)" % (i, KINDS[i])

    def teardown(self):
        for entry in list(self.held_groups):
            entry[0].release()
        for i in list(self.helper_holds):
            self.helper.call(self.locks[i].release)
        self.helper.stop()
        self.prober.stop()
        self.dir.cleanup()  # the handles close when the last group using them goes


GroupMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                          deadline=None, database=None)
TestGroupStateMachine = GroupMachine.TestCase
