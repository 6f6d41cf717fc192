//! LockCollection: HappyLock's README examples, all-or-nothing, never deadlocking.
mod common;

use common::{on_thread, watchdog, LONG, SHORT};
use std::sync::Arc;
use std::time::Instant;
use surelock::errno::*;
use surelock::{LockCollection, Mutex, Read, ReentrantMutex, RwLock};

/// HappyLock's first README example: N threads each add 1 to one mutex (here through a
/// collection of one; no ThreadKey: the library refuses a deadlocking re-lock itself).
#[test]
fn happylock_readme_one_counter_shared_by_ten_threads() {
    watchdog();
    const N: usize = 10;
    let data = Mutex::new(0i32);
    std::thread::scope(|s| {
        for _ in 0..N {
            s.spawn(|| {
                let collection = LockCollection::try_new((&data,)).unwrap();
                let mut guard = collection.lock().unwrap();
                *guard.0 += 1;
            });
        }
    });
    let collection = LockCollection::try_new((&data,)).unwrap();
    let guard = collection.lock().unwrap();
    assert_eq!(*guard.0, N as i32);
}

/// HappyLock's second README example: two mutexes locked together by every thread.
#[test]
fn happylock_readme_two_mutexes_locked_together() {
    watchdog();
    const N: usize = 10;
    let data_1 = Mutex::new(0i32);
    let data_2 = Mutex::new(String::new());
    std::thread::scope(|s| {
        for i in 0..N {
            let (data_1, data_2) = (&data_1, &data_2);
            s.spawn(move || {
                // Half the threads list them the other way round: still no deadlock.
                if i % 2 == 0 {
                    let collection = LockCollection::try_new((data_1, data_2)).unwrap();
                    let mut guard = collection.lock().unwrap();
                    *guard.1 = (100 - *guard.0).to_string();
                    *guard.0 += 1;
                } else {
                    let collection = LockCollection::try_new((data_2, data_1)).unwrap();
                    let mut guard = collection.lock().unwrap();
                    *guard.0 = (100 - *guard.1).to_string();
                    *guard.1 += 1;
                }
            });
        }
    });
    let data = LockCollection::try_new((&data_1, &data_2)).unwrap();
    let data = data.lock().unwrap();
    assert_eq!(*data.0, N as i32);
    assert_eq!(*data.1, (100 - (N as i32 - 1)).to_string());
}

#[test]
fn dining_philosophers_in_opposite_orders_never_deadlock() {
    watchdog();
    let forks: Vec<Mutex<u64>> = (0..5).map(|_| Mutex::new(0)).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for p in 0..5 {
            let forks = &forks;
            s.spawn(move || {
                let (left, right) = (&forks[p], &forks[(p + 1) % 5]);
                let pair = if p % 2 == 0 { vec![left, right] } else { vec![right, left] };
                let collection = LockCollection::try_new(pair).unwrap();
                for _ in 0..500 {
                    let mut g = collection.lock_timeout(LONG).expect("a philosopher starved");
                    *g[0] += 1;
                    *g[1] += 1;
                }
            });
        }
    });
    assert!(start.elapsed() < LONG);
    let total: u64 = forks.iter().map(|f| *f.lock().unwrap()).sum();
    assert_eq!(total, 5 * 500 * 2);
}

#[test]
fn the_same_lock_twice_is_eexist_not_a_deadlock() {
    watchdog();
    let a = Mutex::new(1);
    let b = RwLock::new(2);
    let e = LockCollection::try_new((&a, &b, &a)).unwrap_err();
    assert_eq!(e.code(), EEXIST);
    assert!(!e.message().is_empty());
    assert_eq!(LockCollection::try_new(vec![&a, &a]).unwrap_err().code(), EEXIST);
    assert_eq!(LockCollection::try_new((&b, Read(&b))).unwrap_err().code(), EEXIST);
    // Nothing leaked into a group: both locks are still free and freeable.
    assert_eq!(a.into_inner().ok(), Some(1));
    assert_eq!(b.into_inner().ok(), Some(2));
}

#[test]
fn a_member_the_thread_already_holds_is_edeadlk_with_nothing_taken() {
    watchdog();
    let (a, b) = (Mutex::new(0), Mutex::new(0));
    let c = LockCollection::try_new((&a, &b)).unwrap();
    let held = b.lock().unwrap();
    assert_eq!(c.lock().unwrap_err().code(), EDEADLK);
    assert_eq!(c.try_lock().unwrap_err().code(), EDEADLK);
    drop(held);
    // a was not left taken by the refused collection:
    drop(a.try_lock().unwrap());
    let g = c.lock().unwrap();
    // The collection itself again, while its guard lives:
    assert_eq!(c.lock().unwrap_err().code(), EDEADLK);
    assert_eq!(a.lock().unwrap_err().code(), EDEADLK); // a member, directly
    drop(g);
    assert_eq!(c.len(), 2);
}

