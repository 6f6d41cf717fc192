//! `AsyncMutex<T>` and `Semaphore`, tokio's shapes over `surelock_amutex` / `surelock_sem`:
//! strictly FIFO, runtime-agnostic futures over the `*_async` calls (the library's callback
//! wakes the task's `Waker`, on the thread that released), not owned by a thread (guards and
//! permits are `Send` and may be held across `.await`).
//!
//! Cancellation: dropping a future that is queued withdraws its waiter; if the lock or the
//! permits were handed to it meanwhile (granted, not yet observed), the drop gives them back,
//! so the next waiter is served. The waiter lives inside the pinned future and is never moved
//! while queued.
use std::cell::UnsafeCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use crate::acquire::{Acquire, Target};
use crate::error::check;
use crate::{create, create_or_abort, errno, sys, Error};

/// A FIFO semaphore, tokio's `Semaphore` shape. Permits are counted in `u64` up to
/// [`Semaphore::MAX_PERMITS`]; a request for 0 or more than that is `Err(EINVAL)`.
pub struct Semaphore {
    raw: NonNull<sys::surelock_sem>,
    closed: AtomicBool,
    queued_lately: AtomicBool,
}

// Safety: the library's semaphore is used from any thread.
unsafe impl Send for Semaphore {}
unsafe impl Sync for Semaphore {}

/// Permits of a [`Semaphore`]; returned to it on drop (from any thread).
#[must_use = "the permits are returned as soon as this is dropped"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
    permits: u64,
}

/// The future of [`Semaphore::acquire`] / [`acquire_many`](Semaphore::acquire_many).
#[must_use = "futures do nothing unless polled"]
pub struct SemaphoreAcquire<'a> {
    sem: &'a Semaphore,
    permits: u64,
    inner: Acquire,
}

impl Semaphore {
    /// The largest permit count and request: 2^61 - 1.
    pub const MAX_PERMITS: u64 = sys::SURELOCK_SEM_MAX;

    /// A semaphore with `permits` available.
    ///
    /// # Panics
    /// If `permits` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS), as tokio's does (use
    /// [`try_new`](Self::try_new) for an `Err`); out of memory aborts, like `Box::new`.
    pub fn new(permits: usize) -> Semaphore {
        assert!(permits as u64 <= Self::MAX_PERMITS, "a semaphore holds at most 2^61-1 permits");
        Semaphore { raw: create_or_abort_sem(permits as u64), closed: AtomicBool::new(false),
                    queued_lately: AtomicBool::new(false) }
    }

    /// A semaphore with `permits` available: `Err(EINVAL)` beyond `MAX_PERMITS`, `ENOMEM`.
    pub fn try_new(permits: u64) -> Result<Semaphore, Error> {
        let mut out = std::ptr::null_mut();
        // Safety: a valid out-pointer.
        check(unsafe { sys::surelock_sem_new(permits, &mut out) })?;
        Ok(Semaphore { raw: NonNull::new(out).expect("NULL semaphore"), closed: AtomicBool::new(false),
                    queued_lately: AtomicBool::new(false) })
    }

    /// Waits for one permit, in FIFO order. `Err(ECANCELED)` when closed, before or while
    /// waiting.
#[inline]
    pub fn acquire(&self) -> SemaphoreAcquire<'_> {
        self.acquire_many(1)
    }

    /// Waits for `n` permits, in FIFO order: a large request at the head holds back smaller
    /// ones behind it. `Err`: `ECANCELED` (closed), `EINVAL` (n is 0 or above MAX_PERMITS).
#[inline]
    pub fn acquire_many(&self, n: u64) -> SemaphoreAcquire<'_> {
        SemaphoreAcquire { sem: self, permits: n, inner: Acquire::new(Target::Sem(self.raw, n), &self.queued_lately) }
    }

    /// One permit if available now and nobody is queued: `Err(EBUSY)`; `Err(ECANCELED)`.
#[inline]
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, Error> {
        self.try_acquire_many(1)
    }

    /// `n` permits if available now and nobody is queued: `Err(EBUSY)`, `ECANCELED`, `EINVAL`.
