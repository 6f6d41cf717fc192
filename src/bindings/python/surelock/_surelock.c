/*
 * _surelock: the C half of the `surelock` Python package, written against the public header
 * only and linked to libsurelock.so.1 through its DT_NEEDED, so every binding in one process
 * (C, ctypes, plugins, this module) shares the same named guards.
 *
 * Rules every method follows:
 *  - Arguments are checked here (TypeError/ValueError) before any C call.
 *  - The uncontended path keeps the GIL: try first, and release the GIL only to wait.
 *  - A wait in the main thread is cut into WAIT_SLICE_NS slices with PyErr_CheckSignals()
 *    between them, so Ctrl-C interrupts a blocked acquire (the library's own waits are not
 *    interruptible). Other threads wait in one piece.
 *  - A positive errno becomes OSError(errno, surelock_errmsg()), which Python maps to its
 *    subclass (TimeoutError, PermissionError, FileExistsError, ...). EOWNERDEAD is never an
 *    exception: the lock is held, `owner_died` is set and an OwnerDiedWarning is issued.
 *  - Releasing a lock the caller does not hold is RuntimeError, as in `threading`.
 *  - With warnings turned into errors, an OwnerDiedWarning raised from an acquire releases
 *    an in-process lock first (the exception is the notice); an IpcLock stays held, so the
 *    death is passed on rather than made unrecoverable.
 *  - A lock object dropped while it is held (or while C still references it) is leaked,
 *    never freed under a holder: *_free/close return EBUSY and we keep the memory.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <surelock.h>

#define WAIT_SLICE_NS (20ull * 1000 * 1000) /* Ctrl-C answers within ~20 ms */

static PyObject *OwnerDiedWarning;
static double timeout_max = 9223372036.0; /* _thread.TIMEOUT_MAX, read at import */
static unsigned long main_thread_ident;
static PyObject *grant_callable; /* surelock._async._grant(fut, status), set at import */

/* ---- errors ------------------------------------------------------------------------------ */

/* OSError(errno, errmsg[, filename]); Python picks the subclass from the errno. */
static PyObject *raise_rc(int rc, PyObject *filename)
{
    const char *msg = surelock_errmsg();
    if (msg == NULL || msg[0] == '\0') msg = strerror(rc);
    PyObject *exc = filename ? PyObject_CallFunction(PyExc_OSError, "isO", rc, msg, filename)
                             : PyObject_CallFunction(PyExc_OSError, "is", rc, msg);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static int warn_owner_died(PyObject *self)
{
    return PyErr_WarnFormat(OwnerDiedWarning, 2,
                            "%s: the previous holder died while holding it (acquired; "
                            "owner_died is set)", Py_TYPE(self)->tp_name);
}

/* ---- timeouts and waiting ----------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * threading's acquire(blocking=True, timeout=-1) arguments. Sets *timeout_ns to
 * SURELOCK_FOREVER for "no limit" and to 0 for a non-blocking call. Returns -1 with an
 * exception set on bad input.
 */
static int parse_acquire_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                              const char *fname, uint64_t *timeout_ns, int *blocking_out)
{
    static const char *const names[] = {"blocking", "timeout"};
    PyObject *vals[2] = {NULL, NULL};
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 2 arguments (%zd given)", fname, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) vals[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int slot = -1;
            for (int j = 0; j < 2; j++)
                if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) slot = j;
            if (slot < 0) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (vals[slot] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[slot]);
                return -1;
            }
            vals[slot] = args[nargs + k];
        }
    }
    int blocking = 1;
    if (vals[0] != NULL && (blocking = PyObject_IsTrue(vals[0])) < 0) return -1;
    double timeout = -1;
    if (vals[1] != NULL) {
        if (!PyFloat_Check(vals[1]) && !PyLong_Check(vals[1]) && !PyIndex_Check(vals[1])) {
            PyErr_Format(PyExc_TypeError, "%s(): timeout must be a number, not %.100s", fname,
                         Py_TYPE(vals[1])->tp_name);
            return -1;
        }
        timeout = PyFloat_AsDouble(vals[1]);
        if (timeout == -1 && PyErr_Occurred()) return -1;
    }
    if (isnan(timeout)) {
        PyErr_Format(PyExc_ValueError, "%s(): timeout must not be NaN", fname);
        return -1;
    }
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return -1;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return -1;
    }
    if (timeout > timeout_max) { /* as threading: beyond TIMEOUT_MAX is an error, not forever */
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return -1;
    }
    *blocking_out = blocking;
    if (!blocking) *timeout_ns = 0;
    else if (timeout < 0) *timeout_ns = SURELOCK_FOREVER;
    else *timeout_ns = (uint64_t)(timeout * 1e9);
    return 0;
}

static int in_main_thread(void) { return PyThread_get_thread_ident() == main_thread_ident; }

typedef int (*try_fn)(void *h);
typedef int (*timed_fn)(void *h, uint64_t ns);

/*
 * Try, then (unless timeout_ns is 0) wait with the GIL released. Returns the library's code
 * (0, EOWNERDEAD, EBUSY/ETIMEDOUT, or an error), or -1 with a Python exception set when a
 * signal handler raised. `interruptible` = 0 for restoring a lock after Condition.wait.
 */
static int acquire_waiting(void *h, try_fn try_lock, timed_fn timed_lock, uint64_t timeout_ns,
                           int interruptible, int *in_use)
{
    int rc = try_lock(h);
    if (rc != EBUSY || timeout_ns == 0) return rc;
    int sliced = interruptible && in_main_thread();
    uint64_t deadline = timeout_ns == SURELOCK_FOREVER ? SURELOCK_FOREVER : now_ns() + timeout_ns;
    if (deadline < timeout_ns) deadline = SURELOCK_FOREVER;
    (*in_use)++;
    for (;;) {
        uint64_t wait = SURELOCK_FOREVER;
        if (deadline != SURELOCK_FOREVER) {
            uint64_t now = now_ns();
            wait = deadline > now ? deadline - now : 0;
        }
        if (sliced && wait > WAIT_SLICE_NS) wait = WAIT_SLICE_NS;
        Py_BEGIN_ALLOW_THREADS
        rc = timed_lock(h, wait);
        Py_END_ALLOW_THREADS
        if (rc != ETIMEDOUT) break;
        if (sliced && PyErr_CheckSignals() < 0) { rc = -1; break; }
        if (deadline != SURELOCK_FOREVER && now_ns() >= deadline) break;
    }
    (*in_use)--;
    return rc;
}

/* ---- futex for the thread-blocking semaphore wait ------------------------------------------ */

static void futex_wait_ns(atomic_int *word, int expected, uint64_t ns)
{
    struct timespec ts, *tp = NULL;
    if (ns != SURELOCK_FOREVER) {
        ts.tv_sec = (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        tp = &ts;
    }
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, tp, NULL, 0);
}

static void futex_wake_all(atomic_int *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* ===== Lock (surelock_mutex) ================================================================ */

typedef struct {
    PyObject_HEAD
    surelock_mutex *m;
    int in_use;
    char owner_died;
    PyObject *weakreflist;
} LockObject;

static int mutex_try(void *h) { return surelock_mutex_trylock(h); }
static int mutex_unlock(void *h) { return surelock_mutex_unlock(h); }
static int mutex_timed(void *h, uint64_t ns) { return surelock_mutex_timedlock(h, ns); }

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", type->tp_name);
        return NULL;
    }
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    int rc = surelock_mutex_new(&self->m);
    if (rc != 0) {
        Py_DECREF(self);
        return raise_rc(rc, NULL);
    }
    return (PyObject *)self;
}

