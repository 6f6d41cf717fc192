//! `Mutex<T>`, `RwLock<T>` and `Condvar` over `surelock_mutex`, `surelock_rwlock` and
//! `surelock_cond`: error-checking (any acquire by the holder is `Err(EDEADLK)`, never a hang),
//! owned by the OS thread that took them (guards are `!Send`), no poisoning (a panic while
//! holding unlocks on unwind; a thread that exits holding makes the next guard's
//! `owner_died()` true).
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::time::Duration;

use crate::{acquired, create, create_or_abort, errno, nanos, sys, Error, NotSend};

macro_rules! handle_common {
    ($ty:ident, $raw:ty, $new:path, $free:path) => {
        impl<T> $ty<T> {
            /// A new unlocked lock holding `value`. Out of memory aborts, like `Box::new`.
            pub fn new(value: T) -> Self {
                $ty { raw: create_or_abort($new), data: UnsafeCell::new(value) }
            }

            /// As `new`, with `Err(ENOMEM)` instead of aborting.
            pub fn try_new(value: T) -> Result<Self, Error> {
                Ok($ty { raw: create($new)?, data: UnsafeCell::new(value) })
            }

            /// The protected value, if the lock could be freed; `Err` gives the lock back while
            /// it is held (by a forgotten guard) or is a member of a lock collection.
            pub fn into_inner(self) -> Result<T, Self> {
                // Safety: a handle of ours; frees nothing (EBUSY) while held or grouped.
                if unsafe { $free(self.raw.as_ptr()) } != 0 {
                    return Err(self);
                }
                // Safety: freed; move the data out and skip Drop.
                let value = unsafe { std::ptr::read(self.data.get()) };
                std::mem::forget(self);
                Ok(value)
            }
        }

        impl<T: ?Sized> $ty<T> {
            /// The protected value, through exclusive access (no locking needed).
            pub fn get_mut(&mut self) -> &mut T {
                self.data.get_mut()
            }

            /// The library handle, for passing to C code (valid as long as `self`).
            pub fn as_raw(&self) -> *mut $raw {
                self.raw.as_ptr()
            }
        }

        impl<T: ?Sized> Drop for $ty<T> {
            fn drop(&mut self) {
                // EBUSY (held through a forgotten guard): leak the handle, never free a lock
                // someone holds. Safety: no guard borrows it any more.
                let _ = unsafe { $free(self.raw.as_ptr()) };
            }
        }

        impl<T: Default> Default for $ty<T> {
            fn default() -> Self {
                $ty::new(T::default())
            }
        }

        impl<T: ?Sized> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    };
}

/// An error-checking mutex. `lock()` by the thread that holds it is `Err(EDEADLK)`.
pub struct Mutex<T: ?Sized> {
    raw: NonNull<sys::surelock_mutex>,
    data: UnsafeCell<T>,
}

// Safety: the lock gives one thread at a time access to T.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

handle_common!(Mutex, sys::surelock_mutex, sys::surelock_mutex_new, sys::surelock_mutex_free);

/// Proof that the calling thread holds a [`Mutex`]; derefs to `T`, unlocks on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a Mutex<T>,
    owner_died: bool,
    _not_send: NotSend,
}

// Safety: `&guard` on another thread gives only `&T`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T: ?Sized> Mutex<T> {
    fn guard(&self, rc: c_int) -> Result<MutexGuard<'_, T>, Error> {
        let owner_died = acquired(rc)?;
        Ok(MutexGuard { lock: self, owner_died, _not_send: PhantomData })
    }

    /// Takes the lock, waiting as long as needed. `Err`: `EDEADLK` (this thread holds it),
    /// `ENOMEM` (this thread's record).
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_mutex_lock(self.raw.as_ptr()) })
    }

    /// Takes the lock without waiting: `Err(EBUSY)` while another thread holds it.
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_mutex_trylock(self.raw.as_ptr()) })
    }

    /// Takes the lock, waiting at most `timeout`: `Err(ETIMEDOUT)`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_mutex_timedlock(self.raw.as_ptr(), nanos(timeout)) })
    }

    /// The data, for a lock collection that holds the lock.
    pub(crate) fn data_ptr(&self) -> *mut T {
        self.data.get()
    }
}

