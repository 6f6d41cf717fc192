//! AsyncMutex and Semaphore: tokio's seed scenario, FIFO, cancellation by drop at every stage.
mod common;

use common::{block_on, flag_waker, poll_once, tokio_rt, watchdog, Executor, LONG};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::Poll;
use surelock::errno::*;
use surelock::{AsyncMutex, Semaphore};

/// tokio's Mutex documentation scenario: ten tasks each add 1 a hundred times, holding the
/// guard across an `.await`, on a 2-worker runtime (tasks move between threads).
#[test]
fn ten_tasks_each_adding_one_a_hundred_times_under_tokio() {
    watchdog();
    let rt = tokio_rt();
    let total = rt.block_on(async {
        let count = Arc::new(AsyncMutex::new(0u32));
        let tasks: Vec<_> = (0..10).map(|_| {
            let count = count.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let mut g = count.lock().await;
                    let v = *g;
                    tokio::task::yield_now().await; // held across a suspension point
                    *g = v + 1;
                }
            })
        }).collect();
        for t in tasks {
            tokio::time::timeout(LONG, t).await.expect("tasks hung").unwrap();
        }
        let g = count.lock().await;
        *g
    });
    assert_eq!(total, 1000);
}

/// The same on a hand-written executor per OS thread (no runtime at all): wake-ups come from
/// the C callback on whichever thread released.
#[test]
fn ten_threads_with_a_hand_written_executor_each_adding_one_a_hundred_times() {
    watchdog();
    let count = Arc::new(AsyncMutex::new(0u32));
    let threads: Vec<_> = (0..10).map(|_| {
        let count = count.clone();
        std::thread::spawn(move || block_on(async {
            for _ in 0..100 {
                let mut g = count.lock().await;
                let v = *g;
                std::thread::yield_now();
                *g = v + 1;
            }
        }, LONG))
    }).collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*count.try_lock().unwrap(), 1000);
    assert_eq!(Arc::try_unwrap(count).unwrap().into_inner(), 1000);
}

