//! The acquisition engine under the `AsyncMutex` and `Semaphore` futures: a try, then a
//! queued `*_async` waiter whose grant (the library's callback, on the releasing thread)
//! wakes the task.
//!
//! A queued future and the callback share a small heap block, a [`Grant`]: the callback may
//! still be running after the future is gone (a drop that races the grant), so the block
//! cannot live in the future. Who frees it is decided by one atomic word, without a lock and
//! without a reference count: whichever side finishes with the block last. On the common
//! path that costs one compare-and-swap and one fetch-or in the callback and none in the
//! future (the waker is stored before the waiter is queued). Blocks are reused through a
//! one-slot per-thread spare, so waiting allocates only when that slot is empty.
use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomPinned;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_void};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use crate::{errno, sys, Error};

// ---- The block a queued future shares with its callback ------------------------------------

// `Grant::state` flags. Why the hand-over is sound:
// - The waker slot: the future writes it only before the waiter is queued, or while it holds
//   REGISTERING; the callback moves the waker out only while it holds TAKING. Each flag is
//   set by a compare-and-swap from a state without the other (and without DONE or LEFT), so
//   the two never overlap.
// - Freeing: each side's last touch of the block is one read-modify-write that says it has
//   finished: DONE for the callback, LEFT for the future. The side that finds the other's
//   flag already set frees the block; so does the future when no callback will ever come
//   (the *_async call did not queue, or a cancel withdrew the waiter). Exactly one side
//   frees, once, and never while the other can still touch it.
// - Every flag change is acquire/release, so what one side did to the block before it is
//   visible to the other after it; `status` is stored before the callback's first change.
// - The callback moves the waker out before DONE and wakes it afterwards: the wake (foreign
//   code) never runs while it holds the block. A waker clone that panics in a poll leaves
//   REGISTERING set: the callback then finishes with DONE without touching the slot, and the
//   dropped future frees the block.
// The unit tests (acquire/tests.rs) hold each window open while the other side races it.
/// The future is replacing the waker (a re-poll); the callback must not touch the slot.
const REGISTERING: usize = 1;
/// The callback has claimed the slot to move the waker out.
const TAKING: usize = 2;
/// The callback has finished with the block; `status` is its outcome.
const DONE: usize = 4;
/// The future has finished with the block (it was dropped, or completed while the callback
/// was still TAKING); the callback frees it.
const LEFT: usize = 8;

pub(crate) struct Grant {
    state: AtomicUsize,
    /// The callback's status (0 or ECANCELED), stored before the state change that shows it.
    status: AtomicI32,
    /// The waker of the future's latest poll; `Some` from before queueing until the callback
    /// takes it.
    waker: UnsafeCell<Option<Waker>>,
}

thread_local! {
    /// One spare block per thread: a finished wait leaves its block here for the next.
    static SPARE: Cell<Option<Box<Grant>>> = const { Cell::new(None) };
}

impl Grant {
    /// A block for a waiter about to be queued, holding the waker of this poll. Stored while
    /// the block is ours alone: the library's queue lock, which hands the waiter (and its
    /// ctx) to the releasing thread, hands these writes over too. So the callback always
    /// finds a waker, and the first poll needs no atomic operation on the block.
    #[inline]
    fn new_queued(waker: &Waker) -> NonNull<Grant> {
        let mut grant = match SPARE.try_with(Cell::take) {
            Ok(Some(grant)) => grant, // clean: see recycle
            _ => Box::new(Grant {
                state: AtomicUsize::new(0),
                status: AtomicI32::new(0),
                waker: UnsafeCell::new(None),
            }),
        };
        *grant.waker.get_mut() = Some(waker.clone());
        #[cfg(test)]
        tests::LIVE.fetch_add(1, Ordering::Relaxed);
        // Safety: Box::into_raw is never NULL.
        unsafe { NonNull::new_unchecked(Box::into_raw(grant)) }
    }

