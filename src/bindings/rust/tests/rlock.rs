//! ReentrantMutex: the per-thread guard of a thread-unsafe C library (per-thread-mutex's
//! scenario) and backtrace's process-wide named guard.
#![allow(unknown_lints)]
#![allow(unexpected_cfgs)] // surelock_test_unsafe_lib, set by build.rs
mod common;

use common::{on_thread, unique, watchdog, LONG, SHORT};
use std::cell::Cell;
use std::sync::Arc;
use surelock::errno::*;
use surelock::{sys, ReentrantMutex};

#[cfg(surelock_test_unsafe_lib)]
mod c_library {
    use std::os::raw::{c_long, c_void};
    // tests/support/unsafe_lib.c, built by meson as a static library: global state with no
    // locking of its own, callbacks that may re-enter it, and a detector that counts any
    // entry while another thread is inside.
    #[link(name = "surelock_test_unsafe", kind = "static")]
    extern "C" {
        pub fn unsafe_reset();
        pub fn unsafe_increment();
        pub fn unsafe_visit(cb: extern "C" fn(*mut c_void), ctx: *mut c_void);
        pub fn unsafe_count() -> c_long;
        pub fn unsafe_violations() -> c_long;
        pub fn unsafe_reentries() -> c_long;
    }
    pub const SONAME: &str = "libunsafe.so.1"; // UNSAFE_LIB_SONAME
}

#[cfg(surelock_test_unsafe_lib)]
#[test]
fn c_library_callbacks_reenter_the_global_guard_and_threads_never_overlap_inside() {
    use c_library::*;
    use std::os::raw::c_void;
    watchdog();
    extern "C" fn callback(ctx: *mut c_void) {
        // Called by the C library, inside it, on the thread that holds the guard: re-enter
        // the library under the same (named) guard, as a real callback would.
        let outer = unsafe { &*(ctx as *const ReentrantMutex<()>) };
        let guard = ReentrantMutex::global(SONAME).unwrap();
        assert!(guard.same_lock(outer));
        let _inner = guard.lock().unwrap();
        assert_eq!(guard.depth(), 2);
        unsafe { unsafe_increment() };
    }
    const THREADS: usize = 4;
    const ROUNDS: usize = 250;
    unsafe { unsafe_reset() };
    let threads: Vec<_> = (0..THREADS).map(|_| std::thread::spawn(|| {
        let guard = ReentrantMutex::global(SONAME).unwrap();
        for i in 0..ROUNDS {
            let _held = guard.lock().unwrap();
            if i % 2 == 0 {
                unsafe { unsafe_visit(callback, &guard as *const _ as *mut c_void) };
            } else {
                unsafe { unsafe_increment() };
                unsafe { unsafe_visit(callback, &guard as *const _ as *mut c_void) };
            }
        }
    })).collect();
    for t in threads {
        t.join().unwrap();
    }
    let expected = THREADS * ROUNDS * 2 + THREADS * ROUNDS / 2;
    assert_eq!(unsafe { unsafe_violations() }, 0, "two threads were inside the library at once");
    assert_eq!(unsafe { unsafe_count() } as usize, expected, "updates were lost");
    assert_eq!(unsafe { unsafe_reentries() } as usize, THREADS * ROUNDS, "one re-entry per visit");
}

#[test]
fn global_guard_is_one_lock_per_name_shared_with_c_callers() {
    watchdog();
    let name = unique("libfoo.so.3:rust");
    let a = ReentrantMutex::global(&name).unwrap();
    let b = ReentrantMutex::global(name.as_bytes()).unwrap();
    assert!(a.same_lock(&b) && a.is_global());
    // What a C caller (or Python, or a plugin) gets for the name is the same lock.
    let cname = std::ffi::CString::new(name.clone()).unwrap();
    let mut raw = std::ptr::null_mut();
    assert_eq!(unsafe { sys::surelock_rlock_global(cname.as_ptr(), &mut raw) }, 0);
    assert_eq!(raw, a.as_raw());
    // Held by "C" on this thread: Rust code on another thread cannot take it.
    assert_eq!(unsafe { sys::surelock_rlock_lock(raw) }, 0);
    let n = name.clone();
    let busy = on_thread(LONG, move || {
        let g = ReentrantMutex::global(n).unwrap();
        (g.try_lock().err().map(|e| e.code()), g.lock_timeout(SHORT).err().map(|e| e.code()))
    });
    assert_eq!(busy, (Some(EBUSY), Some(ETIMEDOUT)));
    {
        let _rust = b.try_lock().unwrap(); // re-entry by the holder, as from a callback
        assert_eq!(a.depth(), 2);
    }
    assert_eq!(unsafe { sys::surelock_rlock_unlock(raw) }, 0);
    assert_eq!(a.depth(), 0);
    // Dropping a global handle frees nothing: the name still names a working lock.
    drop(a);
    drop(b);
    let c = ReentrantMutex::global(&name).unwrap();
    assert_eq!(c.as_raw(), raw);
    assert!(c.into_inner().is_ok());
    assert!(!on_thread(LONG, move || ReentrantMutex::global(name).unwrap().lock().unwrap().owner_died()));
}

