//! Stress for the lock-free hand-over between a queued future and the library's callback
//! (src/acquire.rs): futures dropped, or re-polled with a new waker each time, while grants
//! and closes race them from other threads. The test wakers take a random time to clone and
//! to wake, which widens the windows: a re-poll replacing its waker while the callback comes,
//! and a batch of grants whose later callbacks wait behind a slow wake while their futures
//! are dropped (cancel says EALREADY or ECANCELED before the callback ran). Each test is
//! bounded in rounds and in time. (src/acquire.rs's own unit tests drive the same hand-over
//! without the library, with delays inside each window.)
#![deny(unsafe_op_in_unsafe_fn)]
mod common;

use common::{tokio_rt, watchdog, LONG};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};
use surelock::errno::*;
use surelock::{AsyncMutex, Semaphore};

/// What a test waker records. Its `Arc` count shows whether the crate still holds a clone.
struct Probe {
    woken: AtomicUsize,
    /// Spins in every clone and wake.
    delay: u64,
}

fn spin(n: u64) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

static PROBE_VTABLE: RawWakerVTable =
    RawWakerVTable::new(probe_clone, probe_wake, probe_wake_by_ref, probe_drop);

// Safety (all four): `p` comes from Arc::into_raw of a Probe, one reference per waker.
unsafe fn probe_clone(p: *const ()) -> RawWaker {
    let probe = ManuallyDrop::new(unsafe { Arc::from_raw(p as *const Probe) });
    spin(probe.delay);
    RawWaker::new(Arc::into_raw(Arc::clone(&probe)) as *const (), &PROBE_VTABLE)
}
unsafe fn probe_wake(p: *const ()) {
    unsafe {
        probe_wake_by_ref(p);
        probe_drop(p);
    }
}
unsafe fn probe_wake_by_ref(p: *const ()) {
    let probe = unsafe { &*(p as *const Probe) };
    spin(probe.delay);
    probe.woken.fetch_add(1, Ordering::AcqRel);
}
unsafe fn probe_drop(p: *const ()) {
    drop(unsafe { Arc::from_raw(p as *const Probe) });
}

fn probe_waker(delay: u64) -> (Arc<Probe>, Waker) {
    let probe = Arc::new(Probe { woken: AtomicUsize::new(0), delay });
    let raw = RawWaker::new(Arc::into_raw(probe.clone()) as *const (), &PROBE_VTABLE);
    // Safety: the vtable keeps the RawWaker contract (a counted Arc per waker).
    (probe, unsafe { Waker::from_raw(raw) })
}

/// xorshift: the tests' choices, different per thread and per round.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn spin(&mut self, max: u64) {
        spin(self.below(max));
    }
}

/// A nonzero seed for thread `t` in round `r`.
fn seed(t: u64, r: u64) -> u64 {
    (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1
}

/// Polls with a fresh test waker (kept in `probes`, for the leak check), slow half the time.
fn poll_fresh<F: Future + ?Sized>(fut: Pin<&mut F>, rng: &mut Rng, probes: &mut Vec<Arc<Probe>>)
                                  -> Poll<F::Output> {
    let delay = if rng.below(2) == 0 { 0 } else { rng.below(3000) };
    let (probe, waker) = probe_waker(delay);
    probes.push(probe);
    fut.poll(&mut Context::from_waker(&waker))
}

/// Waits (bounded) until the waker of the latest poll has been woken.
fn await_wake(latest: &Probe, what: &str) {
    let deadline = Instant::now() + LONG;
    while latest.woken.load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline, "{}: the latest waker was never woken", what);
        std::thread::yield_now();
    }
}

/// Every clone of a test waker the crate took has been dropped (none leaked, none kept).
fn assert_no_waker_kept(probes: &[Arc<Probe>]) {
    for p in probes {
        assert_eq!(Arc::strong_count(p), 1, "a waker clone was leaked or is still held");
    }
}

