//! Safe Rust guards over `libsurelock.so.1`, the one shared implementation of surelock's
//! locks (a named guard taken here is the same lock C, Python and plugins take).
//!
//! | type | replaces | owned by |
//! |---|---|---|
//! | [`ReentrantMutex`] (+ [`ReentrantMutex::global`]) | a per-thread reentrant guard around a thread-unsafe C library, backtrace's global lock | the OS thread: guard `!Send` |
//! | [`Mutex`], [`RwLock`], [`Condvar`] | `std::sync`, but error-checking (re-locking is `Err(EDEADLK)`, never a hang) | the OS thread: guards `!Send` |
//! | [`LockCollection`] | HappyLock's collections: all-or-nothing, never deadlocks | the OS thread: guard `!Send` |
//! | [`IpcMutex`] | a robust cross-process mutex in a file, with shared payload | the OS thread: guard `!Send` |
//! | [`AsyncMutex`], [`Semaphore`] | `tokio::sync::{Mutex, Semaphore}`, strict FIFO, any runtime | nobody: guards `Send` |
//!
//! Every fallible call returns [`Error`] (errno + the library's message). `EOWNERDEAD` is not
//! an error: the lock was acquired and the guard's `owner_died()` is `true`.
//!
//! Decisions where the C contract leaves the binding a choice:
//! - `new` constructors abort on out-of-memory like `Box::new`; `try_new` returns `Err(ENOMEM)`.
//!   `Semaphore::new` panics beyond [`Semaphore::MAX_PERMITS`] as tokio's does (`try_new`:
//!   `Err(EINVAL)`). Permit counts are `u64`; a request for 0 permits is `Err(EINVAL)` (the
//!   contract's rule), while `add_permits(0)` does nothing (tokio's).
//! - No poisoning: a panic while holding unlocks on unwind. A thread that exits holding a
//!   thread-owned lock (a forgotten guard) is reported to the next holder by `owner_died()`.
//! - A lock that cannot be freed when dropped (held through a forgotten guard, or still in a
//!   collection whose guard was forgotten) is leaked, never freed while held.
//! - `IpcMutex` guards never nest on one thread, even on a recursive file: a second guard
//!   would alias the payload, so it is `Err(EDEADLK)`.
//! - `LockCollection` is `Send` but not `Sync` (a C group is used by one thread at a time); it
//!   takes `Mutex`, `RwLock` (exclusive, or shared through [`Read`]) and `ReentrantMutex`
//!   members. `IpcMutex` members (which the C group supports) are not offered yet.
//! - `AsyncMutex::lock().await` cannot fail (an amutex is never closed). A queued future
//!   shares a small block with the C callback (freed by whichever finishes last, reused
//!   through a one-slot per-thread spare); the uncontended path allocates nothing.
//!
//! Guards of thread-owned locks cannot leave their thread:
//! ```compile_fail,E0277
//! let m = surelock::Mutex::new(0);
//! let g = m.lock().unwrap();
//! std::thread::scope(|s| { s.spawn(move || drop(g)); }); // MutexGuard is !Send
//! ```
//! ```compile_fail,E0277
//! let m = surelock::ReentrantMutex::new(0);
//! let g = m.lock().unwrap();
//! std::thread::scope(|s| { s.spawn(move || drop(g)); }); // ReentrantMutexGuard is !Send
//! ```
//! ```compile_fail,E0277
//! let l = surelock::RwLock::new(0);
//! let g = l.read().unwrap();
//! std::thread::scope(|s| { s.spawn(move || drop(g)); }); // RwLockReadGuard is !Send
//! ```
//! ```compile_fail,E0277
//! let l = surelock::RwLock::new(0);
//! let g = l.write().unwrap();
//! std::thread::scope(|s| { s.spawn(move || drop(g)); }); // RwLockWriteGuard is !Send
//! ```
//! ```compile_fail,E0277
//! let ipc = surelock::IpcMutex::open("/tmp/x.lock", &surelock::IpcOptions::new()).unwrap();
//! let g = ipc.lock().unwrap();
//! std::thread::scope(|s| { s.spawn(move || drop(g)); }); // IpcGuard is !Send
//! ```
//! ```compile_fail,E0277
//! let (a, b) = (surelock::Mutex::new(0), surelock::Mutex::new(1));
//! let c = surelock::LockCollection::try_new((&a, &b)).unwrap();
//! let g = c.lock().unwrap();
//! std::thread::scope(|s| { s.spawn(move || drop(g)); }); // LockCollectionGuard is !Send
//! ```
//! ```compile_fail,E0277
//! let (a, b) = (surelock::Mutex::new(0), surelock::Mutex::new(1));
//! let c = surelock::LockCollection::try_new((&a, &b)).unwrap();
//! std::thread::scope(|s| { s.spawn(|| c.lock().map(drop)); }); // a collection is !Sync
//! ```
//! A guard cannot outlive its lock:
//! ```compile_fail,E0597
//! let g = { let m = surelock::Mutex::new(0); m.lock().unwrap() };
//! ```
//! while the async guards may cross threads and be held across `.await`:
//! ```
//! fn send<T: Send>(_: T) {}
//! let m = surelock::AsyncMutex::new(0);
//! send(m.try_lock().unwrap());
//! let s = surelock::Semaphore::new(1);
//! send(s.try_acquire().unwrap());
//! send(m.lock()); // the future too
//! ```
#![allow(unknown_lints)]
#![allow(unexpected_cfgs)] // surelock_has = "...", set by build.rs
#![deny(unsafe_op_in_unsafe_fn)]