static void Lock_dealloc(LockObject *self)
{
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    if (self->m != NULL) (void)surelock_mutex_free(self->m); /* EBUSY (held): leaked on purpose */
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

typedef int (*unlock_fn)(void *h);

/*
 * The result of an acquire: True, False, or an exception. When the OwnerDiedWarning is
 * turned into an exception (-W error), an in-process lock is released before it propagates
 * (the exception is the notice; a `with` would otherwise never release it); `unlock` NULL
 * keeps the lock held (IpcLock: releasing would make it unrecoverable for every process).
 */
static PyObject *acquired_result(PyObject *self, int rc, char *owner_died, PyObject *filename,
                                 unlock_fn unlock, void *h)
{
    if (rc == 0) {
        *owner_died = 0;
        Py_RETURN_TRUE;
    }
    if (rc == EOWNERDEAD) {
        *owner_died = 1;
        if (warn_owner_died(self) < 0) {
            if (unlock != NULL) unlock(h);
            return NULL;
        }
        Py_RETURN_TRUE;
    }
    if (rc == EBUSY || rc == ETIMEDOUT) Py_RETURN_FALSE;
    if (rc == -1) return NULL;
    return raise_rc(rc, filename);
}

static PyObject *Lock_acquire(LockObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int blocking;
    if ((nargs != 0 || kwnames != NULL) &&
        parse_acquire_args(args, nargs, kwnames, "acquire", &timeout_ns, &blocking) < 0)
        return NULL;
    int rc = surelock_mutex_trylock(self->m); /* the fast path, GIL held */
    if (rc == 0) {
        self->owner_died = 0;
        Py_RETURN_TRUE;
    }
    if (rc == EBUSY && timeout_ns != 0)
        rc = acquire_waiting(self->m, mutex_try, mutex_timed, timeout_ns, 1, &self->in_use);
    return acquired_result((PyObject *)self, rc, &self->owner_died, NULL, mutex_unlock, self->m);
}

static PyObject *Lock_enter(LockObject *self, PyObject *unused)
{
    int rc = surelock_mutex_trylock(self->m);
    if (rc == 0) {
        self->owner_died = 0;
        Py_RETURN_TRUE;
    }
    if (rc == EBUSY)
        rc = acquire_waiting(self->m, mutex_try, mutex_timed, SURELOCK_FOREVER, 1, &self->in_use);
    return acquired_result((PyObject *)self, rc, &self->owner_died, NULL, mutex_unlock, self->m);
}

static PyObject *Lock_release(LockObject *self, PyObject *unused)
{
    int rc = surelock_mutex_unlock(self->m);
    if (rc == 0) Py_RETURN_NONE;
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    return raise_rc(rc, NULL);
}

static PyObject *Lock_exit(LockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return Lock_release(self, NULL);
}

/* 1 held (by anyone), 0 free, -1 error. A probe that meets a dead owner takes the notice. */
static int Lock_probe(LockObject *self, int *mine)
{
    int rc = surelock_mutex_trylock(self->m);
    *mine = rc == EDEADLK;
    if (rc == EBUSY || rc == EDEADLK) return 1;
    if (rc == 0 || rc == EOWNERDEAD) {
        if (rc == EOWNERDEAD) {
            self->owner_died = 1;
            if (warn_owner_died((PyObject *)self) < 0) {
                surelock_mutex_unlock(self->m);
                return -1;
            }
        }
        surelock_mutex_unlock(self->m);
        return 0;
    }
    raise_rc(rc, NULL);
    return -1;
}

static PyObject *Lock_locked(LockObject *self, PyObject *unused)
{
    int mine, held = Lock_probe(self, &mine);
    if (held < 0) return NULL;
    return PyBool_FromLong(held);
}

static PyObject *Lock_is_owned(LockObject *self, PyObject *unused)
{
    int mine;
    if (Lock_probe(self, &mine) < 0) return NULL;
    return PyBool_FromLong(mine);
}

static PyObject *Lock_release_save(LockObject *self, PyObject *unused)
{
    PyObject *r = Lock_release(self, NULL);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *Lock_acquire_restore(LockObject *self, PyObject *state)
{
    int rc = acquire_waiting(self->m, mutex_try, mutex_timed, SURELOCK_FOREVER, 0, &self->in_use);
    /* Condition.wait's restore: held even if the warning raises (the with-block releases) */
    PyObject *r = acquired_result((PyObject *)self, rc, &self->owner_died, NULL, NULL, NULL);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *Lock_repr(LockObject *self)
{
    int mine, held = Lock_probe(self, &mine);
    if (held < 0) return NULL;
    return PyUnicode_FromFormat("<%s %s object at %p>", held ? "locked" : "unlocked",
                                Py_TYPE(self)->tp_name, self);
}

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Lock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool\n\nEDEADLK (OSError) if this thread holds it."},
    {"release", (PyCFunction)Lock_release, METH_NOARGS,
     "release()\n\nRuntimeError if this thread does not hold it."},
    {"locked", (PyCFunction)Lock_locked, METH_NOARGS, "locked() -> bool: held by any thread"},
    {"__enter__", (PyCFunction)Lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Lock_exit, METH_FASTCALL, NULL},
    {"_is_owned", (PyCFunction)Lock_is_owned, METH_NOARGS, NULL},
    {"_release_save", (PyCFunction)Lock_release_save, METH_NOARGS, NULL},
    {"_acquire_restore", (PyCFunction)Lock_acquire_restore, METH_O, NULL},
    {NULL},
};

static PyMemberDef Lock_members[] = {
    {"owner_died", T_BOOL, offsetof(LockObject, owner_died), READONLY,
     "True when the last acquire found that the previous holder thread had died holding it"},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(LockObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot Lock_slots[] = {
    {Py_tp_new, Lock_new},
    {Py_tp_dealloc, Lock_dealloc},
    {Py_tp_methods, Lock_methods},
    {Py_tp_members, Lock_members},
    {Py_tp_repr, Lock_repr},
    {Py_tp_doc, "Lock()\n\nthreading.Lock's interface, error-checking: re-acquiring from the "
                "holding thread raises OSError(EDEADLK), releasing from another thread "
                "raises RuntimeError."},
    {0, NULL},
};

static PyType_Spec Lock_spec = {"surelock.Lock", sizeof(LockObject), 0,
                                Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, Lock_slots};

/* ===== RLock (surelock_rlock) ============================================================== */

typedef struct {
    PyObject_HEAD
    surelock_rlock *l;
    PyObject *name; /* None, or the global name (str or bytes) */
    int in_use;
    char owner_died;
    PyObject *weakreflist;
} RLockObject;

static int rlock_try(void *h) { return surelock_rlock_trylock(h); }
static int rlock_unlock(void *h) { return surelock_rlock_unlock(h); }
static int rlock_timed(void *h, uint64_t ns) { return surelock_rlock_timedlock(h, ns); }

static PyObject *RLock_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", NULL};
    PyObject *name = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:RLock", kwlist, &name)) return NULL;
    const char *bytes = NULL;
    Py_ssize_t len = 0;
    if (name != Py_None) {
        if (PyUnicode_Check(name)) {
            bytes = PyUnicode_AsUTF8AndSize(name, &len);
            if (bytes == NULL) return NULL;
        } else if (PyBytes_Check(name)) {
            bytes = PyBytes_AS_STRING(name);
            len = PyBytes_GET_SIZE(name);
        } else {
            PyErr_Format(PyExc_TypeError, "RLock(): name must be str, bytes or None, not %.100s",
                         Py_TYPE(name)->tp_name);
            return NULL;
        }
        if (len < 1 || len > 255 || memchr(bytes, '\0', (size_t)len) != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "RLock(): name must be 1..255 bytes without NUL (got %zd bytes)", len);
            return NULL;
        }
    }
    RLockObject *self = (RLockObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(name);
    self->name = name;
    int rc = bytes ? surelock_rlock_global(bytes, &self->l) : surelock_rlock_new(&self->l);
    if (rc != 0) {
        Py_DECREF(self);
        return raise_rc(rc, NULL);
    }
    return (PyObject *)self;
}

static void RLock_dealloc(RLockObject *self)
{
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    /* A global guard is never freed; a held private one is leaked (EBUSY). */
    if (self->l != NULL && self->name == Py_None) (void)surelock_rlock_free(self->l);
    Py_XDECREF(self->name);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *RLock_acquire(RLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int blocking;
    if ((nargs != 0 || kwnames != NULL) &&
        parse_acquire_args(args, nargs, kwnames, "acquire", &timeout_ns, &blocking) < 0)
        return NULL;
    int rc = surelock_rlock_trylock(self->l);
    if (rc == 0) {
        self->owner_died = 0;
        Py_RETURN_TRUE;
    }
    if (rc == EBUSY && timeout_ns != 0)
        rc = acquire_waiting(self->l, rlock_try, rlock_timed, timeout_ns, 1, &self->in_use);
    return acquired_result((PyObject *)self, rc, &self->owner_died, NULL, rlock_unlock, self->l);
}

static PyObject *RLock_enter(RLockObject *self, PyObject *unused)
{
    int rc = surelock_rlock_trylock(self->l);
    if (rc == 0) {
        self->owner_died = 0;
        Py_RETURN_TRUE;
    }
    if (rc == EBUSY)
        rc = acquire_waiting(self->l, rlock_try, rlock_timed, SURELOCK_FOREVER, 1, &self->in_use);
    return acquired_result((PyObject *)self, rc, &self->owner_died, NULL, rlock_unlock, self->l);
}

static PyObject *RLock_release(RLockObject *self, PyObject *unused)
{
    int rc = surelock_rlock_unlock(self->l);
    if (rc == 0) Py_RETURN_NONE;
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    return raise_rc(rc, NULL);
}

static PyObject *RLock_exit(RLockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return RLock_release(self, NULL);
}

static PyObject *RLock_is_owned(RLockObject *self, PyObject *unused)
{
    return PyBool_FromLong(surelock_rlock_depth(self->l) > 0);
}

static PyObject *RLock_depth(RLockObject *self, void *unused)
{
    return PyLong_FromUnsignedLong(surelock_rlock_depth(self->l));
}

/* held by any thread: our own depth, else a probe (a dead owner's notice goes to the probe). */
static int RLock_probe(RLockObject *self)
{
    if (surelock_rlock_depth(self->l) > 0) return 1;
    int rc = surelock_rlock_trylock(self->l);
    if (rc == EBUSY) return 1;
    if (rc == 0 || rc == EOWNERDEAD) {
        surelock_rlock_unlock(self->l);
        if (rc == EOWNERDEAD) {
            self->owner_died = 1;
            if (warn_owner_died((PyObject *)self) < 0) return -1;
        }
        return 0;
    }
    raise_rc(rc, NULL);
    return -1;
}

static PyObject *RLock_locked(RLockObject *self, PyObject *unused)
{
    int held = RLock_probe(self);
    return held < 0 ? NULL : PyBool_FromLong(held);
}

/* threading.Condition's protocol: drop every level, remember the depth, restore it later. */
static PyObject *RLock_release_save(RLockObject *self, PyObject *unused)
{
    unsigned depth = surelock_rlock_depth(self->l);
    if (depth == 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    for (unsigned i = 0; i < depth; i++) {
        int rc = surelock_rlock_unlock(self->l);
        if (rc != 0) return raise_rc(rc, NULL);
    }
    return PyLong_FromUnsignedLong(depth);
}

static PyObject *RLock_acquire_restore(RLockObject *self, PyObject *state)
{
    unsigned long depth = PyLong_AsUnsignedLong(state);
    if (depth == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (depth == 0 || depth > UINT_MAX) {
        PyErr_SetString(PyExc_ValueError, "_acquire_restore: bad saved state");
        return NULL;
    }
    int rc = acquire_waiting(self->l, rlock_try, rlock_timed, SURELOCK_FOREVER, 0, &self->in_use);
    PyObject *r = acquired_result((PyObject *)self, rc, &self->owner_died, NULL, NULL, NULL);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    for (unsigned long i = 1; i < depth; i++) {
        rc = surelock_rlock_trylock(self->l); /* re-entry never waits */
        if (rc != 0) return raise_rc(rc, NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *RLock_repr(RLockObject *self)
{
    int held = RLock_probe(self);
    if (held < 0) return NULL;
    if (self->name != Py_None)
        return PyUnicode_FromFormat("<%s %s object name=%R depth=%u at %p>",
                                    held ? "locked" : "unlocked", Py_TYPE(self)->tp_name,
                                    self->name, surelock_rlock_depth(self->l), self);
    return PyUnicode_FromFormat("<%s %s object depth=%u at %p>", held ? "locked" : "unlocked",
                                Py_TYPE(self)->tp_name, surelock_rlock_depth(self->l), self);
}

static PyMethodDef RLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))RLock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)RLock_release, METH_NOARGS,
     "release()\n\nRuntimeError if this thread does not hold it."},
    {"locked", (PyCFunction)RLock_locked, METH_NOARGS, "locked() -> bool: held by any thread"},
    {"__enter__", (PyCFunction)RLock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))RLock_exit, METH_FASTCALL, NULL},
    {"_is_owned", (PyCFunction)RLock_is_owned, METH_NOARGS, NULL},
    {"_release_save", (PyCFunction)RLock_release_save, METH_NOARGS, NULL},
    {"_acquire_restore", (PyCFunction)RLock_acquire_restore, METH_O, NULL},
    {NULL},
};

static PyGetSetDef RLock_getset[] = {
    {"depth", (getter)RLock_depth, NULL, "the calling thread's depth (0 = not held by it)"},
    {NULL},
};

static PyMemberDef RLock_members[] = {
    {"owner_died", T_BOOL, offsetof(RLockObject, owner_died), READONLY,
     "True when the last acquire found that the previous holder thread had died holding it"},
    {"name", T_OBJECT, offsetof(RLockObject, name), READONLY,
     "the process-wide guard's name, or None"},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(RLockObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot RLock_slots[] = {
    {Py_tp_new, RLock_new},
    {Py_tp_dealloc, RLock_dealloc},
    {Py_tp_methods, RLock_methods},
    {Py_tp_members, RLock_members},
    {Py_tp_getset, RLock_getset},
    {Py_tp_repr, RLock_repr},
    {Py_tp_doc, "RLock(name=None)\n\nthreading.RLock's interface. With a name, the process-wide "
                "guard surelock_rlock_global(name) that C code and plugins share."},
    {0, NULL},
};

static PyType_Spec RLock_spec = {"surelock.RLock", sizeof(RLockObject), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, RLock_slots};

/* ===== RWLock (surelock_rwlock) ============================================================ */

typedef struct {
    PyObject_HEAD
    surelock_rwlock *l;
    int in_use;
    char owner_died;
    PyObject *weakreflist;
} RWLockObject;

static int rw_tryrd(void *h) { return surelock_rwlock_tryrdlock(h); }
static int rwlock_unlock(void *h) { return surelock_rwlock_unlock(h); }
static int rw_timedrd(void *h, uint64_t ns) { return surelock_rwlock_timedrdlock(h, ns); }
static int rw_trywr(void *h) { return surelock_rwlock_trywrlock(h); }
static int rw_timedwr(void *h, uint64_t ns) { return surelock_rwlock_timedwrlock(h, ns); }

static PyObject *RWLock_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", type->tp_name);
        return NULL;
    }
    RWLockObject *self = (RWLockObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    int rc = surelock_rwlock_new(&self->l);
    if (rc != 0) {
        Py_DECREF(self);
        return raise_rc(rc, NULL);
    }
    return (PyObject *)self;
}

static void RWLock_dealloc(RWLockObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    if (self->l != NULL) (void)surelock_rwlock_free(self->l);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *RWLock_acquire_mode(RWLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames, int write)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int blocking;
    if ((nargs != 0 || kwnames != NULL) &&
        parse_acquire_args(args, nargs, kwnames, write ? "acquire_write" : "acquire_read",
                           &timeout_ns, &blocking) < 0)
        return NULL;
    int rc = acquire_waiting(self->l, write ? rw_trywr : rw_tryrd, write ? rw_timedwr : rw_timedrd,
                             timeout_ns, 1, &self->in_use);
    return acquired_result((PyObject *)self, rc, &self->owner_died, NULL, rwlock_unlock, self->l);
}

static PyObject *RWLock_acquire_read(RWLockObject *self, PyObject *const *args, Py_ssize_t n,
                                     PyObject *kw)
{
    return RWLock_acquire_mode(self, args, n, kw, 0);
}

static PyObject *RWLock_acquire_write(RWLockObject *self, PyObject *const *args, Py_ssize_t n,
                                      PyObject *kw)
{
    return RWLock_acquire_mode(self, args, n, kw, 1);
}

static PyObject *RWLock_release(RWLockObject *self, PyObject *unused)
{
    int rc = surelock_rwlock_unlock(self->l);
    if (rc == 0) Py_RETURN_NONE;
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    return raise_rc(rc, NULL);
}

static int RWLock_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static PyMethodDef RWLock_methods[] = {
    {"acquire_read", (PyCFunction)(void (*)(void))RWLock_acquire_read,
     METH_FASTCALL | METH_KEYWORDS, "acquire_read(blocking=True, timeout=-1) -> bool"},
    {"acquire_write", (PyCFunction)(void (*)(void))RWLock_acquire_write,
     METH_FASTCALL | METH_KEYWORDS, "acquire_write(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)RWLock_release, METH_NOARGS,
     "release(): drops this thread's hold, either mode; RuntimeError if it holds none"},
    {NULL},
};

static PyMemberDef RWLock_members[] = {
    {"owner_died", T_BOOL, offsetof(RWLockObject, owner_died), READONLY,
     "True when the last acquire found that a writer had died holding it"},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(RWLockObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot RWLock_slots[] = {
    {Py_tp_new, RWLock_new},
    {Py_tp_dealloc, RWLock_dealloc},
    {Py_tp_traverse, RWLock_traverse},
    {Py_tp_methods, RWLock_methods},
    {Py_tp_members, RWLock_members},
    {0, NULL},
};

static PyType_Spec RWLock_spec = {"surelock._RWLock", sizeof(RWLockObject), 0,
                                  Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
                                  RWLock_slots};

/* ===== IpcLock (surelock_ipc) ============================================================== */

typedef struct {
    PyObject_HEAD
    surelock_ipc *m;
    PyObject *path;    /* str (os.fsdecode'd) */
    Py_ssize_t exports; /* live memoryviews of the payload */
    int in_use;         /* threads waiting with the GIL released */
    char owner_died;
    char recursive;
    PyObject *weakreflist;
} IpcObject;

static int ipc_try(void *h) { return surelock_ipc_trylock(h); }
static int ipc_timed(void *h, uint64_t ns) { return surelock_ipc_timedlock(h, ns); }

static PyObject *Ipc_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "create", "recursive", "payload_size", "mode",
                             "any_owner", NULL};
    PyObject *path_obj, *payload_obj = NULL, *mode_obj = NULL;
    int create = 1, recursive = 0, any_owner = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$ppOOp:IpcLock", kwlist, &path_obj, &create,
                                     &recursive, &payload_obj, &mode_obj, &any_owner))
        return NULL;
    PyObject *fspath = NULL;
    if (!PyUnicode_FSConverter(path_obj, &fspath)) return NULL; /* TypeError for non-paths */
    Py_ssize_t payload = 0;
    long mode = 0600;
    if (payload_obj != NULL) {
        if (!PyLong_Check(payload_obj)) {
            PyErr_SetString(PyExc_TypeError, "IpcLock(): payload_size must be an int");
            goto fail;
        }
        payload = PyLong_AsSsize_t(payload_obj);
        if (payload == -1 && PyErr_Occurred()) goto fail;
        if (payload < 0) {
            PyErr_SetString(PyExc_ValueError, "IpcLock(): payload_size must be >= 0");
            goto fail;
        }
    }
    if (mode_obj != NULL) {
        if (!PyLong_Check(mode_obj)) {
            PyErr_SetString(PyExc_TypeError, "IpcLock(): mode must be an int");
            goto fail;
        }
        mode = PyLong_AsLong(mode_obj);
        if (mode == -1 && PyErr_Occurred()) goto fail;
        if (mode < 0 || mode > 0777) {
            PyErr_SetString(PyExc_ValueError, "IpcLock(): mode must be permission bits 0..0o777");
            goto fail;
        }
    }
    const char *cpath = PyBytes_AS_STRING(fspath);
    if (cpath[0] == '\0') {
        PyErr_SetString(PyExc_ValueError, "IpcLock(): path is empty");
        goto fail;
    }
    IpcObject *self = (IpcObject *)type->tp_alloc(type, 0);
    if (self == NULL) goto fail;
    self->path = PyUnicode_DecodeFSDefaultAndSize(cpath, PyBytes_GET_SIZE(fspath));
    if (self->path == NULL) {
        Py_DECREF(self);
        goto fail;
    }
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.flags = (create ? 0 : SURELOCK_IPC_NOCREATE) | (recursive ? SURELOCK_IPC_RECURSIVE : 0) |
              (any_owner ? SURELOCK_IPC_ANY_OWNER : 0);
    o.mode = (uint32_t)mode;
    o.payload_size = (size_t)payload;
    int rc;
    Py_BEGIN_ALLOW_THREADS /* opening may wait (bounded) for a racing creator */
    rc = surelock_ipc_open(cpath, &o, &self->m);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        raise_rc(rc, self->path);
        Py_DECREF(self);
        goto fail;
    }
    self->recursive = (char)recursive;
    Py_DECREF(fspath);
    return (PyObject *)self;
fail:
    Py_DECREF(fspath);
    return NULL;
}