#[inline]
    pub fn try_acquire_many(&self, n: u64) -> Result<SemaphorePermit<'_>, Error> {
        // Safety: a live handle.
        check(unsafe { sys::surelock_sem_tryacquire(self.raw.as_ptr(), n) })?;
        Ok(SemaphorePermit { sem: self, permits: n })
    }

    /// Blocks the thread (not a task!) for `n` permits, in the same FIFO.
    pub fn blocking_acquire_many(&self, n: u64) -> Result<SemaphorePermit<'_>, Error> {
        // Safety: a live handle.
        check(unsafe { sys::surelock_sem_acquire(self.raw.as_ptr(), n) })?;
        Ok(SemaphorePermit { sem: self, permits: n })
    }

    /// Adds `n` permits, serving queued waiters in order. 0 does nothing.
    /// `Err(EAGAIN)` when the count would exceed MAX_PERMITS (nothing changes).
    pub fn add_permits(&self, n: u64) -> Result<(), Error> {
        if n == 0 {
            return Ok(());
        }
        // Safety: a live handle.
        check(unsafe { sys::surelock_sem_release(self.raw.as_ptr(), n) })
    }

    /// Permits available now.
    pub fn available_permits(&self) -> usize {
        // Safety: a live handle.
        unsafe { sys::surelock_sem_available(self.raw.as_ptr()) as usize }
    }

    /// Closes it: every queued acquire resolves to `Err(ECANCELED)`, and so does every later
    /// one. Permits already held can still be returned.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Safety: a live handle; only EINVAL (NULL) can fail.
        let _ = unsafe { sys::surelock_sem_shutdown(self.raw.as_ptr()) };
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

fn create_or_abort_sem(permits: u64) -> NonNull<sys::surelock_sem> {
    let mut out = std::ptr::null_mut();
    // Safety: a valid out-pointer; permits were checked.
    match unsafe { sys::surelock_sem_new(permits, &mut out) } {
        0 => NonNull::new(out).expect("NULL semaphore"),
        _ => std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u64; 8]>()),
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // Futures and permits borrow it, so nothing waits; EBUSY would leak, never free.
        // Safety: our handle.
        let _ = unsafe { sys::surelock_sem_free(self.raw.as_ptr()) };
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("available_permits", &self.available_permits())
            .field("closed", &self.is_closed()).finish()
    }
}

impl<'a> Future for SemaphoreAcquire<'a> {
    type Output = Result<SemaphorePermit<'a>, Error>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Safety: `inner` is structurally pinned (never moved out of the pinned future).
        let this = unsafe { self.get_unchecked_mut() };
        let (sem, permits) = (this.sem, this.permits);
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        inner.poll(cx).map(|r| r.map(|()| SemaphorePermit { sem, permits }))
    }
}

impl fmt::Debug for SemaphoreAcquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreAcquire").field("permits", &self.permits).finish_non_exhaustive()
    }
}

impl SemaphorePermit<'_> {
    /// How many permits this holds.
    pub fn num_permits(&self) -> u64 {
        self.permits
    }

    /// Keeps the permits out of the semaphore for good.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    #[inline]
    fn drop(&mut self) {
        // Safety: a live handle and permits we hold. EAGAIN (add_permits filled it to the
        // maximum meanwhile) leaves the count at the maximum.
        let _ = unsafe { sys::surelock_sem_release(self.sem.raw.as_ptr(), self.permits) };
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").field("permits", &self.permits).finish()
    }
}

/// A FIFO async mutex, tokio's `Mutex` shape: `lock().await` gives the guard, which may be
/// held across `.await` and dropped on any thread. Locking it again from the task that holds
/// it waits behind itself (it is not owned by a thread), as with tokio's.
pub struct AsyncMutex<T: ?Sized> {
    raw: NonNull<sys::surelock_amutex>,
    queued_lately: AtomicBool,
    data: UnsafeCell<T>,
}

// Safety: one holder at a time gets &mut T, from any thread.
unsafe impl<T: ?Sized + Send> Send for AsyncMutex<T> {}
unsafe impl<T: ?Sized + Send> Sync for AsyncMutex<T> {}

/// The hold of an [`AsyncMutex`]; derefs to `T`, unlocks on drop (from any thread).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct AsyncMutexGuard<'a, T: ?Sized> {
    lock: &'a AsyncMutex<T>,
    /// Send iff T: Send, Sync iff T: Sync (with the reference: also T: Send).
    _marker: PhantomData<&'a mut T>,
}

/// The future of [`AsyncMutex::lock`].
#[must_use = "futures do nothing unless polled"]
pub struct AsyncMutexLockFuture<'a, T: ?Sized> {
    lock: &'a AsyncMutex<T>,
    inner: Acquire,
}