pub mod sys;

mod acquire;
mod collection;
mod error;
mod ipc;
mod mutex;
mod rlock;
mod sem;

pub use collection::{LockCollection, LockCollectionGuard, Lockable, Read};
pub use error::{errno, Error};
pub use ipc::{IpcGuard, IpcMutex, IpcOptions};
pub use mutex::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
                WaitTimeoutResult};
pub use rlock::{ReentrantMutex, ReentrantMutexGuard};
pub use sem::{AsyncMutex, AsyncMutexGuard, AsyncMutexLockFuture, Semaphore, SemaphoreAcquire,
              SemaphorePermit};

use std::os::raw::c_int;
use std::ptr::NonNull;
use std::time::Duration;

/// The version of the loaded library, e.g. `"1.1.0"`.
pub fn version() -> &'static str {
    // Safety: a static NUL-terminated ASCII string, never NULL.
    unsafe { std::ffi::CStr::from_ptr(sys::surelock_version()) }.to_str().unwrap_or("")
}

/// Relative timeout in nanoseconds; anything beyond u64 is `SURELOCK_FOREVER`.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(sys::SURELOCK_FOREVER)
}

/// An acquire's result: `Ok(owner_died)`; `EOWNERDEAD` is success.
#[inline]
pub(crate) fn acquired(rc: c_int) -> Result<bool, Error> {
    match rc {
        0 => Ok(false),
        errno::EOWNERDEAD => Ok(true),
        rc => Err(Error::last(rc)),
    }
}

/// Calls a `surelock_*_new(&out)`; `Err` only for ENOMEM.
pub(crate) fn create<H>(new: unsafe extern "C" fn(*mut *mut H) -> c_int)
                        -> Result<NonNull<H>, Error> {
    let mut out = std::ptr::null_mut();
    // Safety: `out` is a valid out-pointer.
    error::check(unsafe { new(&mut out) })?;
    Ok(NonNull::new(out).expect("surelock returned 0 and a NULL handle"))
}

/// As [`create`], for the infallible constructors: out of memory aborts, as `Box::new` does.
pub(crate) fn create_or_abort<H>(new: unsafe extern "C" fn(*mut *mut H) -> c_int) -> NonNull<H> {
    match create(new) {
        Ok(h) => h,
        Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u64; 8]>()),
    }
}

/// Marks a guard `!Send` (and `!Sync` unless it says otherwise): the lock belongs to the OS
/// thread that took it.
pub(crate) type NotSend = std::marker::PhantomData<*const ()>;
