// The contenders the suites share: surelock's locks and their pthread peers behind one shape,
// lock() / unlock() (rdlock() / wrlock() for rwlocks) returning 0 or an errno, ok() after
// construction. Test code: the suites include it inside their own translation units.
#pragma once

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "surelock.h"

namespace surelock::bench {

struct alignas(64) SurelockMutex {
    surelock_mutex *m = nullptr;
    SurelockMutex()
    {
        if (surelock_mutex_new(&m) != 0) m = nullptr;
    }
    ~SurelockMutex()
    {
        if (m) surelock_mutex_free(m);
    }
    bool ok() const { return m != nullptr; }
    int lock() { return surelock_mutex_lock(m); }
    int unlock() { return surelock_mutex_unlock(m); }
};

struct alignas(64) PthreadNormal {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    ~PthreadNormal() { pthread_mutex_destroy(&m); }
    bool ok() const { return true; }
    int lock() { return pthread_mutex_lock(&m); }
    int unlock() { return pthread_mutex_unlock(&m); }
};

template <int Type> struct alignas(64) PthreadMutex {
    pthread_mutex_t m;
    bool ready = false;
    PthreadMutex()
    {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, Type);
        ready = pthread_mutex_init(&m, &a) == 0;
        pthread_mutexattr_destroy(&a);
    }
    ~PthreadMutex()
    {
        if (ready) pthread_mutex_destroy(&m);
    }
    bool ok() const { return ready; }
    int lock() { return pthread_mutex_lock(&m); }
    int unlock() { return pthread_mutex_unlock(&m); }
};
using PthreadRecursive = PthreadMutex<PTHREAD_MUTEX_RECURSIVE>;

struct alignas(64) SurelockRlock {
    surelock_rlock *l = nullptr;
    SurelockRlock()
    {
        if (int rc = surelock_rlock_new(&l); rc != 0) {
            fprintf(stderr, "surelock bench rlock: surelock_rlock_new: %s (%s)\n", strerror(rc),
                    surelock_errmsg());
            l = nullptr;
        }
    }
    ~SurelockRlock()
    {
        if (l) surelock_rlock_free(l);
    }
    bool ok() const { return l != nullptr; }
    int lock() { return surelock_rlock_lock(l); }
    int unlock() { return surelock_rlock_unlock(l); }
};

struct alignas(64) SurelockAmutex {
    surelock_amutex *m = nullptr;
    SurelockAmutex()
    {
        if (surelock_amutex_new(&m) != 0) m = nullptr;
    }
    ~SurelockAmutex()
    {
        if (m) surelock_amutex_free(m);
    }
    bool ok() const { return m != nullptr; }
    int lock() { return surelock_amutex_lock(m); }
    int unlock() { return surelock_amutex_unlock(m); }
};

// Strict FIFO: take a ticket, wait (on the condition variable) until it is served.
struct alignas(64) TicketLock {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    uint64_t next = 0, serving = 0;
    ~TicketLock()
    {
        pthread_cond_destroy(&c);
        pthread_mutex_destroy(&m);
    }
    bool ok() const { return true; }
    int lock()
    {
        int rc = pthread_mutex_lock(&m);
        uint64_t mine = next++;
        while (serving != mine) pthread_cond_wait(&c, &m);
        return rc | pthread_mutex_unlock(&m);
    }
    int unlock()
    {
        int rc = pthread_mutex_lock(&m);
        serving++;
        pthread_cond_broadcast(&c);
        return rc | pthread_mutex_unlock(&m);
    }
};

struct alignas(64) SurelockRwlock {
    surelock_rwlock *l = nullptr;
    SurelockRwlock()
    {
        if (surelock_rwlock_new(&l) != 0) l = nullptr;
    }
    ~SurelockRwlock()
    {
        if (l) surelock_rwlock_free(l);
    }
    bool ok() const { return l != nullptr; }
    int rdlock() { return surelock_rwlock_rdlock(l); }
    int wrlock() { return surelock_rwlock_wrlock(l); }
    int unlock() { return surelock_rwlock_unlock(l); }
};

struct alignas(64) PthreadRwlock {
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    ~PthreadRwlock() { pthread_rwlock_destroy(&l); }
    bool ok() const { return true; }
    int rdlock() { return pthread_rwlock_rdlock(&l); }
    int wrlock() { return pthread_rwlock_wrlock(&l); }
    int unlock() { return pthread_rwlock_unlock(&l); }
};

} // namespace surelock::bench
