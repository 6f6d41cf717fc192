//! The crate against what a Rust user would otherwise use: `ReentrantMutex` and `Mutex` vs
//! `std::sync::Mutex`, `AsyncMutex` vs `tokio::sync::Mutex` (Debian's tokio).
//!
//!     cargo run --release --example bench [-- --runs N] [--quick] [--only GROUP]
//!
//! Each cell is the median of N interleaved runs (default 7). Uncontended rows are ns per
//! lock+unlock on one thread; contended rows are lock+unlock per second over all threads or
//! tasks. Ratios are surelock / peer for times, peer-relative throughput for rates; the last
//! column is the range of the ratios of the N runs (each surelock run against the peer run
//! just before it), which says how far to trust the median on a busy machine. GROUP (one of
//! `uncontended`, `contended`, `async-uncontended`, `async-contended`) runs only those rows.
//! Speed is measured here, never asserted in tests; the targets are printed beside the
//! result.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `std::hint::black_box` is newer than the MSRV (1.66): a volatile read does the same here.
fn black_box<T: Copy>(x: T) -> T {
    // Safety: reads a valid, initialised local.
    unsafe { std::ptr::read_volatile(&x) }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A table row: its name, surelock's and the peer's result of each run, the target.
struct Row {
    name: &'static str,
    ours: Vec<f64>,
    peer: Vec<f64>,
    target: &'static str,
}

struct Options {
    runs: usize,
    iters: u64,
    contended_ms: u64,
}

/// ns per operation of `f(iters)`.
fn time_ns(iters: u64, f: &mut dyn FnMut(u64)) -> f64 {
    let start = Instant::now();
    f(iters);
    start.elapsed().as_nanos() as f64 / iters as f64
}

// The uncontended loops are separate, never-inlined functions so that
// `valgrind --tool=callgrind` can count their instructions (see README): deterministic where
// the clock is not, on a loaded machine.
#[inline(never)]
fn loop_std_mutex(m: &std::sync::Mutex<u64>, n: u64) {
    for _ in 0..n {
        *m.lock().unwrap() += black_box(1);
    }
}

#[inline(never)]
fn loop_surelock_mutex(m: &surelock::Mutex<u64>, n: u64) {
    for _ in 0..n {
        *m.lock().unwrap() += black_box(1);
    }
}

#[inline(never)]
fn loop_surelock_reentrant(m: &surelock::ReentrantMutex<std::cell::Cell<u64>>, n: u64) {
    for _ in 0..n {
        let g = m.lock().unwrap();
        g.set(g.get() + black_box(1));
    }
}

#[inline(never)]
async fn loop_tokio_async_mutex(m: &tokio::sync::Mutex<u64>, n: u64) {
    for _ in 0..n {
        *m.lock().await += black_box(1);
    }
}

#[inline(never)]
async fn loop_surelock_async_mutex(m: &surelock::AsyncMutex<u64>, n: u64) {
    for _ in 0..n {
        *m.lock().await += black_box(1);
    }
}

fn uncontended(o: &Options) -> Vec<Row> {
    let std_m = std::sync::Mutex::new(0u64);
    let sl_m = surelock::Mutex::new(0u64);
    let sl_r = surelock::ReentrantMutex::new(std::cell::Cell::new(0u64));
    // A second thread exists, as in any program that needs a lock (no single-thread shortcut).
    let _other = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(1)));
    let mut std_t = Vec::new();
    let mut mutex_t = Vec::new();
    let mut rlock_t = Vec::new();
    for _ in 0..o.runs {
        std_t.push(time_ns(o.iters, &mut |n| loop_std_mutex(&std_m, n)));
        mutex_t.push(time_ns(o.iters, &mut |n| loop_surelock_mutex(&sl_m, n)));
        rlock_t.push(time_ns(o.iters, &mut |n| loop_surelock_reentrant(&sl_r, n)));
    }
    vec![
        Row { name: "Mutex lock+unlock, uncontended (ns)", ours: mutex_t, peer: std_t.clone(),
              target: "<= 1.20x std" },
        Row { name: "ReentrantMutex lock+unlock, uncontended (ns)", ours: rlock_t, peer: std_t,
              target: "-" },
    ]
}

