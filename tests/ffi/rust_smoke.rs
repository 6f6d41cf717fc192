//! rust_smoke: libsurelock from Rust through `extern "C"` alone — no cargo, no crates.
//!
//!     rustc --edition 2021 -O rust_smoke.rs -L native=<dir of libsurelock.so> \
//!           -C link-arg=-Wl,-rpath,<that dir> -o rust_smoke && ./rust_smoke
//!
//! What it shows a Rust binding author: opaque handle types, RAII guards whose `Drop` unlocks
//! (rlock and ipc guards are `!Send`: those locks belong to the OS thread that took them),
//! EOWNERDEAD as success-with-warning, and a `Future` over `surelock_amutex_lock_async` whose C
//! callback wakes a `std::task::Waker` (a minimal block_on and a small FIFO executor below).
//! Output is TAP; every wait is bounded, so a broken lock fails the run instead of hanging it.
//! Written for Debian's rustc (1.63) and later.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

// ---- The C ABI (include/surelock.h) ---------------------------------------------------------

#[repr(C)]
pub struct surelock_rlock {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct surelock_ipc {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct surelock_amutex {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct surelock_ipc_options {
    size: usize,
    flags: u32,
    mode: u32,
    payload_size: usize,
}

/// `surelock_waiter`: 64 caller-owned bytes, 16-byte aligned, unmoved while queued.
#[repr(C, align(16))]
pub struct surelock_waiter {
    opaque: [u8; 64],
}

type WakeFn = unsafe extern "C" fn(ctx: *mut c_void, status: c_int);

#[link(name = "surelock")]
extern "C" {
    fn surelock_version() -> *const c_char;
    fn surelock_errmsg() -> *const c_char;

    fn surelock_rlock_global(name: *const c_char, out: *mut *mut surelock_rlock) -> c_int;
    fn surelock_rlock_trylock(l: *mut surelock_rlock) -> c_int;
    fn surelock_rlock_timedlock(l: *mut surelock_rlock, timeout_ns: u64) -> c_int;
    fn surelock_rlock_unlock(l: *mut surelock_rlock) -> c_int;
    fn surelock_rlock_depth(l: *const surelock_rlock) -> c_uint;

    fn surelock_ipc_open(path: *const c_char, o: *const surelock_ipc_options,
                         out: *mut *mut surelock_ipc) -> c_int;
    fn surelock_ipc_close(m: *mut surelock_ipc) -> c_int;
    fn surelock_ipc_trylock(m: *mut surelock_ipc) -> c_int;
    fn surelock_ipc_timedlock(m: *mut surelock_ipc, timeout_ns: u64) -> c_int;
    fn surelock_ipc_consistent(m: *mut surelock_ipc) -> c_int;
    fn surelock_ipc_needs_recovery(m: *const surelock_ipc) -> c_int;
    fn surelock_ipc_unlock(m: *mut surelock_ipc) -> c_int;
    fn surelock_ipc_payload(m: *mut surelock_ipc, size: *mut usize) -> *mut c_void;
    fn surelock_ipc_unlink(path: *const c_char) -> c_int;

    fn surelock_amutex_new(out: *mut *mut surelock_amutex) -> c_int;
    fn surelock_amutex_free(m: *mut surelock_amutex) -> c_int;
    fn surelock_amutex_trylock(m: *mut surelock_amutex) -> c_int;
    fn surelock_amutex_lock_async(m: *mut surelock_amutex, w: *mut surelock_waiter,
                                  f: WakeFn, ctx: *mut c_void) -> c_int;
    fn surelock_amutex_cancel(m: *mut surelock_amutex, w: *mut surelock_waiter) -> c_int;
    fn surelock_amutex_unlock(m: *mut surelock_amutex) -> c_int;
}

// Linux errno values (the same on every Linux architecture this library supports).
const EPERM: c_int = 1;
const EBUSY: c_int = 16;
const EINVAL: c_int = 22;
const ETIMEDOUT: c_int = 110;
const EALREADY: c_int = 114;
const EINPROGRESS: c_int = 115;
const ECANCELED: c_int = 125;
const EOWNERDEAD: c_int = 130;

// ---- A small safe layer ------------------------------------------------------------------

#[derive(Debug, PartialEq)]
pub struct Error {
    pub code: c_int,
    pub message: String,
}

fn error(code: c_int) -> Error {
    // errmsg is thread-local and valid until this thread's next surelock call: copy it now.
    let message = unsafe { CStr::from_ptr(surelock_errmsg()) }.to_string_lossy().into_owned();
    Error { code, message }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX) // u64::MAX is SURELOCK_FOREVER
}

/// Marks a guard `!Send`: rlock and ipc holds belong to the OS thread that took them.
type NotSend = PhantomData<*const ()>;

/// A process-wide named reentrant guard (`surelock_rlock_global`): never freed, so `'static`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RLock(*mut surelock_rlock);
unsafe impl Send for RLock {}
unsafe impl Sync for RLock {}

pub struct RLockGuard {
    lock: RLock,
    /// The previous owner thread exited holding it (EOWNERDEAD): we hold it all the same.
    pub owner_died: bool,
    _not_send: NotSend,
}

impl RLock {
    pub fn global(name: &str) -> Result<RLock, Error> {
        let name = CString::new(name).map_err(|_| Error { code: EINVAL, message: "NUL".into() })?;
        let mut out = std::ptr::null_mut();
        match unsafe { surelock_rlock_global(name.as_ptr(), &mut out) } {
            0 => Ok(RLock(out)),
            rc => Err(error(rc)),
        }
    }
    fn guard(self, rc: c_int) -> Result<RLockGuard, Error> {
        match rc {
            0 | EOWNERDEAD => Ok(RLockGuard { lock: self, owner_died: rc == EOWNERDEAD,
                                              _not_send: PhantomData }),
            rc => Err(error(rc)),
        }
    }
    pub fn try_lock(self) -> Result<RLockGuard, Error> {
        self.guard(unsafe { surelock_rlock_trylock(self.0) })
    }
    pub fn lock_timeout(self, timeout: Duration) -> Result<RLockGuard, Error> {
        self.guard(unsafe { surelock_rlock_timedlock(self.0, nanos(timeout)) })
    }
    /// The calling thread's depth.
    pub fn depth(self) -> u32 {
        unsafe { surelock_rlock_depth(self.0) }
    }
}

impl Drop for RLockGuard {
    fn drop(&mut self) {
        let rc = unsafe { surelock_rlock_unlock(self.lock.0) };
        debug_assert_eq!(rc, 0);
    }
}

/// A handle on a robust cross-process lock file. Dropping it closes the handle; a guard
/// borrows it, so a held lock can never be closed (which the library would refuse: EBUSY).
pub struct IpcLock(*mut surelock_ipc);
unsafe impl Send for IpcLock {}
unsafe impl Sync for IpcLock {}

pub struct IpcGuard<'a> {
    lock: &'a IpcLock,
    _not_send: NotSend,
}

impl IpcLock {
    pub fn open(path: &str, payload_size: usize) -> Result<IpcLock, Error> {
        let cpath = CString::new(path).map_err(|_| Error { code: EINVAL, message: "NUL".into() })?;
        let o = surelock_ipc_options { size: std::mem::size_of::<surelock_ipc_options>(),
                                       flags: 0, mode: 0o600, payload_size };
        let mut out = std::ptr::null_mut();
        match unsafe { surelock_ipc_open(cpath.as_ptr(), &o, &mut out) } {
            0 => Ok(IpcLock(out)),
            rc => Err(error(rc)),
        }
    }
    fn guard(&self, rc: c_int) -> Result<IpcGuard<'_>, Error> {
        match rc {
            0 | EOWNERDEAD => Ok(IpcGuard { lock: self, _not_send: PhantomData }),
            rc => Err(error(rc)),
        }
    }
    pub fn try_lock(&self) -> Result<IpcGuard<'_>, Error> {
        self.guard(unsafe { surelock_ipc_trylock(self.0) })
    }
    pub fn lock_timeout(&self, timeout: Duration) -> Result<IpcGuard<'_>, Error> {
        self.guard(unsafe { surelock_ipc_timedlock(self.0, nanos(timeout)) })
    }
    /// The shared bytes mapped with the lock.
    pub fn payload(&self) -> &[u8] {
        let mut size = 0usize;
        let p = unsafe { surelock_ipc_payload(self.0, &mut size) };
        if p.is_null() { &[] } else { unsafe { std::slice::from_raw_parts(p as *const u8, size) } }
    }
}