    /// Frees a block nobody else can reach any more: into this thread's spare slot, clean.
    ///
    /// # Safety
    /// `this` came from `new_queued`, and neither side touches it again.
    unsafe fn recycle(this: *mut Grant) {
        #[cfg(test)]
        tests::LIVE.fetch_sub(1, Ordering::Relaxed);
        // Safety: from Box::into_raw in `new_queued`; ours alone.
        let mut grant = unsafe { Box::from_raw(this) };
        *grant.state.get_mut() = 0;
        *grant.status.get_mut() = 0;
        let old_waker = grant.waker.get_mut().take();
        // After thread-local teardown there is no slot: then it is freed.
        let _ = SPARE.try_with(|spare| spare.set(Some(grant)));
        drop(old_waker); // last: a waker's drop is foreign code
    }

    /// The future's side, polled while queued: `Ready(status)` once the callback has run (or
    /// is moving the waker out), after which the future never touches the block again;
    /// `Pending` with the waker of this poll registered.
    ///
    /// # Safety
    /// `this` came from `new_queued` for a waiter the library queued, and this side has not
    /// finished with it (no Ready returned, no `leave`). Not called concurrently with itself.
    unsafe fn poll(this: NonNull<Grant>, waker: &Waker) -> Poll<c_int> {
        // Safety: the block stays valid until this side has finished with it.
        let grant = unsafe { this.as_ref() };
        let mut state = grant.state.load(Ordering::Acquire);
        loop {
            if state & DONE != 0 {
                let status = grant.status.load(Ordering::Relaxed);
                // Safety: the callback has finished with it too.
                unsafe { Grant::recycle(this.as_ptr()) };
                return Poll::Ready(status);
            }
            if state & TAKING != 0 {
                // The callback is moving the waker out to wake us: the outcome is known.
                // Complete now and leave the block to the callback, which frees it.
                let status = grant.status.load(Ordering::Relaxed);
                match grant.state.compare_exchange(state, state | LEFT, Ordering::AcqRel,
                                                   Ordering::Acquire) {
                    Ok(_) => return Poll::Ready(status),
                    Err(now) => state = now, // DONE meanwhile
                }
                continue;
            }
            // The callback has not come (or is coming): claim the slot to update the waker.
            match grant.state.compare_exchange_weak(state, state | REGISTERING,
                                                    Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        // Safety: the slot is ours while REGISTERING is set.
        let slot = unsafe { &mut *grant.waker.get() };
        let mut old = None;
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => old = std::mem::replace(slot, Some(waker.clone())),
        }
        #[cfg(test)]
        tests::window();
        // A callback that came meanwhile set DONE and left the slot alone: then finish here.
        let handed_back = grant.state.compare_exchange(REGISTERING, 0, Ordering::AcqRel,
                                                       Ordering::Acquire).is_ok();
        drop(old); // foreign code: only after the slot is handed back
        if handed_back {
            return Poll::Pending;
        }
        let status = grant.status.load(Ordering::Relaxed);
        // Safety: DONE is set: the callback has finished with it.
        unsafe { Grant::recycle(this.as_ptr()) };
        Poll::Ready(status)
    }

    /// The future's side, dropped after a cancel that did not withdraw the waiter (so the
    /// callback has run, runs or will run): frees the block if the callback is done with it,
    /// else leaves it to the callback.
    ///
    /// # Safety
    /// As for `poll`; this side never touches the block afterwards.
    unsafe fn leave(this: NonNull<Grant>) {
        // Safety: valid until this side has finished with it.
        let before = unsafe { this.as_ref() }.state.fetch_or(LEFT, Ordering::AcqRel);
        if before & DONE != 0 {
            // Safety: both sides have finished with it.
            unsafe { Grant::recycle(this.as_ptr()) };
        }
    }

    /// The callback's side; runs exactly once per queued waiter (see `on_grant`).
    ///
    /// # Safety
    /// `this` is the block given to the library as `ctx`, which the future has not freed (it
    /// frees it only after seeing DONE, or after a cancel that returned 0, when no callback
    /// comes).
    unsafe fn complete(this: *mut Grant, status: c_int) {
        // Safety: live until one of the two sides frees it, and only this side sets DONE.
        let grant = unsafe { &*this };
        grant.status.store(status, Ordering::Relaxed);
        let mut state = grant.state.load(Ordering::Acquire);
        loop {
            if state & LEFT != 0 {
                // The future is gone and never looks again: the block is ours alone, and
                // nobody waits for a wake-up.
                // Safety: no other reference left.
                unsafe { Grant::recycle(this) };
                return;
            }
            if state & REGISTERING != 0 {
                // A poll is replacing the waker right now: it sees DONE when it hands the
                // slot back and completes in that same poll, so no wake-up is needed. This
                // compare-and-swap is this side's last touch of the block.
                match grant.state.compare_exchange_weak(state, state | DONE, Ordering::AcqRel,
                                                        Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => state = now,
                }
                continue;
            }
            match grant.state.compare_exchange_weak(state, state | TAKING, Ordering::AcqRel,
                                                    Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        // TAKING: the future leaves the slot alone and does not free the block until DONE
        // (it may set LEFT meanwhile: then freeing is ours).
        // Safety: the slot is ours while TAKING is set (see above).
        let waker = unsafe { (*grant.waker.get()).take() };
        #[cfg(test)]
        tests::window();
        let before = grant.state.fetch_or(DONE, Ordering::AcqRel);
        if before & LEFT != 0 {
            // The future completed (it saw TAKING) or was dropped meanwhile: nobody to wake.
            // Safety: the future has let go of the block.
            unsafe { Grant::recycle(this) };
            drop(waker);
            return;
        }
        // The block may be reused from here on; the waker is ours.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The callback: runs exactly once per queued waiter, on the releasing (or closing) thread,
/// with no library lock held. It must not unwind into C, so a panicking waker aborts.
unsafe extern "C" fn on_grant(ctx: *mut c_void, status: c_int) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Safety: `ctx` is the block given to the library in `Acquire::poll`.
        unsafe { Grant::complete(ctx.cast(), status) }
    }));
    if result.is_err() {
        std::process::abort();
    }
}

// ---- What a future waits on ---------------------------------------------------------------

/// The object a future waits on.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Sem(NonNull<sys::surelock_sem>, u64),
    AMutex(NonNull<sys::surelock_amutex>),
}

