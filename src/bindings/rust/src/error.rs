//! The one error type: the errno the library returned and its `surelock_errmsg()` text.
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::raw::c_int;

use crate::sys;

/// Linux errno values the library returns (the same on every Linux architecture it supports).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const EDEADLK: i32 = 35;
    pub const ELOOP: i32 = 40;
    pub const EPROTO: i32 = 71;
    pub const ETIMEDOUT: i32 = 110;
    pub const EALREADY: i32 = 114;
    pub const EINPROGRESS: i32 = 115;
    pub const ECANCELED: i32 = 125;
    pub const EOWNERDEAD: i32 = 130;
    pub const ENOTRECOVERABLE: i32 = 131;
}

/// A failed surelock call: the positive errno it returned and the library's explanation
/// (`surelock_errmsg()`, copied at once, since the library's buffer is thread-local and
/// overwritten by the thread's next call).
///
/// `EOWNERDEAD` is never an `Error`: it means the lock was acquired, and the guard's
/// `owner_died()` says so.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    code: i32,
    message: String,
}

impl Error {
    /// The error of the surelock call that just returned `code` on this thread.
    pub(crate) fn last(code: c_int) -> Error {
        // Safety: never NULL; valid until this thread's next surelock call, and copied now.
        let text = unsafe { CStr::from_ptr(sys::surelock_errmsg()) };
        Error { code, message: text.to_string_lossy().into_owned() }
    }

    /// An error found by the binding itself, before calling the library.
    pub(crate) fn new(code: i32, message: String) -> Error {
        Error { code, message }
    }

    /// The positive errno value (see [`errno`]).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The library's explanation, e.g. `"/tmp/q.lock: owned by uid 1001, ..."`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `std::io::ErrorKind` of this errno.
    pub fn kind(&self) -> io::ErrorKind {
        io::Error::from_raw_os_error(self.code).kind()
    }
}

#[inline]
pub(crate) fn check(rc: c_int) -> Result<(), Error> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::last(rc))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.code);
        if self.message.is_empty() {
            write!(f, "{}", os)
        } else {
            write!(f, "{} ({})", self.message, os)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error").field("code", &self.code).field("message", &self.message).finish()
    }
}

impl std::error::Error for Error {}

/// Keeps the errno's kind and the whole `Error` (reach it with `get_ref()` and `downcast_ref`).
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}
