//! `LockCollection`: HappyLock's lock collections over `surelock_group`.
//!
//! A collection takes all its locks as one step, or none, in surelock's one global order
//! (every thread and process agrees on it), so collections never deadlock against each other
//! whatever order their locks are listed in. Unlike HappyLock there is no `ThreadKey`: the
//! library itself refuses, with `Err(EDEADLK)`, a collection lock by a thread that already
//! holds a member `Mutex`/`RwLock` (or the collection), which is where a deadlock could
//! start. Listing the same lock twice is `Err(EEXIST)` when the collection is made.
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::check;
use crate::{acquired, create, errno, nanos, sys, Error, Mutex, NotSend, ReentrantMutex, RwLock};

mod sealed {
    use crate::{sys, Error};
    /// The part of [`Lockable`](super::Lockable) the user cannot call or implement.
    pub trait Sealed {
        /// # Safety
        /// `group` is a live group that is not held.
        unsafe fn add_to(&self, group: *mut sys::surelock_group) -> Result<(), Error>;
    }
}

/// What a [`LockCollection`] can hold: `&Mutex<T>`, `&RwLock<T>` (exclusive), [`Read`]
/// (shared), `&ReentrantMutex<T>`, the same by value, tuples of up to 8 of them, `Vec`s and
/// slices. `Guard` is what the collection's guard hands out for it: `&mut T` for exclusive
/// members, `&T` for shared and reentrant ones, tuples and `Vec`s of those.
///
/// Sealed: implemented only here, because the collection trusts it to name the locks it
/// adds.
pub trait Lockable<'a>: sealed::Sealed {
    type Guard;
    #[doc(hidden)]
    /// # Safety
    /// The calling thread holds every lock `add_to` added, for 'a.
    unsafe fn guard(&'a self) -> Self::Guard;
}

/// A [`RwLock`] member taken in shared mode: the collection guard gives `&T` for it.
pub struct Read<'b, T: ?Sized>(pub &'b RwLock<T>);

macro_rules! member {
    ($(impl[$($gen:tt)*] $ty:ty, $target:ty, $guard:ty, |$s:ident, $g:ident| $add:expr, |$t:ident| $get:expr;)*) => {$(
        impl<$($gen)*> sealed::Sealed for $ty {
            unsafe fn add_to(&self, $g: *mut sys::surelock_group) -> Result<(), Error> {
                let $s = self;
                // Safety: a live group (caller) and a live member handle.
                check(unsafe { $add })
            }
        }
        impl<'a, $($gen)*> Lockable<'a> for $ty where $target: 'a, Self: 'a {
            type Guard = $guard;
            unsafe fn guard(&'a self) -> $guard {
                let $t = self;
                // Safety: the caller holds the member for 'a (exclusively where `&mut`).
                unsafe { $get }
            }
        }
    )*};
}

