//! The C ABI of `libsurelock.so.1`, declared exactly as in `include/surelock.h`.
//!
//! Everything here is `unsafe` to call and follows the header's contract; the safe types of
//! this crate are built on it. `tests/header.rs` checks that every function the header
//! declares is declared here once, with the same number of parameters, and nothing else is.
//!
//! Functions that a newer header adds are declared under
//! `#[cfg(surelock_has = "surelock_<name>")]`: `build.rs` sets that cfg for every function
//! the header it builds against declares, so this file compiles (and the check above passes)
//! against headers with and without them.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uint, c_void};

macro_rules! opaque {
    ($($name:ident),*) => {$(
        /// An opaque library object; only ever used behind a pointer.
        #[repr(C)]
        pub struct $name {
            _opaque: [u8; 0],
            // Not Send, Sync or Unpin by itself: the safe wrappers decide.
            _marker: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
        }
    )*};
}
opaque!(surelock_rlock, surelock_mutex, surelock_rwlock, surelock_cond, surelock_group,
        surelock_ipc, surelock_sem, surelock_amutex);

pub const SURELOCK_VERSION_MAJOR: u32 = 1;
pub const SURELOCK_VERSION_MINOR: u32 = 1;
pub const SURELOCK_VERSION_PATCH: u32 = 0;
pub const SURELOCK_FOREVER: u64 = u64::MAX;
pub const SURELOCK_EXCLUSIVE: c_int = 0;
pub const SURELOCK_SHARED: c_int = 1;
pub const SURELOCK_IPC_NOCREATE: u32 = 0x1;
pub const SURELOCK_IPC_RECURSIVE: u32 = 0x2;
pub const SURELOCK_IPC_ANY_OWNER: u32 = 0x4;
pub const SURELOCK_WAITER_SIZE: usize = 64;
pub const SURELOCK_SEM_MAX: u64 = 0x1FFF_FFFF_FFFF_FFFF;

/// `surelock_ipc_options`; make one with [`surelock_ipc_options_init`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct surelock_ipc_options {
    pub size: usize,
    pub flags: u32,
    pub mode: u32,
    pub payload_size: usize,
}

/// The header's `static inline surelock_ipc_options_init`: size and the defaults.
pub fn surelock_ipc_options_init() -> surelock_ipc_options {
    surelock_ipc_options {
        size: core::mem::size_of::<surelock_ipc_options>(),
        flags: 0,
        mode: 0o600,
        payload_size: 0,
    }
}

/// `surelock_waiter`: caller-owned, 16-byte aligned, valid and unmoved while queued.
#[repr(C, align(16))]
pub struct surelock_waiter {
    pub opaque: [u8; SURELOCK_WAITER_SIZE],
}

pub type surelock_wake_fn = unsafe extern "C" fn(ctx: *mut c_void, status: c_int);