impl Target {
    #[inline]
    unsafe fn try_take(self) -> c_int {
        // Safety (all calls here): live handles, guaranteed by the futures' borrows.
        match self {
            Target::Sem(s, n) => unsafe { sys::surelock_sem_tryacquire(s.as_ptr(), n) },
            Target::AMutex(m) => unsafe { sys::surelock_amutex_trylock(m.as_ptr()) },
        }
    }
    #[inline]
    unsafe fn start(self, w: *mut sys::surelock_waiter, ctx: *mut c_void) -> c_int {
        match self {
            Target::Sem(s, n) => unsafe {
                sys::surelock_sem_acquire_async(s.as_ptr(), n, w, on_grant, ctx)
            },
            Target::AMutex(m) => unsafe {
                sys::surelock_amutex_lock_async(m.as_ptr(), w, on_grant, ctx)
            },
        }
    }
    #[inline]
    unsafe fn cancel(self, w: *mut sys::surelock_waiter) -> c_int {
        match self {
            Target::Sem(s, _) => unsafe { sys::surelock_sem_cancel(s.as_ptr(), w) },
            Target::AMutex(m) => unsafe { sys::surelock_amutex_cancel(m.as_ptr(), w) },
        }
    }
    #[inline]
    unsafe fn give_back(self) -> c_int {
        match self {
            Target::Sem(s, n) => unsafe { sys::surelock_sem_release(s.as_ptr(), n) },
            Target::AMutex(m) => unsafe { sys::surelock_amutex_unlock(m.as_ptr()) },
        }
    }
}

// ---- The future's side --------------------------------------------------------------------

enum State {
    Idle,
    /// Queued in the library with this block as the callback's `ctx`.
    Queued(NonNull<Grant>),
    Done,
}

/// The acquisition engine shared by both futures. `!Unpin`: once queued, the library holds
/// the address of `waiter`.
pub(crate) struct Acquire {
    target: Target,
    /// The waited-on object's hint (see poll); valid while the future borrows the object.
    queued_lately: *const AtomicBool,
    state: State,
    /// Initialised by the library's *_async call (uninitialised until then: no memset on
    /// the fast path).
    waiter: UnsafeCell<MaybeUninit<sys::surelock_waiter>>,
    _pinned: PhantomPinned,
}