impl Drop for IpcLock {
    fn drop(&mut self) {
        let rc = unsafe { surelock_ipc_close(self.0) };
        debug_assert_eq!(rc, 0);
    }
}

impl<'a> IpcGuard<'a> {
    /// 1 between EOWNERDEAD and `mark_consistent`: the protected state needs repair.
    pub fn needs_recovery(&self) -> bool {
        unsafe { surelock_ipc_needs_recovery(self.lock.0) == 1 }
    }
    pub fn mark_consistent(&self) -> Result<(), Error> {
        match unsafe { surelock_ipc_consistent(self.lock.0) } { 0 => Ok(()), rc => Err(error(rc)) }
    }
    /// The payload, writable while the lock is held.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let mut size = 0usize;
        let p = unsafe { surelock_ipc_payload(self.lock.0, &mut size) };
        if p.is_null() { &mut [] } else { unsafe { std::slice::from_raw_parts_mut(p as *mut u8, size) } }
    }
}

impl<'a> Drop for IpcGuard<'a> {
    fn drop(&mut self) {
        let rc = unsafe { surelock_ipc_unlock(self.lock.0) };
        debug_assert_eq!(rc, 0);
    }
}

/// The async FIFO mutex. Not tied to a thread, so its guard is `Send`.
pub struct AMutex(*mut surelock_amutex);
unsafe impl Send for AMutex {}
unsafe impl Sync for AMutex {}

