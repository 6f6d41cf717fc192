//! `ReentrantMutex<T>` over `surelock_rlock`.
use std::cell::UnsafeCell;
use std::ffi::CString;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::time::Duration;

use crate::{acquired, create, create_or_abort, errno, nanos, sys, Error, NotSend};

/// A reentrant mutex: the thread that holds it may lock it again (a callback from a C
/// library re-entering the library), other threads wait. As with parking_lot's, the guard
/// gives `&T` only (several guards of one thread may be alive at once); put a `Cell` or
/// `RefCell` inside for mutation.
///
/// The lock belongs to the OS thread that took it, so its guard is `!Send`. If that thread
/// exits holding it (a forgotten guard), the next acquirer gets it with `owner_died()`.
pub struct ReentrantMutex<T: ?Sized> {
    raw: NonNull<sys::surelock_rlock>,
    global: bool,
    data: UnsafeCell<T>,
}

// Safety: the lock serialises threads; within one thread only `&T` is handed out.
unsafe impl<T: ?Sized + Send> Send for ReentrantMutex<T> {}
unsafe impl<T: ?Sized + Send> Sync for ReentrantMutex<T> {}

/// Proof that the calling thread holds a [`ReentrantMutex`]; derefs to `&T`, unlocks one
/// level on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ReentrantMutexGuard<'a, T: ?Sized> {
    lock: &'a ReentrantMutex<T>,
    owner_died: bool,
    _not_send: NotSend,
}

// Safety: sharing `&guard` with another thread shares `&T`.
unsafe impl<T: ?Sized + Sync> Sync for ReentrantMutexGuard<'_, T> {}

impl<T> ReentrantMutex<T> {
    /// A new unlocked mutex holding `value`. Out of memory aborts, like `Box::new`.
    pub fn new(value: T) -> Self {
        ReentrantMutex {
            raw: create_or_abort(sys::surelock_rlock_new),
            global: false,
            data: UnsafeCell::new(value),
        }
    }

    /// As [`new`](Self::new), with `Err(ENOMEM)` instead of aborting.
    pub fn try_new(value: T) -> Result<Self, Error> {
        Ok(ReentrantMutex { raw: create(sys::surelock_rlock_new)?, global: false,
                            data: UnsafeCell::new(value) })
    }

    /// The protected value, if the lock could be freed (it is not held, e.g. by a thread
    /// that forgot its guard); otherwise `Err` gives the mutex back.
    pub fn into_inner(self) -> Result<T, Self> {
        if self.global {
            // Safety: a global lock's data is () and owns nothing: read it out and forget.
            let value = unsafe { std::ptr::read(self.data.get()) };
            std::mem::forget(self);
            return Ok(value);
        }
        // Safety: a handle of ours; frees nothing (EBUSY) while held.
        if unsafe { sys::surelock_rlock_free(self.raw.as_ptr()) } != 0 {
            return Err(self);
        }
        // Safety: the handle is freed; move the data out and skip Drop.
        let value = unsafe { std::ptr::read(self.data.get()) };
        std::mem::forget(self);
        Ok(value)
    }
}

impl ReentrantMutex<()> {
    /// The process-wide reentrant lock named `name` (1..255 bytes, no NUL): every caller in
    /// the process that names the same string gets the same lock, whichever language,
    /// binding or plugin it comes from (they must load the same shared libsurelock.so.1).
    /// Recommended: `"<library soname>"`, e.g. `"libfoo.so.3"`. The lock is never freed.
    ///
    /// `Err(EINVAL)` for an empty name, one longer than 255 bytes, or one containing NUL.
    pub fn global(name: impl AsRef<[u8]>) -> Result<Self, Error> {
        let bytes = name.as_ref();
        let cname = CString::new(bytes).map_err(|e| {
            Error::new(errno::EINVAL, format!(
                "ReentrantMutex::global: the name contains a NUL byte at offset {}",
                e.nul_position()))
        })?;
        let mut out = std::ptr::null_mut();
        // Safety: a NUL-terminated name and a valid out-pointer.
        crate::error::check(unsafe { sys::surelock_rlock_global(cname.as_ptr(), &mut out) })?;
        Ok(ReentrantMutex { raw: NonNull::new(out).expect("NULL global lock"), global: true,
                            data: UnsafeCell::new(()) })
    }
}

impl<T: ?Sized> ReentrantMutex<T> {
    fn guard(&self, rc: std::os::raw::c_int) -> Result<ReentrantMutexGuard<'_, T>, Error> {
        let owner_died = acquired(rc)?;
        Ok(ReentrantMutexGuard { lock: self, owner_died, _not_send: PhantomData })
    }

    /// Takes the lock, waiting as long as needed; the holder re-enters at once.
    /// `Err`: `EAGAIN` (the depth would overflow), `ENOMEM` (this thread's record).
    pub fn lock(&self) -> Result<ReentrantMutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_rlock_lock(self.raw.as_ptr()) })
    }

    /// Takes the lock if no waiting is needed: `Err(EBUSY)` while another thread holds it.
    pub fn try_lock(&self) -> Result<ReentrantMutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_rlock_trylock(self.raw.as_ptr()) })
    }

    /// Takes the lock, waiting at most `timeout` (monotonic clock): `Err(ETIMEDOUT)`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ReentrantMutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        self.guard(unsafe { sys::surelock_rlock_timedlock(self.raw.as_ptr(), nanos(timeout)) })
    }

    /// How many guards the calling thread holds on this lock (0: it does not hold it).
    pub fn depth(&self) -> u32 {
        // Safety: a live handle.
        unsafe { sys::surelock_rlock_depth(self.raw.as_ptr()) }
    }

    /// Whether this came from [`ReentrantMutex::global`].
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// Whether both are the same library lock (two `global` calls with one name are).
    pub fn same_lock<U: ?Sized>(&self, other: &ReentrantMutex<U>) -> bool {
        self.raw == other.raw
    }

    /// The protected value, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The library handle, for passing to C code (valid as long as `self`).
    pub fn as_raw(&self) -> *mut sys::surelock_rlock {
        self.raw.as_ptr()
    }

    /// # Safety
    /// The calling thread holds the lock for the borrow.
    pub(crate) unsafe fn data_ref(&self) -> &T {
        // Safety: only shared references are ever handed out.
        unsafe { &*self.data.get() }
    }
}

impl<T: ?Sized> Drop for ReentrantMutex<T> {
    fn drop(&mut self) {
        if !self.global {
            // EBUSY (a forgotten guard, a group still naming it): leak the handle rather than
            // free a lock someone holds.
            // Safety: a handle of ours that no guard borrows any more.
            let _ = unsafe { sys::surelock_rlock_free(self.raw.as_ptr()) };
        }
    }
}

impl<T: Default> Default for ReentrantMutex<T> {
    fn default() -> Self {
        ReentrantMutex::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for ReentrantMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReentrantMutex").field("global", &self.global)
            .field("depth", &self.depth()).finish_non_exhaustive()
    }
}

impl<'a, T: ?Sized> ReentrantMutexGuard<'a, T> {
    /// The previous owner thread exited holding the lock (`EOWNERDEAD`); the lock is held
    /// and fully usable, but what it protects may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: ?Sized> Deref for ReentrantMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Safety: held by this thread; only shared references are handed out.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for ReentrantMutexGuard<'_, T> {
    fn drop(&mut self) {
        // Safety: this thread holds a level of it (the guard is !Send).
        let rc = unsafe { sys::surelock_rlock_unlock(self.lock.raw.as_ptr()) };
        debug_assert_eq!(rc, 0, "surelock_rlock_unlock");
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ReentrantMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