#[link(name = "surelock")]
extern "C" {
    pub fn surelock_version() -> *const c_char;
    pub fn surelock_errmsg() -> *const c_char;

    pub fn surelock_rlock_new(out: *mut *mut surelock_rlock) -> c_int;
    pub fn surelock_rlock_free(l: *mut surelock_rlock) -> c_int;
    pub fn surelock_rlock_global(name: *const c_char, out: *mut *mut surelock_rlock) -> c_int;
    pub fn surelock_rlock_lock(l: *mut surelock_rlock) -> c_int;
    pub fn surelock_rlock_trylock(l: *mut surelock_rlock) -> c_int;
    pub fn surelock_rlock_timedlock(l: *mut surelock_rlock, timeout_ns: u64) -> c_int;
    pub fn surelock_rlock_unlock(l: *mut surelock_rlock) -> c_int;
    pub fn surelock_rlock_depth(l: *const surelock_rlock) -> c_uint;

    pub fn surelock_mutex_new(out: *mut *mut surelock_mutex) -> c_int;
    pub fn surelock_mutex_free(m: *mut surelock_mutex) -> c_int;
    pub fn surelock_mutex_lock(m: *mut surelock_mutex) -> c_int;
    pub fn surelock_mutex_trylock(m: *mut surelock_mutex) -> c_int;
    pub fn surelock_mutex_timedlock(m: *mut surelock_mutex, timeout_ns: u64) -> c_int;
    pub fn surelock_mutex_unlock(m: *mut surelock_mutex) -> c_int;

    pub fn surelock_rwlock_new(out: *mut *mut surelock_rwlock) -> c_int;
    pub fn surelock_rwlock_free(l: *mut surelock_rwlock) -> c_int;
    pub fn surelock_rwlock_rdlock(l: *mut surelock_rwlock) -> c_int;
    pub fn surelock_rwlock_tryrdlock(l: *mut surelock_rwlock) -> c_int;
    pub fn surelock_rwlock_timedrdlock(l: *mut surelock_rwlock, timeout_ns: u64) -> c_int;
    pub fn surelock_rwlock_wrlock(l: *mut surelock_rwlock) -> c_int;
    pub fn surelock_rwlock_trywrlock(l: *mut surelock_rwlock) -> c_int;
    pub fn surelock_rwlock_timedwrlock(l: *mut surelock_rwlock, timeout_ns: u64) -> c_int;
    pub fn surelock_rwlock_unlock(l: *mut surelock_rwlock) -> c_int;

    pub fn surelock_cond_new(out: *mut *mut surelock_cond) -> c_int;
    pub fn surelock_cond_free(c: *mut surelock_cond) -> c_int;
    pub fn surelock_cond_wait(c: *mut surelock_cond, m: *mut surelock_mutex) -> c_int;
    pub fn surelock_cond_timedwait(c: *mut surelock_cond, m: *mut surelock_mutex,
                                   timeout_ns: u64) -> c_int;
    pub fn surelock_cond_signal(c: *mut surelock_cond) -> c_int;
    pub fn surelock_cond_broadcast(c: *mut surelock_cond) -> c_int;

    pub fn surelock_group_new(out: *mut *mut surelock_group) -> c_int;
    pub fn surelock_group_free(g: *mut surelock_group) -> c_int;
    pub fn surelock_group_add_mutex(g: *mut surelock_group, m: *mut surelock_mutex) -> c_int;
    pub fn surelock_group_add_rwlock(g: *mut surelock_group, l: *mut surelock_rwlock,
                                     mode: c_int) -> c_int;
    pub fn surelock_group_add_rlock(g: *mut surelock_group, l: *mut surelock_rlock) -> c_int;
    pub fn surelock_group_add_ipc(g: *mut surelock_group, m: *mut surelock_ipc) -> c_int;
    pub fn surelock_group_clear(g: *mut surelock_group) -> c_int;
    pub fn surelock_group_size(g: *const surelock_group) -> usize;
    pub fn surelock_group_lock(g: *mut surelock_group) -> c_int;
    pub fn surelock_group_trylock(g: *mut surelock_group) -> c_int;
    pub fn surelock_group_timedlock(g: *mut surelock_group, timeout_ns: u64) -> c_int;
    pub fn surelock_group_unlock(g: *mut surelock_group) -> c_int;

    pub fn surelock_ipc_open(path: *const c_char, o: *const surelock_ipc_options,
                             out: *mut *mut surelock_ipc) -> c_int;
    pub fn surelock_ipc_close(m: *mut surelock_ipc) -> c_int;
    pub fn surelock_ipc_lock(m: *mut surelock_ipc) -> c_int;
    pub fn surelock_ipc_trylock(m: *mut surelock_ipc) -> c_int;
    pub fn surelock_ipc_timedlock(m: *mut surelock_ipc, timeout_ns: u64) -> c_int;
    pub fn surelock_ipc_consistent(m: *mut surelock_ipc) -> c_int;
    pub fn surelock_ipc_needs_recovery(m: *const surelock_ipc) -> c_int;
    pub fn surelock_ipc_unlock(m: *mut surelock_ipc) -> c_int;
    pub fn surelock_ipc_payload(m: *mut surelock_ipc, size: *mut usize) -> *mut c_void;
    pub fn surelock_ipc_unlink(path: *const c_char) -> c_int;

    pub fn surelock_sem_new(permits: u64, out: *mut *mut surelock_sem) -> c_int;
    pub fn surelock_sem_free(s: *mut surelock_sem) -> c_int;
    pub fn surelock_sem_acquire(s: *mut surelock_sem, n: u64) -> c_int;
    pub fn surelock_sem_tryacquire(s: *mut surelock_sem, n: u64) -> c_int;
    pub fn surelock_sem_timedacquire(s: *mut surelock_sem, n: u64, timeout_ns: u64) -> c_int;
    pub fn surelock_sem_acquire_async(s: *mut surelock_sem, n: u64, w: *mut surelock_waiter,
                                      f: surelock_wake_fn, ctx: *mut c_void) -> c_int;
    pub fn surelock_sem_cancel(s: *mut surelock_sem, w: *mut surelock_waiter) -> c_int;
    pub fn surelock_sem_release(s: *mut surelock_sem, n: u64) -> c_int;
    pub fn surelock_sem_shutdown(s: *mut surelock_sem) -> c_int;
    pub fn surelock_sem_available(s: *const surelock_sem) -> u64;

    pub fn surelock_amutex_new(out: *mut *mut surelock_amutex) -> c_int;
    pub fn surelock_amutex_free(m: *mut surelock_amutex) -> c_int;
    pub fn surelock_amutex_lock(m: *mut surelock_amutex) -> c_int;
    pub fn surelock_amutex_trylock(m: *mut surelock_amutex) -> c_int;
    pub fn surelock_amutex_timedlock(m: *mut surelock_amutex, timeout_ns: u64) -> c_int;
    pub fn surelock_amutex_lock_async(m: *mut surelock_amutex, w: *mut surelock_waiter,
                                      f: surelock_wake_fn, ctx: *mut c_void) -> c_int;
    pub fn surelock_amutex_cancel(m: *mut surelock_amutex, w: *mut surelock_waiter) -> c_int;
    pub fn surelock_amutex_unlock(m: *mut surelock_amutex) -> c_int;

    // Version node after SURELOCK_1.0 (declared when the header has them; see above).
    #[cfg(surelock_has = "surelock_set_deadlock_detection")]
    pub fn surelock_set_deadlock_detection(on: c_int) -> c_int;
    #[cfg(surelock_has = "surelock_dump_waits")]
    pub fn surelock_dump_waits(fd: c_int) -> c_int;
}
