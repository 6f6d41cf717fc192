//! The hand-over protocol of src/acquire.rs driven directly from two threads, without the
//! library (so the callback's side runs exactly when the test says). `window` spins a random
//! time inside both windows (a poll holding REGISTERING, the callback holding TAKING), which
//! the racing side then hits; `LIVE` counts blocks between `new_queued` and `recycle`, so a
//! block freed twice, or never, shows. Bounded in rounds and in time.
use super::*;
use std::sync::atomic::AtomicIsize;
use std::sync::{Arc, Mutex};
use std::task::Wake;
use std::time::{Duration, Instant};

pub(super) static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The tests share LIVE: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    static RNG: Cell<u64> = Cell::new(0);
}

/// xorshift, seeded per thread from a stack address.
fn below(n: u64) -> u64 {
    RNG.with(|rng| {
        let mut x = rng.get();
        if x == 0 {
            x = (&x as *const u64 as u64) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rng.set(x);
        x % n
    })
}

fn spin(max: u64) {
    for _ in 0..below(max) {
        std::hint::spin_loop();
    }
}

/// Inside a window: half the time, hold it open a while.
pub(super) fn window() {
    if below(2) == 0 {
        spin(2000);
    }
}

struct Probe(AtomicUsize);

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

fn probe() -> (Arc<Probe>, Waker) {
    let p = Arc::new(Probe(AtomicUsize::new(0)));
    (p.clone(), Waker::from(p))
}

/// The block crosses to the "callback" thread as the library would carry it.
#[derive(Clone, Copy)]
struct Ctx(NonNull<Grant>);
// Safety: the protocol on Grant::state is what makes sharing it sound; that is under test.
unsafe impl Send for Ctx {}

/// Runs `future_side` against a callback (status 0 or ECANCELED) racing it from another
/// thread, round after round; then checks that every block was freed exactly once, that
/// no waker clone is left, and at most one wake-up per round.
fn race(future_side: impl Fn(Ctx, &mut Vec<Arc<Probe>>, c_int)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let end = Instant::now() + Duration::from_secs(3);
    for round in 0..4000 {
        if Instant::now() > end {
            break;
        }
        let status = if round % 3 == 0 { errno::ECANCELED } else { 0 };
        let (first, waker) = probe();
        let mut probes = vec![first];
        let ctx = Ctx(Grant::new_queued(&waker));
        drop(waker);
        std::thread::scope(|s| {
            s.spawn(move || {
                spin(3000);
                let ctx = ctx; // the whole Ctx (Send), not its field
                // Safety: called once per block, as the library does.
                unsafe { Grant::complete(ctx.0.as_ptr(), status) };
            });
            future_side(ctx, &mut probes, status);
        });
        assert_eq!(LIVE.load(Ordering::Relaxed), 0, "round {}: a block freed twice or never",
                   round);
        let wakes: usize = probes.iter().map(|p| p.0.load(Ordering::Acquire)).sum();
        assert!(wakes <= 1, "round {}: woken {} times", round, wakes);
        for p in &probes {
            assert_eq!(Arc::strong_count(p), 1, "round {}: a waker clone was kept", round);
        }
    }
}

#[test]
fn polls_with_a_new_waker_each_time_racing_the_callback_complete_or_wake_the_latest() {
    race(|ctx, probes, status| {
        for _ in 0..1 + below(6) {
            spin(1000);
            let (p, waker) = probe();
            probes.push(p);
            // Safety: our block, not finished with (no Ready yet).
            if let Poll::Ready(got) = unsafe { Grant::poll(ctx.0, &waker) } {
                assert_eq!(got, status);
                return;
            }
        }
        // Pending at the latest poll: its waker, and only it, is woken once the callback
        // has run (bounded: the callback thread needs no help from this one).
        let latest = probes.last().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        while latest.0.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the latest waker was never woken");
            std::thread::yield_now();
        }
        let (p, waker) = probe();
        probes.push(p);
        // Safety: as above.
        assert_eq!(unsafe { Grant::poll(ctx.0, &waker) }, Poll::Ready(status),
                   "woken but not complete");
    });
}

#[test]
fn a_future_dropped_while_the_callback_runs_frees_the_block_exactly_once() {
    race(|ctx, probes, status| {
        // Maybe polled a few times first (completing ends the round: nothing to drop).
        for _ in 0..below(3) {
            spin(1000);
            let (p, waker) = probe();
            probes.push(p);
            // Safety: our block, not finished with.
            if let Poll::Ready(got) = unsafe { Grant::poll(ctx.0, &waker) } {
                assert_eq!(got, status);
                return;
            }
        }
        spin(3000);
        // Dropped after a cancel that came too late: the callback runs or has run.
        // Safety: our block, not finished with.
        unsafe { Grant::leave(ctx.0) };
    });
}