#[test]
fn bad_global_names_are_errors_never_panics() {
    watchdog();
    let nul = ReentrantMutex::global("lib\0x.so").unwrap_err();
    assert_eq!(nul.code(), EINVAL);
    assert!(nul.message().contains("NUL byte at offset 3"), "{}", nul);
    let empty = ReentrantMutex::global("").unwrap_err();
    assert_eq!(empty.code(), EINVAL);
    assert!(!empty.message().is_empty());
    let long = ReentrantMutex::global(vec![b'x'; 256]).unwrap_err();
    assert_eq!(long.code(), EINVAL);
    assert!(!long.message().is_empty());
    // The limits: 255 bytes, and any bytes but NUL.
    ReentrantMutex::global(vec![b'y'; 255]).unwrap();
    ReentrantMutex::global([0xffu8, 0xfe, 0x01]).unwrap();
    // The error converts into io::Error keeping errno kind and message.
    let io: std::io::Error = empty.clone().into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    let inner = io.get_ref().unwrap().downcast_ref::<surelock::Error>().unwrap();
    assert_eq!(inner, &empty);
    assert!(format!("{}", empty).contains(empty.message()));
}

#[test]
fn reentrant_mutex_serialises_threads_and_lets_the_holder_reenter() {
    watchdog();
    let m = Arc::new(ReentrantMutex::new(Cell::new(0u64)));
    let threads: Vec<_> = (0..4).map(|_| {
        let m = m.clone();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                let outer = m.lock().unwrap();
                let inner = m.lock().unwrap(); // re-entry: both guards give &Cell
                assert_eq!(m.depth(), 2);
                let v = outer.get();
                std::thread::yield_now();
                inner.set(v + 1);
            }
        })
    }).collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.lock().unwrap().get(), 4000);
    let m = Arc::try_unwrap(m).unwrap();
    assert_eq!(m.into_inner().ok().unwrap().get(), 4000);
}

#[test]
fn other_threads_get_busy_and_timed_out_while_it_is_held() {
    watchdog();
    let m = Arc::new(ReentrantMutex::new(7));
    let held = m.lock().unwrap();
    assert_eq!(*held, 7);
    let m2 = m.clone();
    let seen = on_thread(LONG, move || {
        let busy = m2.try_lock().unwrap_err();
        let late = m2.lock_timeout(SHORT).unwrap_err();
        (busy.code(), late.code(), m2.depth(), busy.message().is_empty())
    });
    assert_eq!(seen, (EBUSY, ETIMEDOUT, 0, false));
    drop(held);
    let m2 = m.clone();
    assert_eq!(on_thread(LONG, move || *m2.lock_timeout(LONG).unwrap()), 7);
}

#[test]
fn a_thread_that_exits_holding_it_is_reported_to_the_next_locker() {
    watchdog();
    let m = Arc::new(ReentrantMutex::new(()));
    let m2 = m.clone();
    on_thread(LONG, move || std::mem::forget(m2.lock().unwrap()));
    let g = m.lock_timeout(LONG).unwrap();
    assert!(g.owner_died());
    assert_eq!(m.depth(), 1, "taken at depth 1");
    drop(g);
    assert!(!m.try_lock().unwrap().owner_died());
}

#[test]
fn a_lock_held_by_a_forgotten_guard_is_not_freed() {
    watchdog();
    let m = ReentrantMutex::new(String::from("kept"));
    std::mem::forget(m.lock().unwrap());
    let m = m.into_inner().unwrap_err(); // EBUSY from free: given back, not freed
    assert_eq!(m.depth(), 1);
    assert_eq!(unsafe { sys::surelock_rlock_unlock(m.as_raw()) }, 0);
    assert_eq!(m.into_inner().ok().unwrap(), "kept");
}