static void Ipc_dealloc(IpcObject *self)
{
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    /* EBUSY while this process holds it: leaked, never unmapped under a holder. */
    if (self->m != NULL) (void)surelock_ipc_close(self->m);
    Py_XDECREF(self->path);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Ipc_check_open(IpcObject *self)
{
    if (self->m != NULL) return 0;
    PyErr_Format(PyExc_ValueError, "IpcLock %R is closed", self->path);
    return -1;
}

static PyObject *Ipc_acquired(IpcObject *self, int rc)
{
    if (rc == EOWNERDEAD) self->owner_died = 1;
    else if (rc == 0) self->owner_died = 0;
    if (rc == EOWNERDEAD) {
        if (warn_owner_died((PyObject *)self) < 0) return NULL;
        Py_RETURN_TRUE;
    }
    char dummy;
    return acquired_result((PyObject *)self, rc, &dummy, self->path, NULL, NULL);
}

static PyObject *Ipc_acquire(IpcObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int blocking;
    if ((nargs != 0 || kwnames != NULL) &&
        parse_acquire_args(args, nargs, kwnames, "acquire", &timeout_ns, &blocking) < 0)
        return NULL;
    if (Ipc_check_open(self) < 0) return NULL;
    int rc = acquire_waiting(self->m, ipc_try, ipc_timed, timeout_ns, 1, &self->in_use);
    return Ipc_acquired(self, rc);
}

static PyObject *Ipc_enter(IpcObject *self, PyObject *unused)
{
    if (Ipc_check_open(self) < 0) return NULL;
    int rc = acquire_waiting(self->m, ipc_try, ipc_timed, SURELOCK_FOREVER, 1, &self->in_use);
    PyObject *r = Ipc_acquired(self, rc);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *Ipc_release(IpcObject *self, PyObject *unused)
{
    if (Ipc_check_open(self) < 0) return NULL;
    int rc = surelock_ipc_unlock(self->m);
    if (rc == 0) {
        if (surelock_ipc_needs_recovery(self->m) == 0) self->owner_died = 0;
        Py_RETURN_NONE;
    }
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    return raise_rc(rc, self->path);
}

static PyObject *Ipc_exit(IpcObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return Ipc_release(self, NULL);
}

static PyObject *Ipc_consistent(IpcObject *self, PyObject *unused)
{
    if (Ipc_check_open(self) < 0) return NULL;
    int rc = surelock_ipc_consistent(self->m);
    if (rc != 0) return raise_rc(rc, self->path);
    self->owner_died = 0;
    Py_RETURN_NONE;
}

static PyObject *Ipc_needs_recovery(IpcObject *self, void *unused)
{
    return PyBool_FromLong(self->m != NULL && surelock_ipc_needs_recovery(self->m) == 1);
}

static PyObject *Ipc_close(IpcObject *self, PyObject *unused)
{
    if (self->m == NULL) Py_RETURN_NONE;
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "IpcLock.close(): a memoryview of the payload is still alive");
        return NULL;
    }
    if (self->in_use > 0) {
        errno = EBUSY;
        return PyErr_Format(PyExc_BlockingIOError,
                            "IpcLock.close(): %d thread(s) are waiting on this handle",
                            self->in_use);
    }
    int rc = surelock_ipc_close(self->m);
    if (rc != 0) return raise_rc(rc, self->path);
    self->m = NULL;
    Py_RETURN_NONE;
}