#[test]
fn waiters_are_served_in_fifo_order_and_a_dropped_one_is_skipped() {
    watchdog();
    let m = AsyncMutex::new(Vec::new());
    let holder = m.try_lock().unwrap();
    {
        let mut ex = Executor::new();
        for i in 0..2 {
            let m = &m;
            ex.spawn(async move { m.lock().await.push(i) });
        }
        let mut dropped = Box::pin(m.lock());
        let (_, waker) = flag_waker();
        assert!(poll_once(dropped.as_mut(), &waker).is_pending());
        for i in 2..5 {
            let m = &m;
            ex.spawn(async move { m.lock().await.push(i) });
        }
        drop(dropped); // withdrawn while queued: skipped
        drop(holder); // grants task 0; each guard's drop grants the next
        ex.run(LONG);
    }
    assert_eq!(*m.try_lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn cancellation_by_drop_at_every_stage_leaves_the_mutex_usable() {
    watchdog();
    let m = AsyncMutex::new(0);
    // 1. Never polled: nothing was queued.
    drop(m.lock());
    drop(m.try_lock().unwrap());
    // 2. Ready at once (fast path), guard dropped.
    drop(block_on(m.lock(), LONG));
    // 3. Queued, then dropped before the grant: the next waiter is served.
    let holder = m.try_lock().unwrap();
    let (first_flag, first_waker) = flag_waker();
    let (second_flag, second_waker) = flag_waker();
    let mut first = Box::pin(m.lock());
    let mut second = Box::pin(m.lock());
    assert!(poll_once(first.as_mut(), &first_waker).is_pending());
    assert!(poll_once(second.as_mut(), &second_waker).is_pending());
    drop(first);
    drop(holder);
    assert!(!first_flag.woken.load(Ordering::Acquire), "a withdrawn waiter is never woken");
    assert!(second_flag.woken.load(Ordering::Acquire));
    match poll_once(second.as_mut(), &second_waker) {
        Poll::Ready(g) => drop(g),
        Poll::Pending => panic!("granted but pending"),
    }
    drop(second);
    // 4. Granted (the callback ran and woke it) but dropped before it was polled again: the
    //    drop gives the lock back (cancel says EALREADY).
    let holder = m.try_lock().unwrap();
    let (flag, waker) = flag_waker();
    let mut granted = Box::pin(m.lock());
    assert!(poll_once(granted.as_mut(), &waker).is_pending());
    drop(holder);
    assert!(flag.woken.load(Ordering::Acquire));
    assert_eq!(m.try_lock().unwrap_err().code(), EBUSY, "held for the granted future");
    drop(granted);
    drop(m.try_lock().expect("the granted-then-dropped future gave the lock back"));
    // 5. The waker is replaced when the task moves: only the latest one is woken.
    let holder = m.try_lock().unwrap();
    let (old_flag, old_waker) = flag_waker();
    let (new_flag, new_waker) = flag_waker();
    let mut moved = Box::pin(m.lock());
    assert!(poll_once(moved.as_mut(), &old_waker).is_pending());
    assert!(poll_once(moved.as_mut(), &new_waker).is_pending());
    drop(holder);
    assert!(new_flag.woken.load(Ordering::Acquire) && !old_flag.woken.load(Ordering::Acquire));
    assert!(poll_once(moved.as_mut(), &new_waker).is_ready());
    // 6. After waits (the mutex now skips its first try), a free mutex is still granted at
    //    once, without queueing.
    let mut again = Box::pin(m.lock());
    assert!(matches!(poll_once(again.as_mut(), &new_waker), Poll::Ready(_)));
    drop(m.try_lock().unwrap());
}

#[test]
fn a_drop_racing_the_grant_never_loses_or_doubles_the_lock() {
    watchdog();
    let m = Arc::new(AsyncMutex::new(0u64));
    for round in 0..2000 {
        let holder = m.try_lock().unwrap();
        let (_, waker) = flag_waker();
        let mut fut = Box::pin(m.lock());
        assert!(poll_once(fut.as_mut(), &waker).is_pending());
        // Release on another thread while this one drops the queued future: either the
        // cancel wins (0) or the grant does (EALREADY, given back). Both leave it free.
        std::thread::scope(|s| {
            s.spawn(move || drop(holder));
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            drop(fut);
        });
        drop(m.try_lock().unwrap_or_else(|e| panic!("round {}: lock lost: {}", round, e)));
    }
}

#[test]
fn a_timed_out_lock_under_tokio_is_withdrawn_and_later_lockers_are_served() {
    watchdog();
    let rt = tokio_rt();
    rt.block_on(async {
        let m = Arc::new(AsyncMutex::new(()));
        let holder = m.lock().await;
        let late = tokio::time::timeout(std::time::Duration::from_millis(20), m.lock()).await;
        assert!(late.is_err(), "timed out while held");
        let m2 = m.clone();
        let next = tokio::spawn(async move { drop(m2.lock().await) });
        tokio::task::yield_now().await;
        // The guard is Send: release it from another thread.
        std::thread::scope(|s| {
            s.spawn(move || drop(holder));
        });
        tokio::time::timeout(LONG, next).await.expect("next locker starved").unwrap();
    });
}

#[test]
fn async_mutex_try_blocking_and_exclusive_access() {
    watchdog();
    let mut m = AsyncMutex::new(String::from("a"));
    m.get_mut().push('b');
    let g = m.try_lock().unwrap();
    let e = m.try_lock().unwrap_err();
    assert_eq!(e.code(), EBUSY);
    assert!(!e.message().is_empty());
    let m = &m;
    std::thread::scope(|s| {
        let t = s.spawn(move || m.blocking_lock().push('c'));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(g); // hands it to the blocked thread
        t.join().unwrap();
    });
    assert_eq!(*m.try_lock().unwrap(), "abc");
}

#[test]
fn semaphore_hands_permits_out_in_fifo_order_without_queue_jumping() {
    watchdog();
    let sem = Semaphore::new(3);
    assert_eq!(sem.available_permits(), 3);
    let three = sem.try_acquire_many(3).unwrap();
    assert_eq!((three.num_permits(), sem.available_permits()), (3, 0));
    let order = StdMutex::new(Vec::new());
    let mut ex = Executor::new();
    let (s, o) = (&sem, &order);
    ex.spawn(async move {
        let p = s.acquire_many(2).await.unwrap(); // the large request at the head...
        o.lock().unwrap().push(2);
        drop(p);
    });
    ex.spawn(async move {
        let _p = s.acquire().await.unwrap(); // ...holds back the small one behind it
        o.lock().unwrap().push(1);
    });
    sem.add_permits(1).unwrap();
    assert_eq!(sem.available_permits(), 1);
    assert_eq!(sem.try_acquire().unwrap_err().code(), EBUSY, "try never jumps the queue");
    drop(three); // 1 + 3 permits: the head (2) is served, then the next (1)
    ex.run(LONG);
    assert_eq!(*order.lock().unwrap(), vec![2, 1]);
    assert_eq!(sem.available_permits(), 4);
    sem.try_acquire().unwrap().forget();
    assert_eq!(sem.available_permits(), 3);
}

#[test]
fn dropping_a_granted_acquire_gives_all_its_permits_back() {
    watchdog();
    let sem = Semaphore::new(5);
    let all = sem.try_acquire_many(5).unwrap();
    let (flag, waker) = flag_waker();
    let mut fut = Box::pin(sem.acquire_many(4));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    drop(all);
    assert!(flag.woken.load(Ordering::Acquire));
    assert_eq!(sem.available_permits(), 1, "4 handed to the future");
    drop(fut);
    assert_eq!(sem.available_permits(), 5);
}

#[test]
fn close_cancels_queued_and_later_acquires() {
    watchdog();
    let sem = Semaphore::new(1);
    let held = sem.try_acquire().unwrap();
    let (flag, waker) = flag_waker();
    let mut polled = Box::pin(sem.acquire());
    let mut unpolled = Box::pin(sem.acquire_many(1));
    assert!(poll_once(polled.as_mut(), &waker).is_pending());
    assert!(poll_once(unpolled.as_mut(), &waker).is_pending());
    assert!(!sem.is_closed());
    sem.close();
    assert!(sem.is_closed() && flag.woken.load(Ordering::Acquire));
    match poll_once(polled.as_mut(), &waker) {
        Poll::Ready(Err(e)) => assert_eq!(e.code(), ECANCELED),
        other => panic!("expected ECANCELED, got {:?}", other),
    }
    drop(unpolled); // cancelled before it saw it: nothing to give back
    assert_eq!(sem.try_acquire().unwrap_err().code(), ECANCELED);
    let e = block_on(sem.acquire(), LONG).unwrap_err();
    assert_eq!(e.code(), ECANCELED);
    assert!(!e.message().is_empty());
    assert_eq!(sem.blocking_acquire_many(1).unwrap_err().code(), ECANCELED);
    drop(held); // permits already held can still be returned
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn bad_permit_counts_are_errors() {
    watchdog();
    let max = Semaphore::MAX_PERMITS;
    assert_eq!(Semaphore::try_new(max + 1).unwrap_err().code(), EINVAL);
    let sem = Semaphore::try_new(max).unwrap();
    assert_eq!(sem.available_permits() as u64, max);
    assert_eq!(sem.add_permits(1).unwrap_err().code(), EAGAIN);
    sem.add_permits(0).unwrap(); // tokio's shape: nothing to add
    assert_eq!(sem.try_acquire_many(0).unwrap_err().code(), EINVAL);
    assert_eq!(sem.try_acquire_many(max + 1).unwrap_err().code(), EINVAL);
    assert_eq!(block_on(sem.acquire_many(0), LONG).unwrap_err().code(), EINVAL);
    assert_eq!(block_on(sem.acquire_many(max + 1), LONG).unwrap_err().code(), EINVAL);
    assert_eq!(sem.blocking_acquire_many(0).unwrap_err().code(), EINVAL);
    let all = block_on(sem.acquire_many(max), LONG).unwrap();
    assert_eq!(sem.available_permits(), 0);
    drop(all);
}

#[test]
#[should_panic(expected = "at most 2^61-1 permits")]
fn semaphore_new_beyond_the_maximum_panics_as_tokio_does() {
    let _ = Semaphore::new(Semaphore::MAX_PERMITS as usize + 1);
}

#[test]
fn permits_and_guards_are_send_and_released_from_other_threads() {
    watchdog();
    let sem = Arc::new(Semaphore::new(1));
    let p = block_on(sem.acquire(), LONG).unwrap();
    let sem2 = sem.clone();
    let waiter = std::thread::spawn(move || {
        block_on(sem2.acquire(), LONG).map(|p| p.num_permits()).unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::thread::scope(|s| {
        s.spawn(move || drop(p)); // released on a third thread: wakes the waiter's executor
    });
    assert_eq!(waiter.join().unwrap(), 1);
    assert_eq!(sem.available_permits(), 1);
}

fn _futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let m = AsyncMutex::new(0);
    let s = Semaphore::new(1);
    let f = m.lock();
    send(&f);
    let g = s.acquire();
    send(&g);
    let _: &dyn Future<Output = _> = &f;
}