impl<T: ?Sized> MutexGuard<'_, T> {
    /// The previous owner thread exited holding the lock (`EOWNERDEAD`), or did so while
    /// this guard waited on a [`Condvar`]; the lock is held and usable, but what it protects
    /// may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Safety: held by this thread.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // Safety: held by this thread, exclusively (re-locking is EDEADLK).
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // Safety: this thread holds it (the guard is !Send).
        let rc = unsafe { sys::surelock_mutex_unlock(self.lock.raw.as_ptr()) };
        debug_assert_eq!(rc, 0, "surelock_mutex_unlock");
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A writer-preferring reader-writer lock: once a writer waits, new readers queue behind it.
/// A thread holds it at most once, in one mode: asking again in either mode is
/// `Err(EDEADLK)`.
pub struct RwLock<T: ?Sized> {
    raw: NonNull<sys::surelock_rwlock>,
    data: UnsafeCell<T>,
}

// Safety: as std's RwLock: readers on several threads share &T.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

handle_common!(RwLock, sys::surelock_rwlock, sys::surelock_rwlock_new, sys::surelock_rwlock_free);

/// A shared hold of a [`RwLock`]; derefs to `&T`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    owner_died: bool,
    _not_send: NotSend,
}

/// The exclusive hold of a [`RwLock`]; derefs to `&mut T`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    owner_died: bool,
    _not_send: NotSend,
}

// Safety: `&guard` on another thread gives only `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

macro_rules! rw_acquire {
    ($(#[$doc:meta])* $name:ident, $guard:ident, $call:path $(, $arg:ident: $argty:ty => $conv:expr)?) => {
        $(#[$doc])*
        pub fn $name(&self $(, $arg: $argty)?) -> Result<$guard<'_, T>, Error> {
            // Safety: a live handle.
            let owner_died = acquired(unsafe { $call(self.raw.as_ptr() $(, $conv)?) })?;
            Ok($guard { lock: self, owner_died, _not_send: PhantomData })
        }
    };
}

impl<T: ?Sized> RwLock<T> {
    rw_acquire!(
        /// Shared acquire, waiting as long as needed. `Err`: `EDEADLK` (this thread holds it in
        /// either mode), `ENOMEM`.
        read, RwLockReadGuard, sys::surelock_rwlock_rdlock);
    rw_acquire!(
        /// Shared acquire without waiting: `Err(EBUSY)` while a writer holds or awaits it.
        try_read, RwLockReadGuard, sys::surelock_rwlock_tryrdlock);
    rw_acquire!(
        /// Shared acquire, waiting at most `timeout`: `Err(ETIMEDOUT)`.
        read_timeout, RwLockReadGuard, sys::surelock_rwlock_timedrdlock,
        timeout: Duration => nanos(timeout));
    rw_acquire!(
        /// Exclusive acquire, waiting as long as needed. `Err`: `EDEADLK`, `ENOMEM`.
        write, RwLockWriteGuard, sys::surelock_rwlock_wrlock);
    rw_acquire!(
        /// Exclusive acquire without waiting: `Err(EBUSY)`.
        try_write, RwLockWriteGuard, sys::surelock_rwlock_trywrlock);
    rw_acquire!(
        /// Exclusive acquire, waiting at most `timeout`: `Err(ETIMEDOUT)`.
        write_timeout, RwLockWriteGuard, sys::surelock_rwlock_timedwrlock,
        timeout: Duration => nanos(timeout));

    /// The data, for a lock collection that holds the lock.
    pub(crate) fn data_ptr(&self) -> *mut T {
        self.data.get()
    }
}

macro_rules! rw_guard_common {
    ($guard:ident) => {
        impl<T: ?Sized> $guard<'_, T> {
            /// A writer exited holding the lock (`EOWNERDEAD`); the lock is held and usable,
            /// but what it protects may be half-updated. (A dead reader is not reported.)
            pub fn owner_died(&self) -> bool {
                self.owner_died
            }
        }

        impl<T: ?Sized> Deref for $guard<'_, T> {
            type Target = T;
            fn deref(&self) -> &T {
                // Safety: held by this thread.
                unsafe { &*self.lock.data.get() }
            }
        }

        impl<T: ?Sized> Drop for $guard<'_, T> {
            fn drop(&mut self) {
                // Safety: this thread holds it (the guard is !Send).
                let rc = unsafe { sys::surelock_rwlock_unlock(self.lock.raw.as_ptr()) };
                debug_assert_eq!(rc, 0, "surelock_rwlock_unlock");
            }
        }

        impl<T: ?Sized + fmt::Debug> fmt::Debug for $guard<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&**self, f)
            }
        }
    };
}
rw_guard_common!(RwLockReadGuard);
rw_guard_common!(RwLockWriteGuard);

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // Safety: held exclusively by this thread.
        unsafe { &mut *self.lock.data.get() }
    }
}