static PyObject *Ipc_closed(IpcObject *self, void *unused)
{
    return PyBool_FromLong(self->m == NULL);
}

static int Ipc_getbuffer(IpcObject *self, Py_buffer *view, int flags)
{
    if (self->m == NULL) {
        PyErr_Format(PyExc_ValueError, "IpcLock %R is closed", self->path);
        view->obj = NULL;
        return -1;
    }
    size_t size = 0;
    void *p = surelock_ipc_payload(self->m, &size);
    static char empty[1];
    if (p == NULL) {
        p = empty;
        size = 0;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, p, (Py_ssize_t)size, 0, flags) < 0) return -1;
    self->exports++;
    return 0;
}

static void Ipc_releasebuffer(IpcObject *self, Py_buffer *view) { self->exports--; }

static PyObject *Ipc_payload(IpcObject *self, void *unused)
{
    if (Ipc_check_open(self) < 0) return NULL;
    return PyMemoryView_FromObject((PyObject *)self);
}

static PyMethodDef Ipc_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Ipc_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)Ipc_release, METH_NOARGS, "release()"},
    {"consistent", (PyCFunction)Ipc_consistent, METH_NOARGS,
     "consistent(): the shared state is repaired after owner_died"},
    {"close", (PyCFunction)Ipc_close, METH_NOARGS,
     "close(): unmap; OSError(EBUSY) while this process holds it"},
    {"__enter__", (PyCFunction)Ipc_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Ipc_exit, METH_FASTCALL, NULL},
    {NULL},
};