// Safety: the handles are usable from any thread; the waiter is touched by the library only
// through its own synchronisation, and by us only through `&mut self` (poll, drop); the block
// is shared with the callback only through the protocol on `Grant::state`.
unsafe impl Send for Acquire {}

impl Acquire {
    #[inline]
    pub(crate) fn new(target: Target, queued_lately: &AtomicBool) -> Acquire {
        Acquire {
            target,
            queued_lately,
            state: State::Idle,
            waiter: UnsafeCell::new(MaybeUninit::uninit()),
            _pinned: PhantomPinned,
        }
    }

    /// Ready(Ok) once this future holds the permits.
    #[inline]
    pub(crate) fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Safety: nothing is moved out; `waiter` stays where it is.
        let this = unsafe { self.get_unchecked_mut() };
        match this.state {
            State::Idle => this.start(cx),
            State::Queued(grant) => this.poll_queued(grant, cx),
            State::Done => panic!("surelock future polled after it completed"),
        }
    }

    #[inline]
    fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Uncontended, a try is the cheapest acquire (try never jumps the queue, so it
        // succeeds exactly when *_async would return 0). Contended, a failing try only costs
        // (a formatted errmsg, another RMW on the contended word): the object's
        // `queued_lately` hint skips it until an acquire succeeds at once.
        // Safety: the hint lives in the object this future borrows.
        let hint = unsafe { &*self.queued_lately };
        if !hint.load(Ordering::Relaxed) {
            // Safety: a live target.
            match unsafe { self.target.try_take() } {
                0 => {
                    self.state = State::Done;
                    return Poll::Ready(Ok(()));
                }
                errno::EBUSY => hint.store(true, Ordering::Relaxed),
                rc => {
                    self.state = State::Done;
                    return Poll::Ready(Err(Error::last(rc)));
                }
            }
        }
        let grant = Grant::new_queued(cx.waker());
        // Safety: a live target; the waiter is pinned inside this future and withdrawn by
        // Drop before it can move or be freed; `grant` stays valid until the callback is done.
        match unsafe { self.target.start(self.waiter.get().cast(), grant.as_ptr().cast()) } {
            errno::EINPROGRESS => {
                self.state = State::Queued(grant);
                Poll::Pending
            }
            rc => {
                // Acquired at once or refused: the callback never runs; the block is ours.
                // Safety: never shared.
                unsafe { Grant::recycle(grant.as_ptr()) };
                self.state = State::Done;
                if rc == 0 {
                    hint.store(false, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(Error::last(rc)))
            }
        }
    }

    #[inline]
    fn poll_queued(&mut self, grant: NonNull<Grant>, cx: &mut Context<'_>)
                   -> Poll<Result<(), Error>> {
        // Safety: our queued block, not finished with (state is still Queued).
        let status = match unsafe { Grant::poll(grant, cx.waker()) } {
            Poll::Ready(status) => status,
            Poll::Pending => return Poll::Pending,
        };
        self.state = State::Done;
        Poll::Ready(if status == 0 {
            Ok(())
        } else {
            Err(Error::new(status, "Semaphore: closed while this acquire waited".into()))
        })
    }
}

impl Drop for Acquire {
    #[inline]
    fn drop(&mut self) {
        let grant = match self.state {
            State::Queued(grant) => grant,
            _ => return,
        };
        // Safety: a live target and our queued waiter.
        let rc = unsafe { self.target.cancel(self.waiter.get().cast()) };
        if rc == 0 {
            // Withdrawn: the callback never runs, so the block is ours alone.
            // Safety: our block, never touched again by anyone.
            unsafe { Grant::recycle(grant.as_ptr()) };
            return;
        }
        if rc == errno::EALREADY {
            // Granted but not observed: we hold the permits; give them back so the next
            // waiter is served.
            // Safety: the permits are ours.
            let rc = unsafe { self.target.give_back() };
            debug_assert_eq!(rc, 0, "giving back granted permits");
        }
        // Granted or closed: the callback has run, runs or will run.
        // Safety: our block, not finished with (state was Queued).
        unsafe { Grant::leave(grant) };
    }
}

#[cfg(test)]
mod tests;