#[test]
fn busy_members_make_try_busy_and_timed_time_out_holding_nothing() {
    watchdog();
    let a = Arc::new(Mutex::new(0));
    let b = Arc::new(RwLock::new(0));
    let held = b.read().unwrap(); // a reader elsewhere blocks the collection's writer
    let (a2, b2) = (a.clone(), b.clone());
    let seen = on_thread(LONG, move || {
        let c = LockCollection::try_new((&*a2, &*b2)).unwrap();
        let busy = c.try_lock().unwrap_err().code();
        let start = Instant::now();
        let late = c.lock_timeout(SHORT).unwrap_err().code();
        let waited = start.elapsed();
        let a_free = a2.try_lock().is_ok(); // the collection backed out of `a`
        // But a shared member is compatible with the reader:
        let shared = LockCollection::try_new((&*a2, Read(&*b2))).unwrap();
        let ok = shared.try_lock().map(|g| *g.1).ok();
        (busy, late, waited >= SHORT, a_free, ok)
    });
    assert_eq!(seen, (EBUSY, ETIMEDOUT, true, true, Some(0)));
    drop(held);
}

#[test]
fn reentrant_members_give_shared_access_and_owned_members_come_back() {
    watchdog();
    let r = ReentrantMutex::new(String::from("shared"));
    let third = RwLock::new(3);
    let owned = LockCollection::try_new((Mutex::new(1), RwLock::new(2), Read(&third))).unwrap();
    {
        let c = LockCollection::try_new((&r,)).unwrap();
        let g = c.lock().unwrap();
        assert_eq!(g.0.as_str(), "shared");
        assert_eq!(r.depth(), 1);
        let again = r.lock().unwrap(); // the reentrant member re-entered directly
        assert_eq!(r.depth(), 2);
        drop(again);
    }
    assert_eq!(r.depth(), 0);
    {
        let mut g = owned.lock().unwrap();
        *g.0 += 10;
        *g.1 += 20;
        assert_eq!(*g.2, 3);
        assert!(!g.owner_died());
    }
    let (m, l, _) = owned.into_inner().ok().unwrap();
    assert_eq!((m.into_inner().ok(), l.into_inner().ok()), (Some(11), Some(22)));
}

#[test]
fn slices_of_locks_are_taken_all_or_nothing() {
    watchdog();
    let locks: Vec<Mutex<usize>> = (0..8).map(Mutex::new).collect();
    let c = LockCollection::try_new(&locks[..]).unwrap();
    assert_eq!(c.len(), 8);
    {
        let mut g = c.lock().unwrap();
        for (i, v) in g.iter_mut().enumerate() {
            assert_eq!(**v, i);
            **v *= 2;
        }
    }
    std::thread::scope(|s| {
        // One member held on another thread: the whole collection is busy.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let last = &locks[7];
        let holder = s.spawn(move || {
            let _g = last.lock().unwrap();
            ready_tx.send(()).unwrap();
            let _ = go_rx.recv_timeout(LONG);
        });
        ready_rx.recv_timeout(LONG).unwrap();
        assert_eq!(c.try_lock().unwrap_err().code(), EBUSY);
        assert!(locks[0].try_lock().is_ok(), "nothing taken by the failed try");
        go_tx.send(()).unwrap();
        holder.join().unwrap();
    });
    let g = c.lock_timeout(LONG).unwrap();
    assert_eq!(*g[7], 14);
}

#[test]
fn owner_death_of_a_member_is_success_for_the_collection() {
    watchdog();
    let a = Arc::new(Mutex::new(0));
    let b = Mutex::new(0);
    let a2 = a.clone();
    on_thread(LONG, move || std::mem::forget(a2.lock().unwrap()));
    let c = LockCollection::try_new((&*a, &b)).unwrap();
    let g = c.lock_timeout(LONG).unwrap();
    assert!(g.owner_died());
    drop(g);
    assert!(!c.lock().unwrap().owner_died());
}

#[test]
fn a_forgotten_collection_guard_keeps_everything_held_and_freed_nothing() {
    watchdog();
    let a = Mutex::new(0);
    let c = LockCollection::try_new((&a,)).unwrap();
    std::mem::forget(c.lock().unwrap());
    assert_eq!(c.lock().unwrap_err().code(), EDEADLK);
    let c = c.into_inner().unwrap_err(); // held: not freed
    drop(c); // leaks the group (a stays a member, held by this thread)
    assert_eq!(a.lock().unwrap_err().code(), EDEADLK);
    std::mem::forget(a); // a member of a leaked group: freeing it would be refused anyway
}