static PyGetSetDef Ipc_getset[] = {
    {"payload", (getter)Ipc_payload, NULL, "a writable memoryview of the shared payload"},
    {"needs_recovery", (getter)Ipc_needs_recovery, NULL,
     "True for the holder between an owner death and consistent()"},
    {"closed", (getter)Ipc_closed, NULL, NULL},
    {NULL},
};

static PyMemberDef Ipc_members[] = {
    {"owner_died", T_BOOL, offsetof(IpcObject, owner_died), READONLY,
     "True after an acquire that found the previous holder dead, until consistent()"},
    {"path", T_OBJECT, offsetof(IpcObject, path), READONLY, NULL},
    {"recursive", T_BOOL, offsetof(IpcObject, recursive), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(IpcObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot Ipc_slots[] = {
    {Py_tp_new, Ipc_new},
    {Py_tp_dealloc, Ipc_dealloc},
    {Py_tp_methods, Ipc_methods},
    {Py_tp_members, Ipc_members},
    {Py_tp_getset, Ipc_getset},
    {Py_bf_getbuffer, Ipc_getbuffer},
    {Py_bf_releasebuffer, Ipc_releasebuffer},
    {0, NULL},
};

static PyType_Spec Ipc_spec = {"surelock._IpcLock", sizeof(IpcObject), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, Ipc_slots};

/* ===== Group (surelock_group) ============================================================== */

static PyTypeObject *LockType, *RLockType, *RWLockType, *IpcType, *GroupType, *SemType,
    *WaiterType;

/*
 * A group is used by one thread at a time (contract), so the Python object serialises its
 * users with a gate mutex that is taken before the group and dropped after it. The gate is
 * never held while waiting for a member, so it cannot form a cycle with other groups.
 */
typedef struct {
    PyObject_HEAD
    surelock_group *g;
    surelock_mutex *gate;
    PyObject *members; /* tuple: strong references, so members outlive the C group */
    int in_use;
    char owner_died;
    PyObject *weakreflist;
} GroupObject;

static int group_try(void *h) { return surelock_group_trylock(h); }
static int group_timed(void *h, uint64_t ns) { return surelock_group_timedlock(h, ns); }

static PyObject *Group_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *shared = Py_False;
    if (kw != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(kw, &pos, &key, &value)) {
            if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "shared") == 0) {
                shared = value;
            } else {
                PyErr_Format(PyExc_TypeError, "Group() got an unexpected keyword argument '%S'",
                             key);
                return NULL;
            }
        }
    }
    /* shared: a bool (every RWLock member in that mode) or a collection of RWLock members
     * to take shared (the others exclusive). */
    int all_shared = 0;
    PyObject *shared_set = NULL;
    if (PyBool_Check(shared)) {
        all_shared = shared == Py_True;
    } else {
        shared_set = PySequence_List(shared);
        if (shared_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "Group(): shared must be a bool or an iterable of "
                                             "RWLock members");
            return NULL;
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyTuple_GET_ITEM(args, i);
        if (!PyObject_TypeCheck(m, LockType) && !PyObject_TypeCheck(m, RLockType) &&
            !PyObject_TypeCheck(m, RWLockType) && !PyObject_TypeCheck(m, IpcType)) {
            PyErr_Format(PyExc_TypeError,
                         "Group(): member %zd is a %.100s; members must be surelock Lock, "
                         "RLock, RWLock or IpcLock", i, Py_TYPE(m)->tp_name);
            Py_XDECREF(shared_set);
            return NULL;
        }
        if (PyObject_TypeCheck(m, IpcType) && ((IpcObject *)m)->m == NULL) {
            PyErr_Format(PyExc_ValueError, "Group(): member %zd is a closed IpcLock", i);
            Py_XDECREF(shared_set);
            return NULL;
        }
    }
    if (shared_set != NULL) {
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(shared_set); j++) {
            PyObject *s = PyList_GET_ITEM(shared_set, j);
            int found = 0;
            for (Py_ssize_t i = 0; i < n; i++) found |= PyTuple_GET_ITEM(args, i) == s;
            if (!PyObject_TypeCheck(s, RWLockType) || !found) {
                PyErr_SetString(PyExc_ValueError,
                                "Group(): every object in shared must be an RWLock member");
                Py_DECREF(shared_set);
                return NULL;
            }
        }
    }
    GroupObject *self = (GroupObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_XDECREF(shared_set);
        return NULL;
    }
    Py_INCREF(args);
    self->members = args;
    int rc = surelock_group_new(&self->g);
    if (rc == 0) rc = surelock_mutex_new(&self->gate);
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        PyObject *m = PyTuple_GET_ITEM(args, i);
        if (PyObject_TypeCheck(m, LockType)) {
            rc = surelock_group_add_mutex(self->g, ((LockObject *)m)->m);
        } else if (PyObject_TypeCheck(m, RLockType)) {
            rc = surelock_group_add_rlock(self->g, ((RLockObject *)m)->l);
        } else if (PyObject_TypeCheck(m, RWLockType)) {
            int mode = all_shared;
            if (shared_set != NULL) {
                mode = 0;
                for (Py_ssize_t j = 0; j < PyList_GET_SIZE(shared_set); j++)
                    mode |= PyList_GET_ITEM(shared_set, j) == m;
            }
            rc = surelock_group_add_rwlock(self->g, ((RWLockObject *)m)->l,
                                           mode ? SURELOCK_SHARED : SURELOCK_EXCLUSIVE);
        } else {
            rc = surelock_group_add_ipc(self->g, ((IpcObject *)m)->m);
        }
    }
    Py_XDECREF(shared_set);
    if (rc != 0) {
        raise_rc(rc, NULL);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Group_dealloc(GroupObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    /* A held group is leaked with its members (they cannot be freed while in it anyway). */
    int leaked = 0;
    if (self->g != NULL) {
        if (surelock_group_free(self->g) != 0) leaked = 1;
    }
    if (self->gate != NULL && surelock_mutex_free(self->gate) != 0) leaked = 1;
    if (leaked) self->members = NULL; /* keep the references: the members stay in the group */
    Py_CLEAR(self->members);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Group_traverse(GroupObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->members);
    return 0;
}

/* Members are never cleared by the GC: the C group references their C objects. */
static int Group_clear(GroupObject *self) { return 0; }

static PyObject *Group_do_acquire(GroupObject *self, uint64_t timeout_ns)
{
    uint64_t start = timeout_ns == SURELOCK_FOREVER ? 0 : now_ns();
    int rc = acquire_waiting(self->gate, mutex_try, mutex_timed, timeout_ns, 1, &self->in_use);
    if (rc == EDEADLK) {
        errno = EDEADLK;
        PyObject *exc = PyObject_CallFunction(
            PyExc_OSError, "is", EDEADLK, "surelock.Group: this thread already holds the group");
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (rc == EBUSY || rc == ETIMEDOUT) Py_RETURN_FALSE;
    if (rc == -1) return NULL;
    if (rc != 0 && rc != EOWNERDEAD) return raise_rc(rc, NULL);
    uint64_t left = timeout_ns;
    if (timeout_ns != SURELOCK_FOREVER && timeout_ns != 0) {
        uint64_t spent = now_ns() - start;
        left = spent >= timeout_ns ? 0 : timeout_ns - spent;
    }
    rc = acquire_waiting(self->g, group_try, group_timed, left, 1, &self->in_use);
    if (rc != 0 && rc != EOWNERDEAD) {
        surelock_mutex_unlock(self->gate);
        if (rc == EBUSY || rc == ETIMEDOUT) Py_RETURN_FALSE;
        if (rc == -1) return NULL;
        return raise_rc(rc, NULL);
    }
    self->owner_died = rc == EOWNERDEAD;
    if (rc == EOWNERDEAD) {
        Py_ssize_t n = PyTuple_GET_SIZE(self->members);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *m = PyTuple_GET_ITEM(self->members, i);
            if (PyObject_TypeCheck(m, IpcType) && surelock_ipc_needs_recovery(((IpcObject *)m)->m))
                ((IpcObject *)m)->owner_died = 1;
        }
        if (warn_owner_died((PyObject *)self) < 0) {
            /* -W error: as acquired_result, released unless an IPC member needs recovery */
            int ipc_dead = 0;
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *m = PyTuple_GET_ITEM(self->members, i);
                ipc_dead |= PyObject_TypeCheck(m, IpcType) && ((IpcObject *)m)->owner_died;
            }
            if (!ipc_dead) {
                surelock_group_unlock(self->g);
                surelock_mutex_unlock(self->gate);
            }
            return NULL;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *Group_acquire(GroupObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int blocking;
    if ((nargs != 0 || kwnames != NULL) &&
        parse_acquire_args(args, nargs, kwnames, "acquire", &timeout_ns, &blocking) < 0)
        return NULL;
    return Group_do_acquire(self, timeout_ns);
}

static PyObject *Group_enter(GroupObject *self, PyObject *unused)
{
    PyObject *r = Group_do_acquire(self, SURELOCK_FOREVER);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *Group_release(GroupObject *self, PyObject *unused)
{
    int rc = surelock_group_unlock(self->g);
    if (rc == EPERM) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    if (rc != 0) return raise_rc(rc, NULL);
    surelock_mutex_unlock(self->gate);
    Py_RETURN_NONE;
}

static PyObject *Group_exit(GroupObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return Group_release(self, NULL);
}

static Py_ssize_t Group_len(GroupObject *self) { return (Py_ssize_t)surelock_group_size(self->g); }

static PyMethodDef Group_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Group_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: every member, or none"},
    {"release", (PyCFunction)Group_release, METH_NOARGS, "release(): every member"},
    {"__enter__", (PyCFunction)Group_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Group_exit, METH_FASTCALL, NULL},
    {NULL},
};

static PyMemberDef Group_members[] = {
    {"owner_died", T_BOOL, offsetof(GroupObject, owner_died), READONLY,
     "True when the last acquire found some member's previous holder dead"},
    {"members", T_OBJECT, offsetof(GroupObject, members), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(GroupObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot Group_slots[] = {
    {Py_tp_new, Group_new},
    {Py_tp_dealloc, Group_dealloc},
    {Py_tp_traverse, Group_traverse},
    {Py_tp_clear, Group_clear},
    {Py_tp_methods, Group_methods},
    {Py_tp_members, Group_members},
    {Py_sq_length, Group_len},
    {Py_tp_doc, "Group(*locks, shared=False)\n\nTakes every member or none, in one global order: "
                "groups never deadlock against each other."},
    {0, NULL},
};

static PyType_Spec Group_spec = {"surelock.Group", sizeof(GroupObject), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
                                 Group_slots};

/* ===== Semaphore core (surelock_sem): Semaphore, BoundedSemaphore, AsyncLock, AsyncSemaphore
 * ======================================================================================== */

typedef struct {
    PyObject_HEAD
    surelock_sem *s;
    uint64_t initial;
    int in_use;
    PyObject *weakreflist;
} SemObject;

/*
 * An async waiter: the C waiter storage plus what the grant callback needs. It holds the
 * semaphore (so the semaphore, and therefore the queue this storage sits in, outlives it) and
 * the future. While queued, the queue owns one reference to it; the callback or a successful
 * cancel drops that reference, so the storage stays valid and unmoved while queued.
 */
typedef struct {
    PyObject_HEAD
    surelock_waiter *w; /* aligned_alloc(16): the layout wants 16-byte alignment */
    SemObject *sem;
    PyObject *loop;
    PyObject *fut;
    uint64_t n;
    char queued;      /* the queue holds a reference */
    char cancel_called; /* cancel() was called: the Python side settles the permits */
    char given_back;  /* granted into a closed loop: the callback released the permits */
} WaiterObject;

static PyObject *Sem_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"value", NULL};
    PyObject *value = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &value)) return NULL;
    unsigned long long v = 1;
    if (value != NULL) {
        if (!PyLong_Check(value)) {
            PyErr_Format(PyExc_TypeError, "semaphore value must be an int, not %.100s",
                         Py_TYPE(value)->tp_name);
            return NULL;
        }
        int overflow;
        long long sv = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (sv == -1 && PyErr_Occurred()) return NULL;
        if (overflow < 0 || (overflow == 0 && sv < 0)) {
            PyErr_SetString(PyExc_ValueError, "semaphore initial value must be >= 0");
            return NULL;
        }
        if (overflow > 0 || (uint64_t)sv > SURELOCK_SEM_MAX) {
            PyErr_Format(PyExc_ValueError, "semaphore initial value must be <= %llu",
                         (unsigned long long)SURELOCK_SEM_MAX);
            return NULL;
        }
        v = (unsigned long long)sv;
    }
    SemObject *self = (SemObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    int rc = surelock_sem_new(v, &self->s);
    if (rc != 0) {
        Py_DECREF(self);
        return raise_rc(rc, NULL);
    }
    self->initial = v;
    return (PyObject *)self;
}

static void Sem_dealloc(SemObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    /* No waiter can be queued: every queued waiter holds a reference to us. */
    if (self->s != NULL) (void)surelock_sem_free(self->s);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Sem_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int parse_count(PyObject *obj, uint64_t *n, const char *what)
{
    if (obj == NULL) {
        *n = 1;
        return 0;
    }
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow != 0 || v < 1 || (uint64_t)v > SURELOCK_SEM_MAX) {
        PyErr_Format(PyExc_ValueError, "%s must be 1..%llu", what,
                     (unsigned long long)SURELOCK_SEM_MAX);
        return -1;
    }
    *n = (uint64_t)v;
    return 0;
}

/* ---- blocking a thread: a queued waiter whose callback only flips a futex word ---- */

struct thread_wait {
    surelock_waiter w;
    atomic_int state; /* 0 queued, 1 granted, 2 shut down */
};

static void thread_wake(void *ctx, int status)
{
    struct thread_wait *t = ctx;
    atomic_store(&t->state, status == 0 ? 1 : 2);
    futex_wake_all(&t->state);
}

/* Returns 1 acquired, 0 timed out / busy, -1 exception set. Keeps its FIFO place while it
 * waits (the main thread's signal checks do not leave the queue). */
static int sem_acquire_blocking(SemObject *self, uint64_t n, uint64_t timeout_ns)
{
    int rc = surelock_sem_tryacquire(self->s, n);
    if (rc == 0) return 1;
    if (rc != EBUSY) {
        raise_rc(rc, NULL);
        return -1;
    }
    if (timeout_ns == 0) return 0;
    struct thread_wait t;
    atomic_init(&t.state, 0);
    rc = surelock_sem_acquire_async(self->s, n, &t.w, thread_wake, &t);
    if (rc == 0) return 1;
    if (rc != EINPROGRESS) {
        raise_rc(rc, NULL);
        return -1;
    }
    int sliced = in_main_thread();
    uint64_t deadline = timeout_ns == SURELOCK_FOREVER ? SURELOCK_FOREVER : now_ns() + timeout_ns;
    int interrupted = 0;
    self->in_use++;
    while (atomic_load(&t.state) == 0) {
        uint64_t wait = SURELOCK_FOREVER;
        if (deadline != SURELOCK_FOREVER) {
            uint64_t now = now_ns();
            if (now >= deadline) break;
            wait = deadline - now;
        }
        if (sliced && wait > WAIT_SLICE_NS) wait = WAIT_SLICE_NS;
        Py_BEGIN_ALLOW_THREADS
        futex_wait_ns(&t.state, 0, wait);
        Py_END_ALLOW_THREADS
        if (atomic_load(&t.state) != 0) break;
        if (sliced && PyErr_CheckSignals() < 0) {
            interrupted = 1;
            break;
        }
    }
    int result;
    if (atomic_load(&t.state) == 0) {
        /* Timed out or interrupted: leave the queue, unless the permits were granted first. */
        PyObject *exc_type, *exc_val, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_val, &exc_tb);
        rc = surelock_sem_cancel(self->s, &t.w);
        if (rc == EALREADY || rc == ECANCELED) {
            /* The callback has run or will run (on the granting thread): wait for it, since
             * it writes into our stack frame. */
            Py_BEGIN_ALLOW_THREADS
            while (atomic_load(&t.state) == 0) futex_wait_ns(&t.state, 0, SURELOCK_FOREVER);
            Py_END_ALLOW_THREADS
        }
        PyErr_Restore(exc_type, exc_val, exc_tb);
    }
    int state = atomic_load(&t.state);
    if (state == 1) {
        if (interrupted) { /* granted while a signal handler raised: give the permits back */
            surelock_sem_release(self->s, n);
            result = -1;
        } else {
            result = 1;
        }
    } else if (state == 2) {
        if (!interrupted) {
            errno = ECANCELED;
            PyErr_SetString(PyExc_RuntimeError, "the semaphore was shut down");
        }
        result = -1;
    } else {
        result = interrupted ? -1 : 0;
    }
    self->in_use--;
    return result;
}

static PyObject *Sem_acquire(SemObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    uint64_t timeout_ns = SURELOCK_FOREVER;
    int blocking;
    if ((nargs != 0 || kwnames != NULL) &&
        parse_acquire_args(args, nargs, kwnames, "acquire", &timeout_ns, &blocking) < 0)
        return NULL;
    int r = sem_acquire_blocking(self, 1, timeout_ns);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Sem_try_acquire(SemObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t n = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "try_acquire(n=1)");
        return NULL;
    }
    if (nargs == 1 && parse_count(args[0], &n, "n") < 0) return NULL;
    int rc = surelock_sem_tryacquire(self->s, n);
    if (rc == 0) Py_RETURN_TRUE;
    if (rc == EBUSY) Py_RETURN_FALSE;
    return raise_rc(rc, NULL);
}

static PyObject *Sem_release_n(SemObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t n = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "release(n=1)");
        return NULL;
    }
    if (nargs == 1 && parse_count(args[0], &n, "n") < 0) return NULL;
    int rc = surelock_sem_release(self->s, n);
    if (rc != 0) return raise_rc(rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *Sem_available(SemObject *self, void *unused)
{
    return PyLong_FromUnsignedLongLong(surelock_sem_available(self->s));
}

static PyObject *Sem_initial(SemObject *self, void *unused)
{
    return PyLong_FromUnsignedLongLong(self->initial);
}

/* ---- async: the grant callback hands the result to the waiter's loop ---- */

static int interpreter_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* True when the calling thread runs `loop` now (asyncio's BaseEventLoop keeps the running
 * thread's ident in _thread_id; a loop without it is always treated as foreign). */
static int on_loop_thread(PyObject *loop)
{
    PyObject *tid = PyObject_GetAttrString(loop, "_thread_id");
    if (tid == NULL) {
        PyErr_Clear();
        return 0;
    }
    int same = PyLong_Check(tid) && PyLong_AsUnsignedLong(tid) == PyThread_get_thread_ident();
    PyErr_Clear();
    Py_DECREF(tid);
    if (same) {
        PyObject *closed = PyObject_CallMethod(loop, "is_closed", NULL);
        same = closed == Py_False;
        Py_XDECREF(closed);
        PyErr_Clear();
    }
    return same;
}

static void async_wake(void *ctx, int status)
{
    WaiterObject *w = ctx;
    /* Runs on the granting thread, which may or may not hold the GIL (another binding's
     * thread may release). At interpreter exit nothing may be touched: leak. */
    if (interpreter_finalizing()) return;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *exc_type, *exc_val, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_val, &exc_tb); /* the releasing call may be mid-exception */
    PyObject *r = NULL;
    if (!w->cancel_called) {
        PyObject *st = PyLong_FromLong(status);
        if (st != NULL) {
            /* On the loop's own thread (a task released it), settle the future at once, as
             * asyncio.Lock does: no self-pipe write, no extra loop iteration. From any other
             * thread, hand it over with call_soon_threadsafe. */
            if (grant_callable == NULL) /* _surelock used without the package */
                PyErr_SetString(PyExc_RuntimeError, "surelock: no grant hook");
            else if (on_loop_thread(w->loop))
                r = PyObject_CallFunctionObjArgs(grant_callable, w->fut, st, NULL);
            else
                r = PyObject_CallMethod(w->loop, "call_soon_threadsafe", "OOO", grant_callable,
                                        w->fut, st);
        }
        Py_XDECREF(st);
    }
    if (r == NULL && status == 0 && !w->cancel_called) {
        /* The loop is closed (or out of memory): nobody will take these permits. Give them
         * back now so they are never leaked. */
        PyErr_Clear();
        w->given_back = 1;
        surelock_sem_release(w->sem->s, w->n);
    }
    PyErr_Clear();
    Py_XDECREF(r);
    w->queued = 0;
    PyErr_Restore(exc_type, exc_val, exc_tb);
    Py_DECREF(w); /* the queue's reference */
    PyGILState_Release(g);
}

static PyObject *Sem_acquire_async(SemObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t n = 1;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "acquire_async(loop, future, n=1)");
        return NULL;
    }
    if (nargs == 3 && parse_count(args[2], &n, "n") < 0) return NULL;
    WaiterObject *w = PyObject_GC_New(WaiterObject, WaiterType);
    if (w == NULL) return NULL;
    w->w = aligned_alloc(16, sizeof(surelock_waiter));
    w->sem = (SemObject *)Py_NewRef(self);
    w->loop = Py_NewRef(args[0]);
    w->fut = Py_NewRef(args[1]);
    w->n = n;
    w->queued = 0;
    w->cancel_called = 0;
    w->given_back = 0;
    PyObject_GC_Track(w);
    if (w->w == NULL) {
        Py_DECREF(w);
        return PyErr_NoMemory();
    }
    Py_INCREF(w); /* the queue's reference, if it is queued */
    w->queued = 1;
    int rc = surelock_sem_acquire_async(self->s, n, w->w, async_wake, w);
    if (rc == EINPROGRESS) return (PyObject *)w;
    w->queued = 0;
    Py_DECREF(w);
    Py_DECREF(w);
    if (rc == 0) Py_RETURN_NONE; /* acquired at once */
    return raise_rc(rc, NULL);
}