pub struct AMutexGuard<'a> {
    m: &'a AMutex,
}

impl<'a> Drop for AMutexGuard<'a> {
    fn drop(&mut self) {
        let rc = unsafe { surelock_amutex_unlock(self.m.0) };
        debug_assert_eq!(rc, 0);
    }
}

impl AMutex {
    pub fn new() -> Result<AMutex, Error> {
        let mut out = std::ptr::null_mut();
        match unsafe { surelock_amutex_new(&mut out) } { 0 => Ok(AMutex(out)), rc => Err(error(rc)) }
    }
    pub fn try_lock(&self) -> Result<AMutexGuard<'_>, Error> {
        match unsafe { surelock_amutex_trylock(self.0) } {
            0 => Ok(AMutexGuard { m: self }),
            rc => Err(error(rc)),
        }
    }
    /// A future that resolves to the guard, in strict FIFO order with every other locker.
    pub fn lock(&self) -> LockFuture<'_> {
        LockFuture { m: self, queued: None, finished: false }
    }
}

impl Drop for AMutex {
    fn drop(&mut self) {
        let rc = unsafe { surelock_amutex_free(self.0) };
        debug_assert_eq!(rc, 0);
    }
}

/// State shared between a queued future and its C callback. The library holds one `Arc`
/// reference (as the callback's `ctx`) from `lock_async` until the callback has run, or until
/// a cancel that returned 0.
struct Shared {
    done: AtomicBool,
    status: AtomicI32,
    waker: Mutex<Option<Waker>>,
}

struct Queued {
    waiter: Box<surelock_waiter>, // heap: stays put however the future moves
    shared: Arc<Shared>,
}

pub struct LockFuture<'a> {
    m: &'a AMutex,
    queued: Option<Queued>,
    finished: bool,
}

/// The C callback: called exactly once per queued waiter, on the releasing thread, with no
/// library lock held. It must not unwind into C, so a panic here aborts.
extern "C" fn wake_from_c(ctx: *mut c_void, status: c_int) {
    let result = std::panic::catch_unwind(|| {
        let shared = unsafe { Arc::from_raw(ctx as *const Shared) }; // the library's reference
        shared.status.store(status, Ordering::Relaxed);
        shared.done.store(true, Ordering::Release);
        let waker = shared.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    });
    if result.is_err() {
        std::process::abort();
    }
}

impl<'a> Future for LockFuture<'a> {
    type Output = Result<AMutexGuard<'a>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut(); // LockFuture is Unpin: the waiter lives in a Box
        assert!(!this.finished, "LockFuture polled after completion");
        if let Some(q) = &this.queued {
            // Store the current waker first, then look: a callback that runs in between
            // either sees this waker or has already set `done`.
            *q.shared.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if !q.shared.done.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            let status = q.shared.status.load(Ordering::Relaxed);
            this.queued = None; // granted: the library is done with the waiter
            this.finished = true;
            return Poll::Ready(if status == 0 { Ok(AMutexGuard { m: this.m }) } else { Err(error(status)) });
        }
        let shared = Arc::new(Shared { done: AtomicBool::new(false), status: AtomicI32::new(0),
                                       waker: Mutex::new(Some(cx.waker().clone())) });
        let mut waiter = Box::new(surelock_waiter { opaque: [0; 64] });
        let ctx = Arc::into_raw(shared.clone()) as *mut c_void;
        let rc = unsafe { surelock_amutex_lock_async(this.m.0, &mut *waiter, wake_from_c, ctx) };
        if rc == EINPROGRESS {
            this.queued = Some(Queued { waiter, shared });
            return Poll::Pending; // the callback may already have fired: it woke our waker
        }
        // Acquired at once, or an error: the callback will never run, take its reference back.
        drop(unsafe { Arc::from_raw(ctx as *const Shared) });
        this.finished = true;
        Poll::Ready(if rc == 0 { Ok(AMutexGuard { m: this.m }) } else { Err(error(rc)) })
    }
}