member! {
    impl['b, T: ?Sized] &'b Mutex<T>, T, &'a mut T,
        |s, g| sys::surelock_group_add_mutex(g, s.as_raw()), |t| &mut *t.data_ptr();
    impl[T: ?Sized] Mutex<T>, T, &'a mut T,
        |s, g| sys::surelock_group_add_mutex(g, s.as_raw()), |t| &mut *t.data_ptr();
    impl['b, T: ?Sized] &'b RwLock<T>, T, &'a mut T,
        |s, g| sys::surelock_group_add_rwlock(g, s.as_raw(), sys::SURELOCK_EXCLUSIVE),
        |t| &mut *t.data_ptr();
    impl[T: ?Sized] RwLock<T>, T, &'a mut T,
        |s, g| sys::surelock_group_add_rwlock(g, s.as_raw(), sys::SURELOCK_EXCLUSIVE),
        |t| &mut *t.data_ptr();
    impl['b, T: ?Sized] Read<'b, T>, T, &'a T,
        |s, g| sys::surelock_group_add_rwlock(g, s.0.as_raw(), sys::SURELOCK_SHARED),
        |t| &*t.0.data_ptr();
    impl['b, T: ?Sized] &'b ReentrantMutex<T>, T, &'a T,
        |s, g| sys::surelock_group_add_rlock(g, s.as_raw()), |t| t.data_ref();
    impl[T: ?Sized] ReentrantMutex<T>, T, &'a T,
        |s, g| sys::surelock_group_add_rlock(g, s.as_raw()), |t| t.data_ref();
}

macro_rules! tuple {
    ($($name:ident . $idx:tt),+) => {
        impl<$($name: sealed::Sealed),+> sealed::Sealed for ($($name,)+) {
            unsafe fn add_to(&self, group: *mut sys::surelock_group) -> Result<(), Error> {
                // Safety: passed on from the caller.
                $(unsafe { self.$idx.add_to(group) }?;)+
                Ok(())
            }
        }
        impl<'a, $($name: Lockable<'a>),+> Lockable<'a> for ($($name,)+) {
            type Guard = ($($name::Guard,)+);
            unsafe fn guard(&'a self) -> Self::Guard {
                // Safety: passed on from the caller.
                ($(unsafe { self.$idx.guard() },)+)
            }
        }
    };
}
tuple!(A.0);
tuple!(A.0, B.1);
tuple!(A.0, B.1, C.2);
tuple!(A.0, B.1, C.2, D.3);
tuple!(A.0, B.1, C.2, D.3, E.4);
tuple!(A.0, B.1, C.2, D.3, E.4, F.5);
tuple!(A.0, B.1, C.2, D.3, E.4, F.5, G.6);
tuple!(A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7);

impl<L: sealed::Sealed> sealed::Sealed for Vec<L> {
    unsafe fn add_to(&self, group: *mut sys::surelock_group) -> Result<(), Error> {
        // Safety: passed on from the caller.
        self.iter().try_for_each(|l| unsafe { l.add_to(group) })
    }
}
impl<'a, L: Lockable<'a>> Lockable<'a> for Vec<L> {
    type Guard = Vec<L::Guard>;
    unsafe fn guard(&'a self) -> Self::Guard {
        // Safety: passed on from the caller.
        self.iter().map(|l| unsafe { l.guard() }).collect()
    }
}

impl<L: sealed::Sealed> sealed::Sealed for &[L] {
    unsafe fn add_to(&self, group: *mut sys::surelock_group) -> Result<(), Error> {
        // Safety: passed on from the caller.
        self.iter().try_for_each(|l| unsafe { l.add_to(group) })
    }
}
impl<'a, 'b: 'a, L: Lockable<'a>> Lockable<'a> for &'b [L] {
    type Guard = Vec<L::Guard>;
    unsafe fn guard(&'a self) -> Self::Guard {
        // Safety: passed on from the caller.
        self.iter().map(|l| unsafe { l.guard() }).collect()
    }
}

/// Several locks taken together, all or nothing, never deadlocking against other
/// collections. Used by one thread at a time (`!Sync`), but may move between threads while
/// not held.
pub struct LockCollection<L> {
    group: NonNull<sys::surelock_group>,
    /// True from a successful lock until its guard is dropped (forever, if it is forgotten:
    /// then the collection refuses to lock again and leaks its group rather than free it).
    held: Cell<bool>,
    locks: L,
}

// Safety: the group may be used from any thread, one at a time; `held` keeps a forgotten
// hold from being used by another thread. Cell keeps it !Sync.
unsafe impl<L: Send> Send for LockCollection<L> {}

/// Proof that the calling thread holds every lock of a [`LockCollection`]; derefs to the
/// members' guards (`guard.0`, `guard.1`, ... for a tuple), releases them all on drop.
#[must_use = "the locks are released as soon as the guard is dropped"]
pub struct LockCollectionGuard<'a, L: Lockable<'a>> {
    collection: &'a LockCollection<L>,
    guards: L::Guard,
    owner_died: bool,
    _not_send: NotSend,
}

impl<L: sealed::Sealed> LockCollection<L> {
    /// Makes a collection of `locks`. `Err(EEXIST)` when a lock is listed twice (for
    /// HappyLock users: `try_new`, since a duplicate is found at run time).
    pub fn try_new(locks: L) -> Result<Self, Error> {
        let group = create(sys::surelock_group_new)?;
        // Safety: a new, unheld group.
        if let Err(e) = unsafe { locks.add_to(group.as_ptr()) } {
            // Safety: a group of ours, not held; its members are released from it.
            unsafe { sys::surelock_group_free(group.as_ptr()) };
            return Err(e);
        }
        Ok(LockCollection { group, held: Cell::new(false), locks })
    }
}

impl<L> LockCollection<L> {
    fn acquire<'a>(&'a self, call: impl FnOnce(*mut sys::surelock_group) -> c_int)
                   -> Result<LockCollectionGuard<'a, L>, Error>
    where L: Lockable<'a> {
        if self.held.get() {
            return Err(Error::new(errno::EDEADLK, "LockCollection: already held (a guard of \
                                                    it is alive or was forgotten)".into()));
        }
        let owner_died = acquired(call(self.group.as_ptr()))?;
        self.held.set(true);
        // Safety: the group holds every member on this thread until the guard is dropped.
        let guards = unsafe { self.locks.guard() };
        Ok(LockCollectionGuard { collection: self, guards, owner_died, _not_send: PhantomData })
    }

    /// Takes every lock, blocking member by member in the global order. `Err`: `EDEADLK`
    /// (this thread holds a member `Mutex`/`RwLock`, or a member `ReentrantMutex` out of
    /// order, or the collection: nothing taken), or a member's own error with nothing held.
    pub fn lock<'a>(&'a self) -> Result<LockCollectionGuard<'a, L>, Error>
    where L: Lockable<'a> {
        // Safety: our live group.
        self.acquire(|g| unsafe { sys::surelock_group_lock(g) })
    }

    /// Takes every lock only if none needs waiting: `Err(EBUSY)`, holding nothing.
    pub fn try_lock<'a>(&'a self) -> Result<LockCollectionGuard<'a, L>, Error>
    where L: Lockable<'a> {
        // Safety: our live group.
        self.acquire(|g| unsafe { sys::surelock_group_trylock(g) })
    }

    /// Takes every lock within `timeout` in all: `Err(ETIMEDOUT)`, holding nothing.
    pub fn lock_timeout<'a>(&'a self, timeout: Duration) -> Result<LockCollectionGuard<'a, L>, Error>
    where L: Lockable<'a> {
        // Safety: our live group.
        self.acquire(|g| unsafe { sys::surelock_group_timedlock(g, nanos(timeout)) })
    }

    /// How many locks it holds.
    pub fn len(&self) -> usize {
        // Safety: our live group.
        unsafe { sys::surelock_group_size(self.group.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The locks back, if the collection is not held.
    pub fn into_inner(self) -> Result<L, Self> {
        // Safety: our group; EBUSY (held through a forgotten guard) frees nothing.
        if self.held.get() || unsafe { sys::surelock_group_free(self.group.as_ptr()) } != 0 {
            return Err(self);
        }
        // Safety: the group is gone; move the locks out and skip Drop.
        let locks = unsafe { std::ptr::read(&self.locks) };
        std::mem::forget(self);
        Ok(locks)
    }
}

impl<L> Drop for LockCollection<L> {
    fn drop(&mut self) {
        if !self.held.get() {
            // Safety: our group, not held. (Freed before the members, which drop after.)
            unsafe { sys::surelock_group_free(self.group.as_ptr()) };
        }
        // Held through a forgotten guard: leak the group; its members stay unfreeable
        // (their drops leak them too) rather than be freed while held.
    }
}

impl<L> fmt::Debug for LockCollection<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockCollection").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl<'a, L: Lockable<'a>> LockCollectionGuard<'a, L> {
    /// Some member's previous owner thread exited holding it (`EOWNERDEAD`); everything is
    /// held and usable, but what that member protects may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<'a, L: Lockable<'a>> Deref for LockCollectionGuard<'a, L> {
    type Target = L::Guard;
    fn deref(&self) -> &L::Guard {
        &self.guards
    }
}

impl<'a, L: Lockable<'a>> DerefMut for LockCollectionGuard<'a, L> {
    fn deref_mut(&mut self) -> &mut L::Guard {
        &mut self.guards
    }
}

impl<'a, L: Lockable<'a>> Drop for LockCollectionGuard<'a, L> {
    fn drop(&mut self) {
        // Safety: this thread holds the group (the guard is !Send).
        let rc = unsafe { sys::surelock_group_unlock(self.collection.group.as_ptr()) };
        debug_assert_eq!(rc, 0, "surelock_group_unlock");
        self.collection.held.set(false);
    }
}

impl<'a, L: Lockable<'a>> fmt::Debug for LockCollectionGuard<'a, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockCollectionGuard").field("owner_died", &self.owner_died)
            .finish_non_exhaustive()
    }
}