static PyObject *Sem_repr(SemObject *self)
{
    return PyUnicode_FromFormat("<%s.%s at %p: value=%llu>", "surelock", Py_TYPE(self)->tp_name,
                                self, (unsigned long long)surelock_sem_available(self->s));
}

static PyMethodDef Sem_methods[] = {
    {"_acquire", (PyCFunction)(void (*)(void))Sem_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: one permit, FIFO"},
    {"_try_acquire", (PyCFunction)(void (*)(void))Sem_try_acquire, METH_FASTCALL,
     "try_acquire(n=1) -> bool: never overtakes a queued waiter"},
    {"_release", (PyCFunction)(void (*)(void))Sem_release_n, METH_FASTCALL, "release(n=1)"},
    {"_acquire_async", (PyCFunction)(void (*)(void))Sem_acquire_async, METH_FASTCALL,
     "_acquire_async(loop, future, n=1) -> None (acquired) or a queued waiter"},
    {NULL},
};

static PyGetSetDef Sem_getset[] = {
    {"_available", (getter)Sem_available, NULL, "permits available now"},
    {"_initial", (getter)Sem_initial, NULL, "the initial value"},
    {NULL},
};

static PyMemberDef Sem_members[] = {
    {"_blocked", T_INT, offsetof(SemObject, in_use), READONLY,
     "threads queued in a blocking acquire now (they hold their FIFO place)"},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SemObject, weakreflist), READONLY},
    {NULL},
};