impl<'a> Drop for LockFuture<'a> {
    /// Dropping a queued future withdraws it; if it was granted meanwhile, it releases the lock
    /// it was handed, so the next waiter is served.
    fn drop(&mut self) {
        if let Some(mut q) = self.queued.take() {
            match unsafe { surelock_amutex_cancel(self.m.0, &mut *q.waiter) } {
                0 => drop(unsafe { Arc::from_raw(Arc::as_ptr(&q.shared)) }), // never called back
                EALREADY => {
                    // Granted: the callback has run or will (it owns its Arc reference).
                    let rc = unsafe { surelock_amutex_unlock(self.m.0) };
                    debug_assert_eq!(rc, 0);
                }
                ECANCELED => {}
                rc => panic!("surelock_amutex_cancel returned {}", rc),
            }
        }
    }
}

// ---- Executors ---------------------------------------------------------------------------

struct ThreadWaker {
    thread: thread::Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Runs one future to completion on this thread, parking between polls. Panics after
/// `timeout` instead of hanging.
fn block_on<F: Future>(fut: F, timeout: Duration) -> F::Output {
    let mut fut = Box::pin(fut);
    let tw = Arc::new(ThreadWaker { thread: thread::current(), woken: AtomicBool::new(false) });
    let waker = Waker::from(tw.clone());
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        while !tw.woken.swap(false, Ordering::Acquire) {
            let now = Instant::now();
            assert!(now < deadline, "block_on: not woken within {:?}", timeout);
            thread::park_timeout(deadline - now);
        }
    }
}

/// A tiny single-threaded executor: tasks are polled once when spawned (in spawn order) and
/// again whenever their waker fires.
struct ReadyQueue {
    ids: Mutex<VecDeque<usize>>,
    cv: Condvar,
}

struct TaskWaker {
    id: usize,
    queue: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.queue.ids.lock().unwrap().push_back(self.id);
        self.queue.cv.notify_one();
    }
}

struct Executor<'a> {
    tasks: Vec<Option<Pin<Box<dyn Future<Output = ()> + 'a>>>>,
    queue: Arc<ReadyQueue>,
}

impl<'a> Executor<'a> {
    fn new() -> Self {
        Executor { tasks: Vec::new(), queue: Arc::new(ReadyQueue { ids: Mutex::new(VecDeque::new()),
                                                                   cv: Condvar::new() }) }
    }
    fn spawn(&mut self, f: impl Future<Output = ()> + 'a) {
        self.tasks.push(Some(Box::pin(f)));
        self.poll_task(self.tasks.len() - 1);
    }
    fn poll_task(&mut self, id: usize) {
        let waker = Waker::from(Arc::new(TaskWaker { id, queue: self.queue.clone() }));
        let mut cx = Context::from_waker(&waker);
        if let Some(t) = self.tasks[id].as_mut() {
            if t.as_mut().poll(&mut cx).is_ready() {
                self.tasks[id] = None;
            }
        }
    }
    fn run(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.tasks.iter().any(|t| t.is_some()) {
            let mut ids = self.queue.ids.lock().unwrap();
            while ids.is_empty() {
                let now = Instant::now();
                assert!(now < deadline, "executor: tasks still pending after {:?}", timeout);
                ids = self.queue.cv.wait_timeout(ids, deadline - now).unwrap().0;
            }
            let id = ids.pop_front().unwrap();
            drop(ids);
            self.poll_task(id);
        }
    }
}

// ---- Tests -------------------------------------------------------------------------------

const LONG: Duration = Duration::from_secs(10); // "should succeed": a ceiling, never forever
const SHORT: Duration = Duration::from_millis(50); // "should stay busy"

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{}-{}", tag, std::process::id(), nanos)
}

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("surelock-rust"));
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn version_is_1_1_0() {
    let v = unsafe { CStr::from_ptr(surelock_version()) };
    assert_eq!(v.to_str().unwrap(), "1.1.0");
}