/// One contender's round: a future from `make`, polled, then dropped at once, dropped a bit
/// later, or re-polled with a new waker each time (and then maybe awaited through the latest
/// waker, which must be woken). What it acquired goes to `hold`.
fn contend<F: Future>(rng: &mut Rng, probes: &mut Vec<Arc<Probe>>, make: impl FnOnce(&mut Rng) -> F,
                      hold: impl FnOnce(F::Output, &mut Rng)) {
    let mut fut = Box::pin(make(rng));
    let mut got = match poll_fresh(fut.as_mut(), rng, probes) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    };
    if got.is_none() {
        match rng.below(4) {
            0 => {}              // dropped at once
            1 => rng.spin(3000), // dropped a bit later
            _ => {
                for _ in 0..rng.below(6) {
                    rng.spin(500);
                    if let Poll::Ready(v) = poll_fresh(fut.as_mut(), rng, probes) {
                        got = Some(v);
                        break;
                    }
                }
                if got.is_none() && rng.below(2) == 0 {
                    await_wake(probes.last().unwrap(), "a queued future");
                    match poll_fresh(fut.as_mut(), rng, probes) {
                        Poll::Ready(v) => got = Some(v),
                        Poll::Pending => panic!("woken but not granted"),
                    }
                }
            }
        }
    }
    drop(fut); // still pending: withdrawn, or a grant that raced it given back
    if let Some(v) = got {
        hold(v, rng);
    }
}

const THREADS: usize = 4;
const ROUNDS: usize = 3000;
const TIME_BOUND: Duration = Duration::from_secs(4);

#[test]
fn lock_futures_dropped_or_repolled_while_grants_race_never_lose_double_or_leak() {
    watchdog();
    let m = AsyncMutex::new(0u64);
    let inside = AtomicBool::new(false);
    let granted = AtomicU64::new(0);
    let end = Instant::now() + TIME_BOUND;
    let probes: Vec<Arc<Probe>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS).map(|t| {
            let (m, inside, granted) = (&m, &inside, &granted);
            s.spawn(move || {
                let mut rng = Rng(seed(t as u64, 1));
                let mut probes = Vec::new();
                for _ in 0..ROUNDS {
                    if Instant::now() > end {
                        break;
                    }
                    contend(&mut rng, &mut probes, |_| m.lock(), |mut g, rng| {
                        assert!(!inside.swap(true, Ordering::AcqRel), "two holders at once");
                        *g += 1;
                        rng.spin(300); // the others queue, drop and re-poll meanwhile
                        inside.store(false, Ordering::Release);
                        granted.fetch_add(1, Ordering::Relaxed);
                    });
                }
                probes
            })
        }).collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let g = m.try_lock().expect("a grant was lost: the mutex stayed locked");
    assert_eq!(*g, granted.load(Ordering::Relaxed), "every grant counted once");
    drop(g);
    assert_no_waker_kept(&probes);
}

#[test]
fn acquires_dropped_or_repolled_while_batch_grants_race_keep_every_permit() {
    watchdog();
    const PERMITS: u64 = 4;
    let sem = Semaphore::new(PERMITS as usize);
    let held = AtomicU64::new(0);
    let end = Instant::now() + TIME_BOUND;
    let probes: Vec<Arc<Probe>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS).map(|t| {
            let (sem, held) = (&sem, &held);
            s.spawn(move || {
                let mut rng = Rng(seed(t as u64, 2));
                let mut probes = Vec::new();
                for _ in 0..ROUNDS {
                    if Instant::now() > end {
                        break;
                    }
                    // Requests of 1..3 of 4 permits: one release often grants several
                    // waiters, whose callbacks then run one after another.
                    contend(&mut rng, &mut probes, |rng| sem.acquire_many(1 + rng.below(3)),
                            |permit, rng| {
                        let permit = permit.expect("the semaphore is open");
                        let n = permit.num_permits();
                        assert!(held.fetch_add(n, Ordering::AcqRel) + n <= PERMITS,
                                "more permits held than exist");
                        rng.spin(300);
                        held.fetch_sub(n, Ordering::AcqRel);
                    });
                }
                probes
            })
        }).collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(sem.available_permits() as u64, PERMITS, "a permit was lost or doubled");
    assert_no_waker_kept(&probes);
}

