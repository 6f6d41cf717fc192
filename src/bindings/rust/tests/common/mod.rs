//! Shared by the crate's tests: bounds (nothing may hang), scratch dirs, executors.
#![allow(dead_code)]
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// "Should succeed": a ceiling, never forever.
pub const LONG: Duration = Duration::from_secs(20);
/// "Should stay busy meanwhile".
pub const SHORT: Duration = Duration::from_millis(50);

/// Every test binary ends itself (exit 124) if its tests have not finished in 5 minutes: a
/// broken lock fails the run instead of hanging it. Call at the start of every test.
pub fn watchdog() {
    static START: Once = Once::new();
    START.call_once(|| {
        thread::spawn(|| {
            thread::sleep(Duration::from_secs(300));
            eprintln!("watchdog: tests still running after 300 s; a wait is hanging");
            std::process::exit(124);
        });
    });
}

pub fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}-{}-{}", tag, std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("surelock-rust"));
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on another thread and returns its result, failing if it takes over `bound`.
pub fn on_thread<R: Send + 'static>(bound: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound).expect("the thread did not finish in time (or panicked)")
}

pub struct FlagWaker {
    pub thread: thread::Thread,
    pub woken: AtomicBool,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

pub fn flag_waker() -> (Arc<FlagWaker>, Waker) {
    let w = Arc::new(FlagWaker { thread: thread::current(), woken: AtomicBool::new(false) });
    (w.clone(), Waker::from(w))
}

/// A hand-written executor: runs one future to completion on this thread, parking between
/// polls. Panics after `bound` instead of hanging.
pub fn block_on<F: Future>(fut: F, bound: Duration) -> F::Output {
    let mut fut = Box::pin(fut);
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + bound;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        while !flag.woken.swap(false, Ordering::Acquire) {
            let now = Instant::now();
            assert!(now < deadline, "block_on: not woken within {:?}", bound);
            thread::park_timeout(deadline - now);
        }
    }
}

/// Polls once with a waker that only records the wake-up.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// A tiny single-threaded executor: tasks are polled once when spawned (in spawn order) and
/// again whenever their waker fires (from any thread).
pub struct Executor<'a> {
    tasks: Vec<Option<Pin<Box<dyn Future<Output = ()> + 'a>>>>,
    queue: Arc<ReadyQueue>,
}

pub struct ReadyQueue {
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

impl<'a> Executor<'a> {
    pub fn new() -> Self {
        Executor { tasks: Vec::new(),
                   queue: Arc::new(ReadyQueue { ids: Mutex::new(VecDeque::new()), cv: Condvar::new() }) }
    }
    pub fn spawn(&mut self, f: impl Future<Output = ()> + 'a) {
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
    pub fn run(&mut self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.tasks.iter().any(|t| t.is_some()) {
            let mut ids = self.queue.ids.lock().unwrap();
            while ids.is_empty() {
                let now = Instant::now();
                assert!(now < deadline, "executor: tasks still pending after {:?}", bound);
                ids = self.queue.cv.wait_timeout(ids, deadline - now).unwrap().0;
            }
            let id = ids.pop_front().unwrap();
            drop(ids);
            self.poll_task(id);
        }
    }
}

/// A multi-thread tokio runtime with 2 workers (Debian's tokio).
pub fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap()
}