fn named_guard_is_shared_and_its_guard_unlocks_on_drop() {
    let name = unique("libfoo.so.3:rust");
    let a = RLock::global(&name).unwrap();
    let b = RLock::global(&name).unwrap();
    assert_eq!(a, b, "the same name is the same lock");
    assert_eq!(thread::spawn({ let n = name.clone(); move || RLock::global(&n).unwrap() })
                   .join().unwrap(), a);
    {
        let _outer = a.lock_timeout(LONG).unwrap();
        assert_eq!(a.depth(), 1);
        {
            let _inner = b.try_lock().unwrap(); // re-entry, as from a callback
            assert_eq!(a.depth(), 2);
        }
        assert_eq!(a.depth(), 1);
        let seen = thread::spawn(move || {
            (a.try_lock().err().map(|e| e.code), a.lock_timeout(SHORT).err().map(|e| e.code), a.depth())
        }).join().unwrap();
        assert_eq!(seen, (Some(EBUSY), Some(ETIMEDOUT), 0));
    }
    assert_eq!(a.depth(), 0);
    let later = thread::spawn(move || a.lock_timeout(LONG).map(|g| !g.owner_died)).join().unwrap();
    assert_eq!(later, Ok(true));
    let e = unsafe { surelock_rlock_unlock(a.0) };
    assert_eq!(e, EPERM, "nothing left held");
}

fn thread_exiting_with_a_forgotten_guard_reports_owner_death() {
    let g = RLock::global(&unique("rust:owner-death")).unwrap();
    thread::spawn(move || std::mem::forget(g.lock_timeout(LONG).unwrap())).join().unwrap();
    let guard = g.lock_timeout(LONG).unwrap();
    assert!(guard.owner_died);
    assert_eq!(g.depth(), 1);
    drop(guard);
    assert!(!g.try_lock().unwrap().owner_died);
}

fn ipc_guard_excludes_other_handles_and_unlocks_on_drop() {
    let dir = TempDir::new();
    let path = dir.file("rust.lock");
    let a = IpcLock::open(&path, 64).unwrap();
    let b = IpcLock::open(&path, 0).unwrap(); // 0: as existing
    assert_eq!(b.payload().len(), a.payload().len());
    {
        let mut g = a.lock_timeout(LONG).unwrap();
        assert!(!g.needs_recovery());
        g.payload_mut()[..5].copy_from_slice(b"hello");
        let busy = thread::scope(|s| s.spawn(|| b.try_lock().err().map(|e| e.code)).join().unwrap());
        assert_eq!(busy, Some(EBUSY));
    }
    let got = thread::scope(|s| {
        s.spawn(|| b.lock_timeout(LONG).map(|_g| b.payload()[..5].to_vec()).map_err(|e| e.code))
            .join().unwrap()
    });
    assert_eq!(got, Ok(b"hello".to_vec()));
    drop(a);
    drop(b);
    let cpath = CString::new(path).unwrap();
    assert_eq!(unsafe { surelock_ipc_unlink(cpath.as_ptr()) }, 0);
}

/// The child half of the next test: take the lock, say so, wait to be killed.
fn ipc_holder(path: &str) -> ! {
    let lock = IpcLock::open(path, 64).unwrap();
    let mut g = lock.lock_timeout(LONG).unwrap();
    g.payload_mut()[..7].copy_from_slice(b"dying..");
    println!("locked");
    thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

fn ipc_survivor_of_a_sigkilled_process_recovers_the_lock() {
    let dir = TempDir::new();
    let path = dir.file("killed.lock");
    let lock = IpcLock::open(&path, 64).unwrap();
    struct KillOnDrop(std::process::Child); // a failed assertion must not leave it running
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(Command::new(std::env::current_exe().unwrap())
        .args(["--ipc-holder", &path]).stdout(Stdio::piped()).spawn().unwrap());
    let mut line = String::new();
    // Bounded: the child either prints at once or dies (EOF).
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    assert_eq!(lock.try_lock().err().map(|e| e.code), Some(EBUSY));
    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    {
        let g = lock.lock_timeout(LONG).unwrap();
        assert!(g.needs_recovery(), "EOWNERDEAD: the dead holder's state needs repair");
        assert_eq!(&lock.payload()[..7], b"dying..");
        g.mark_consistent().unwrap();
        assert!(!g.needs_recovery());
    }
    let g = lock.try_lock().unwrap();
    assert!(!g.needs_recovery());
    drop(g);
    drop(lock);
    let cpath = CString::new(path).unwrap();
    assert_eq!(unsafe { surelock_ipc_unlink(cpath.as_ptr()) }, 0);
}

fn amutex_future_resolves_at_once_when_free_and_on_release_from_another_thread() {
    let m = AMutex::new().unwrap();
    drop(block_on(m.lock(), LONG).unwrap()); // acquired at once: the callback never runs
    let held = m.try_lock().unwrap();
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(held); // the amutex may be released by any thread
        });
        let g = block_on(m.lock(), LONG).unwrap(); // woken by the C callback on that thread
        assert_eq!(m.try_lock().err().map(|e| e.code), Some(EBUSY));
        drop(g);
    });
    drop(m.try_lock().unwrap());
}