/// A condition variable for [`Mutex`] guards (parking_lot's shape: `wait(&mut guard)`). The
/// mutex is held again whenever a wait returns, also on timeout; wake-ups may be spurious,
/// so wait in a loop or use [`wait_while`](Self::wait_while).
pub struct Condvar {
    raw: NonNull<sys::surelock_cond>,
}

// Safety: the library's cond is used from any thread.
unsafe impl Send for Condvar {}
unsafe impl Sync for Condvar {}

/// Whether a timed wait returned because its time was up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A new condition variable. Out of memory aborts, like `Box::new`.
    pub fn new() -> Condvar {
        Condvar { raw: create_or_abort(sys::surelock_cond_new) }
    }

    /// As [`new`](Self::new), with `Err(ENOMEM)` instead of aborting.
    pub fn try_new() -> Result<Condvar, Error> {
        Ok(Condvar { raw: create(sys::surelock_cond_new)? })
    }

    fn waited<T: ?Sized>(guard: &mut MutexGuard<'_, T>, rc: c_int) -> Result<bool, Error> {
        match rc {
            0 => Ok(false),
            errno::ETIMEDOUT => Ok(true),
            errno::EOWNERDEAD => {
                guard.owner_died = true;
                Ok(false)
            }
            // Only EINVAL/EPERM, impossible with a live handle and a held guard; the contract
            // leaves the mutex held in every case.
            rc => Err(Error::last(rc)),
        }
    }

    /// Releases the guard's mutex, sleeps until notified (or spuriously), and takes the mutex
    /// again. If the mutex's owner died meanwhile, `guard.owner_died()` becomes true.
    pub fn wait<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>) -> Result<(), Error> {
        // Safety: live handles; the guard proves this thread holds the mutex.
        let rc = unsafe { sys::surelock_cond_wait(self.raw.as_ptr(), guard.lock.raw.as_ptr()) };
        Self::waited(guard, rc).map(|_| ())
    }

    /// As [`wait`](Self::wait), for at most `timeout`.
    pub fn wait_timeout<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration)
                                   -> Result<WaitTimeoutResult, Error> {
        // Safety: as in wait.
        let rc = unsafe {
            sys::surelock_cond_timedwait(self.raw.as_ptr(), guard.lock.raw.as_ptr(), nanos(timeout))
        };
        Self::waited(guard, rc).map(WaitTimeoutResult)
    }

    /// Waits while `condition` holds (re-checked after every wake-up).
    pub fn wait_while<T: ?Sized, F: FnMut(&mut T) -> bool>(
        &self, guard: &mut MutexGuard<'_, T>, mut condition: F) -> Result<(), Error> {
        while condition(&mut **guard) {
            self.wait(guard)?;
        }
        Ok(())
    }

    /// Waits while `condition` holds, at most `timeout` in all.
    pub fn wait_while_timeout<T: ?Sized, F: FnMut(&mut T) -> bool>(
        &self, guard: &mut MutexGuard<'_, T>, timeout: Duration, mut condition: F)
        -> Result<WaitTimeoutResult, Error> {
        let start = std::time::Instant::now();
        while condition(&mut **guard) {
            let left = match timeout.checked_sub(start.elapsed()) {
                Some(left) => left,
                None => return Ok(WaitTimeoutResult(true)),
            };
            self.wait_timeout(guard, left)?;
        }
        Ok(WaitTimeoutResult(false))
    }

    /// Wakes at least one waiter, if any.
    pub fn notify_one(&self) {
        // Safety: a live handle; only EINVAL (NULL) can fail.
        let _ = unsafe { sys::surelock_cond_signal(self.raw.as_ptr()) };
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        // Safety: a live handle.
        let _ = unsafe { sys::surelock_cond_broadcast(self.raw.as_ptr()) };
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl Drop for Condvar {
    fn drop(&mut self) {
        // Waiters borrow the Condvar, so none can be left; EBUSY would leak, never free.
        // Safety: a handle of ours.
        let _ = unsafe { sys::surelock_cond_free(self.raw.as_ptr()) };
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