static PyType_Slot Sem_slots[] = {
    {Py_tp_new, Sem_new},
    {Py_tp_dealloc, Sem_dealloc},
    {Py_tp_traverse, Sem_traverse},
    {Py_tp_methods, Sem_methods},
    {Py_tp_getset, Sem_getset},
    {Py_tp_members, Sem_members},
    {Py_tp_repr, Sem_repr},
    {0, NULL},
};

static PyType_Spec Sem_spec = {"surelock._Sem", sizeof(SemObject), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
                               Sem_slots};

/* ---- the waiter object ---- */

/* cancel() -> True: withdrawn before being granted (no permits held); False: already granted,
 * the caller holds the permits and must release them. At most once. */
static PyObject *Waiter_cancel(WaiterObject *self, PyObject *unused)
{
    if (self->given_back) Py_RETURN_TRUE; /* the callback already returned the permits */
    if (self->cancel_called) {
        PyErr_SetString(PyExc_RuntimeError, "waiter already cancelled");
        return NULL;
    }
    self->cancel_called = 1;
    int rc = surelock_sem_cancel(self->sem->s, self->w);
    if (rc == 0) {
        self->queued = 0;
        Py_DECREF(self); /* the queue's reference: the callback will never run */
        Py_RETURN_TRUE;
    }
    if (rc == EALREADY) Py_RETURN_FALSE;
    if (rc == ECANCELED) Py_RETURN_TRUE;
    return raise_rc(rc, NULL);
}