/// Lock+unlock per second by `threads` threads hammering one lock for `ms`.
fn contended_sync<L: Sync>(lock: &L, threads: usize, ms: u64, op: &(dyn Fn(&L) + Sync)) -> f64 {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    op(lock);
                }
                n += 64;
            }
            n
        })).collect();
        std::thread::sleep(Duration::from_millis(ms));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn contended(o: &Options) -> Vec<Row> {
    let std_m = std::sync::Mutex::new(0u64);
    let sl_m = surelock::Mutex::new(0u64);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        b.push(contended_sync(&std_m, 2, o.contended_ms, &|m| *m.lock().unwrap() += 1));
        a.push(contended_sync(&sl_m, 2, o.contended_ms, &|m| *m.lock().unwrap() += 1));
    }
    vec![Row { name: "Mutex, 2 threads contended (Mops/s)", ours: mops(a), peer: mops(b),
               target: "-" }]
}

fn mops(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x / 1e6).collect()
}

fn async_uncontended(o: &Options) -> Vec<Row> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let tk = tokio::sync::Mutex::new(0u64);
    let sl = surelock::AsyncMutex::new(0u64);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        b.push(rt.block_on(async {
            let start = Instant::now();
            loop_tokio_async_mutex(&tk, o.iters).await;
            start.elapsed().as_nanos() as f64 / o.iters as f64
        }));
        a.push(rt.block_on(async {
            let start = Instant::now();
            loop_surelock_async_mutex(&sl, o.iters).await;
            start.elapsed().as_nanos() as f64 / o.iters as f64
        }));
    }
    vec![Row { name: "AsyncMutex lock().await+unlock, uncontended (ns)", ours: a, peer: b,
               target: "<= 0.70x tokio" }]
}

/// Lock+unlock per second: 8 tasks on a 2-worker runtime, each yielding while it holds the
/// lock (so the others queue), for `ms`.
macro_rules! async_contended {
    ($rt:expr, $mutex:expr, $ms:expr) => {{
        let m = Arc::new($mutex);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let total: u64 = $rt.block_on(async {
            let tasks: Vec<_> = (0..8).map(|_| {
                let (m, stop) = (m.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut g = m.lock().await;
                        *g += 1;
                        if n % 4 == 0 {
                            tokio::task::yield_now().await; // held across an await
                        }
                        drop(g);
                        n += 1;
                    }
                    n
                })
            }).collect();
            tokio::time::sleep(Duration::from_millis($ms)).await;
            stop.store(true, Ordering::Relaxed);
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        });
        total as f64 / start.elapsed().as_secs_f64()
    }};
}

fn async_contended(o: &Options) -> Vec<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        b.push(async_contended!(rt, tokio::sync::Mutex::new(0u64), o.contended_ms));
        a.push(async_contended!(rt, surelock::AsyncMutex::new(0u64), o.contended_ms));
    }
    vec![Row { name: "AsyncMutex, 8 tasks on 2 workers (Mops/s)", ours: mops(a), peer: mops(b),
               target: ">= 1.00x tokio" }]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs = args.iter().position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(7);
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1));
    let groups: [(&str, fn(&Options) -> Vec<Row>); 4] = [
        ("uncontended", uncontended),
        ("contended", contended),
        ("async-uncontended", async_uncontended),
        ("async-contended", async_contended),
    ];
    if let Some(only) = only {
        if !groups.iter().any(|(name, _)| name == only) {
            eprintln!("bench: --only takes one of: uncontended, contended, async-uncontended, \
                       async-contended");
            std::process::exit(2);
        }
    }
    let o = Options {
        runs,
        iters: if quick { 200_000 } else { 2_000_000 },
        contended_ms: if quick { 100 } else { 300 },
    };
    println!("surelock {} (crate {}), median of {} runs; {} CPUs",
             surelock::version(), env!("CARGO_PKG_VERSION"), o.runs,
             std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!("| scenario | surelock | peer | ratio | target | ratio per run |");
    println!("|---|--:|--:|--:|---|---|");
    for (group, run) in groups {
        if only.map_or(false, |only| only != group) {
            continue;
        }
        for row in run(&o) {
            let (ours, peer) = (median(&row.ours), median(&row.peer));
            let per_run: Vec<f64> = row.ours.iter().zip(&row.peer).map(|(a, b)| a / b).collect();
            let low = per_run.iter().cloned().fold(f64::INFINITY, f64::min);
            let high = per_run.iter().cloned().fold(0.0, f64::max);
            let peer_name = if row.name.starts_with("Async") { "tokio" } else { "std" };
            println!("| {} | {:.2} | {} {:.2} | {:.2}x | {} | {:.2}-{:.2}x |", row.name, ours,
                     peer_name, peer, ours / peer, row.target, low, high);
        }
    }
}