fn amutex_futures_are_served_in_fifo_order_and_a_dropped_one_is_skipped() {
    let m = AMutex::new().unwrap();
    let order = Mutex::new(Vec::new());
    let holder = m.try_lock().unwrap();
    {
        let mut ex = Executor::new();
        for i in 0..2 {
            let (m, order) = (&m, &order);
            ex.spawn(async move {
                let _g = m.lock().await.unwrap();
                order.lock().unwrap().push(i);
            });
        }
        // Queue one more and drop it before it is served: it is cancelled and skipped.
        let mut dropped = Box::pin(m.lock());
        let noop = Waker::from(Arc::new(ThreadWaker { thread: thread::current(),
                                                      woken: AtomicBool::new(false) }));
        assert!(dropped.as_mut().poll(&mut Context::from_waker(&noop)).is_pending());
        for i in 2..5 {
            let (m, order) = (&m, &order);
            ex.spawn(async move {
                let _g = m.lock().await.unwrap();
                order.lock().unwrap().push(i);
            });
        }
        drop(dropped);
        assert!(order.lock().unwrap().is_empty());
        drop(holder); // grants task 0; each guard's drop grants the next in line
        ex.run(LONG);
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    drop(m.try_lock().unwrap());
}

fn amutex_future_granted_but_never_polled_releases_on_drop() {
    let m = AMutex::new().unwrap();
    let holder = m.try_lock().unwrap();
    let mut f = Box::pin(m.lock());
    let tw = Arc::new(ThreadWaker { thread: thread::current(), woken: AtomicBool::new(false) });
    let waker = Waker::from(tw.clone());
    assert!(f.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    drop(holder); // the callback runs here, hands the lock to `f` and wakes it
    assert!(tw.woken.load(Ordering::Acquire));
    assert_eq!(m.try_lock().err().map(|e| e.code), Some(EBUSY));
    drop(f); // granted, never polled: cancel says EALREADY and the future unlocks
    drop(m.try_lock().unwrap());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--ipc-holder" {
        ipc_holder(&args[2]);
    }
    let tests: &[(&str, fn())] = &[
        ("version_is_1_1_0", version_is_1_1_0),
        ("named_guard_is_shared_and_its_guard_unlocks_on_drop",
         named_guard_is_shared_and_its_guard_unlocks_on_drop),
        ("thread_exiting_with_a_forgotten_guard_reports_owner_death",
         thread_exiting_with_a_forgotten_guard_reports_owner_death),
        ("ipc_guard_excludes_other_handles_and_unlocks_on_drop",
         ipc_guard_excludes_other_handles_and_unlocks_on_drop),
        ("ipc_survivor_of_a_sigkilled_process_recovers_the_lock",
         ipc_survivor_of_a_sigkilled_process_recovers_the_lock),
        ("amutex_future_resolves_at_once_when_free_and_on_release_from_another_thread",
         amutex_future_resolves_at_once_when_free_and_on_release_from_another_thread),
        ("amutex_futures_are_served_in_fifo_order_and_a_dropped_one_is_skipped",
         amutex_futures_are_served_in_fifo_order_and_a_dropped_one_is_skipped),
        ("amutex_future_granted_but_never_polled_releases_on_drop",
         amutex_future_granted_but_never_polled_releases_on_drop),
    ];
    println!("1..{}", tests.len());
    let mut failed = 0;
    for (i, (name, f)) in tests.iter().enumerate() {
        match std::panic::catch_unwind(*f) {
            Ok(()) => println!("ok {} - {}", i + 1, name),
            Err(_) => {
                println!("not ok {} - {}", i + 1, name);
                failed += 1;
            }
        }
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