static int Waiter_traverse(WaiterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->sem);
    Py_VISIT(self->loop);
    Py_VISIT(self->fut);
    return 0;
}

static int Waiter_clear(WaiterObject *self)
{
    /* While queued, C may call back with this object: its references must stay. A queued
     * waiter is also referenced by the queue, so it is never garbage. */
    if (self->queued) return 0;
    Py_CLEAR(self->loop);
    Py_CLEAR(self->fut);
    return 0;
}

static void Waiter_dealloc(WaiterObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->fut);
    Py_CLEAR(self->sem);
    free(self->w);
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyMethodDef Waiter_methods[] = {
    {"cancel", (PyCFunction)Waiter_cancel, METH_NOARGS, NULL},
    {NULL},
};

static PyType_Slot Waiter_slots[] = {
    {Py_tp_dealloc, Waiter_dealloc},
    {Py_tp_traverse, Waiter_traverse},
    {Py_tp_clear, Waiter_clear},
    {Py_tp_methods, Waiter_methods},
    {0, NULL},
};

static PyType_Spec Waiter_spec = {"surelock._Waiter", sizeof(WaiterObject), 0,
                                  Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, Waiter_slots};

/* ===== module =============================================================================== */

static PyObject *mod_set_grant(PyObject *mod, PyObject *fn)
{
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "not callable");
        return NULL;
    }
    Py_XSETREF(grant_callable, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *mod_set_main_thread(PyObject *mod, PyObject *ident)
{
    unsigned long v = PyLong_AsUnsignedLong(ident);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    main_thread_ident = v; /* after fork() in a non-main thread, threading moves it */
    Py_RETURN_NONE;
}

static PyObject *mod_version(PyObject *mod, PyObject *unused)
{
    return PyUnicode_FromString(surelock_version());
}

static PyMethodDef module_methods[] = {
    {"_set_grant", mod_set_grant, METH_O, NULL},
    {"_set_main_thread", mod_set_main_thread, METH_O, NULL},
    {"library_version", mod_version, METH_NOARGS,
     "library_version() -> str: the loaded libsurelock's version"},
    {NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "surelock._surelock",
                                        "The C half of surelock (see the package).", -1,
                                        module_methods};

static PyTypeObject *add_type(PyObject *m, PyType_Spec *spec, const char *name)
{
    PyTypeObject *t = (PyTypeObject *)PyType_FromSpec(spec);
    if (t == NULL) return NULL;
    if (PyModule_AddObjectRef(m, name, (PyObject *)t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

PyMODINIT_FUNC PyInit__surelock(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) goto fail;
    PyObject *main_thread = PyObject_CallMethod(threading, "main_thread", NULL);
    Py_DECREF(threading);
    if (main_thread == NULL) goto fail;
    PyObject *ident = PyObject_GetAttrString(main_thread, "ident");
    Py_DECREF(main_thread);
    if (ident == NULL) goto fail;
    main_thread_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (PyErr_Occurred()) goto fail;
    PyObject *thread_mod = PyImport_ImportModule("_thread");
    if (thread_mod == NULL) goto fail;
    PyObject *tmax = PyObject_GetAttrString(thread_mod, "TIMEOUT_MAX");
    Py_DECREF(thread_mod);
    if (tmax == NULL) goto fail;
    timeout_max = PyFloat_AsDouble(tmax);
    Py_DECREF(tmax);
    if (PyErr_Occurred()) goto fail;

    OwnerDiedWarning = PyErr_NewExceptionWithDoc(
        "surelock.OwnerDiedWarning",
        "The previous holder of a lock died while holding it; this acquire got the lock.",
        PyExc_RuntimeWarning, NULL);
    if (OwnerDiedWarning == NULL ||
        PyModule_AddObjectRef(m, "OwnerDiedWarning", OwnerDiedWarning) < 0)
        goto fail;
    if (!(LockType = add_type(m, &Lock_spec, "Lock")) ||
        !(RLockType = add_type(m, &RLock_spec, "RLock")) ||
        !(RWLockType = add_type(m, &RWLock_spec, "_RWLock")) ||
        !(IpcType = add_type(m, &Ipc_spec, "_IpcLock")) ||
        !(GroupType = add_type(m, &Group_spec, "Group")) ||
        !(SemType = add_type(m, &Sem_spec, "_Sem")) ||
        !(WaiterType = add_type(m, &Waiter_spec, "_Waiter")))
        goto fail;
    if (PyModule_AddObject(m, "FOREVER", PyLong_FromUnsignedLongLong(SURELOCK_FOREVER)) < 0 ||
        PyModule_AddObject(m, "SEM_MAX", PyLong_FromUnsignedLongLong(SURELOCK_SEM_MAX)) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