impl<T> AsyncMutex<T> {
    /// A new unlocked mutex. Out of memory aborts, like `Box::new`.
    pub fn new(value: T) -> Self {
        AsyncMutex { raw: create_or_abort(sys::surelock_amutex_new), queued_lately: AtomicBool::new(false),
                     data: UnsafeCell::new(value) }
    }

    /// As [`new`](Self::new), with `Err(ENOMEM)` instead of aborting.
    pub fn try_new(value: T) -> Result<Self, Error> {
        Ok(AsyncMutex { raw: create(sys::surelock_amutex_new)?, queued_lately: AtomicBool::new(false),
                        data: UnsafeCell::new(value) })
    }

    /// The protected value (nobody can hold it: `self` is owned).
    pub fn into_inner(self) -> T {
        // Safety: move the data out, then free the handle (unlocked: no guard can exist).
        let value = unsafe { std::ptr::read(self.data.get()) };
        let raw = self.raw;
        std::mem::forget(self);
        // Safety: our handle; a guard forgotten earlier keeps it locked (EBUSY): leaked then.
        let _ = unsafe { sys::surelock_amutex_free(raw.as_ptr()) };
        value
    }
}

impl<T: ?Sized> AsyncMutex<T> {
    /// Waits for the lock, in strict FIFO order with every other locker (C, Python, other
    /// tasks). Dropping the future before it resolves withdraws it (see the module docs).
    pub fn lock(&self) -> AsyncMutexLockFuture<'_, T> {
        AsyncMutexLockFuture { lock: self,
                               inner: Acquire::new(Target::AMutex(self.raw), &self.queued_lately) }
    }

    /// The lock if it is free and nobody is queued: `Err(EBUSY)`.
    pub fn try_lock(&self) -> Result<AsyncMutexGuard<'_, T>, Error> {
        // Safety: a live handle.
        check(unsafe { sys::surelock_amutex_trylock(self.raw.as_ptr()) })?;
        Ok(AsyncMutexGuard { lock: self, _marker: PhantomData })
    }

    /// Blocks the thread (never call it from async code) until the lock is handed over.
    pub fn blocking_lock(&self) -> AsyncMutexGuard<'_, T> {
        // Safety: a live handle; only EINVAL (NULL) can fail.
        let rc = unsafe { sys::surelock_amutex_lock(self.raw.as_ptr()) };
        assert_eq!(rc, 0, "surelock_amutex_lock on a live mutex");
        AsyncMutexGuard { lock: self, _marker: PhantomData }
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: ?Sized> Drop for AsyncMutex<T> {
    fn drop(&mut self) {
        // Guards and futures borrow it; a forgotten guard keeps it locked (EBUSY): leaked.
        // Safety: our handle.
        let _ = unsafe { sys::surelock_amutex_free(self.raw.as_ptr()) };
    }
}

impl<T: Default> Default for AsyncMutex<T> {
    fn default() -> Self {
        AsyncMutex::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for AsyncMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMutex").finish_non_exhaustive()
    }
}

impl<'a, T: ?Sized> Future for AsyncMutexLockFuture<'a, T> {
    type Output = AsyncMutexGuard<'a, T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Safety: `inner` is structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let lock = this.lock;
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        inner.poll(cx).map(|r| match r {
            Ok(()) => AsyncMutexGuard { lock, _marker: PhantomData },
            // An amutex cannot be closed, and the arguments are valid: the one failure left
            // is ENOMEM for the node a queued waiter needs, which aborts as `Box::new` does
            // (the crate's out-of-memory policy; `lock()` has tokio's infallible shape).
            Err(e) if e.code() == errno::ENOMEM => std::alloc::handle_alloc_error(
                std::alloc::Layout::new::<[usize; 4]>(),
            ),
            Err(e) => panic!("surelock_amutex_lock_async on a live mutex: {}", e),
        })
    }
}

impl<T: ?Sized> fmt::Debug for AsyncMutexLockFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMutexLockFuture").finish_non_exhaustive()
    }
}

impl<T: ?Sized> Deref for AsyncMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Safety: we hold the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for AsyncMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // Safety: we hold the lock, exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for AsyncMutexGuard<'_, T> {
    fn drop(&mut self) {
        // Safety: we hold it; any thread may unlock. Queued waiters are handed the lock here.
        let rc = unsafe { sys::surelock_amutex_unlock(self.lock.raw.as_ptr()) };
        debug_assert_eq!(rc, 0, "surelock_amutex_unlock");
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for AsyncMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