#[test]
fn acquires_dropped_or_repolled_while_the_semaphore_closes_all_resolve_and_leak_nothing() {
    watchdog();
    let end = Instant::now() + TIME_BOUND;
    let mut probes = Vec::new();
    for round in 0..300u64 {
        if Instant::now() > end {
            break;
        }
        let sem = Semaphore::new(2);
        let held = sem.try_acquire_many(2).unwrap();
        let ready = AtomicUsize::new(0); // a start gate that cannot hang on a dead worker
        let kept: Vec<Vec<Arc<Probe>>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS).map(|t| {
                let (sem, ready) = (&sem, &ready);
                s.spawn(move || {
                    let mut rng = Rng(seed(t as u64, round + 2));
                    let mut probes = Vec::new();
                    let mut fut = Box::pin(sem.acquire_many(1 + rng.below(2)));
                    ready.fetch_add(1, Ordering::AcqRel);
                    // Queued (or, racing the close, already cancelled).
                    let mut outcome = poll_fresh(fut.as_mut(), &mut rng, &mut probes);
                    match rng.below(3) {
                        0 => rng.spin(300), // then dropped, racing the close
                        _ => {
                            while outcome.is_pending() {
                                rng.spin(200);
                                outcome = poll_fresh(fut.as_mut(), &mut rng, &mut probes);
                                if outcome.is_pending() && rng.below(4) == 0 {
                                    await_wake(probes.last().unwrap(), "a queued acquire");
                                }
                            }
                            match outcome {
                                Poll::Ready(Err(e)) => assert_eq!(e.code(), ECANCELED),
                                Poll::Ready(Ok(_)) => panic!("granted permits that were held"),
                                Poll::Pending => unreachable!(),
                            }
                        }
                    }
                    drop(fut);
                    probes
                })
            }).collect();
            let deadline = Instant::now() + LONG;
            while ready.load(Ordering::Acquire) < THREADS && Instant::now() < deadline {
                std::thread::yield_now();
            }
            Rng(seed(99, round + 2)).spin(2000);
            sem.close();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(sem.available_permits(), 0, "closing handed out no permits");
        drop(held);
        assert_eq!(sem.available_permits(), 2);
        probes.extend(kept.into_iter().flatten());
    }
    assert_no_waker_kept(&probes);
}

#[test]
fn tokio_tasks_timing_out_while_the_lock_is_handed_over_never_lose_it() {
    watchdog();
    let rt = tokio_rt();
    let m = Arc::new(AsyncMutex::new(0u64));
    let granted = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + TIME_BOUND;
    rt.block_on(async {
        let tasks: Vec<_> = (0..8u64).map(|t| {
            let (m, granted) = (m.clone(), granted.clone());
            tokio::spawn(async move {
                let mut rng = Rng(seed(t, 3));
                for _ in 0..400 {
                    if Instant::now() > end {
                        break;
                    }
                    // A timeout drops the queued future on the timer's worker, racing the
                    // grant from whichever worker unlocks.
                    let wait = Duration::from_micros(rng.below(1500));
                    if let Ok(mut g) = tokio::time::timeout(wait, m.lock()).await {
                        *g += 1;
                        granted.fetch_add(1, Ordering::Relaxed);
                        if rng.below(3) == 0 {
                            tokio::task::yield_now().await; // held across an await
                        }
                    }
                }
            })
        }).collect();
        for t in tasks {
            tokio::time::timeout(LONG, t).await.expect("tasks hung: a grant was lost").unwrap();
        }
    });
    let g = m.try_lock().expect("a grant was lost: the mutex stayed locked");
    assert_eq!(*g, granted.load(Ordering::Relaxed));
}
