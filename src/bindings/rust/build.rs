//! Finds libsurelock.so.1 and links it dynamically (never a static or bundled copy: the
//! process-wide named guards are shared only through the one shared library).
//!
//! Where from, in this order:
//!  1. `SURELOCK_BUILD_DIR`: a meson build directory of this repository (how the crate's
//!     tests run): links `$SURELOCK_BUILD_DIR/libsurelock.so` with an rpath to it for this
//!     package's tests and examples, and the test-only C library
//!     `src/bindings/rust/libsurelock_test_unsafe.a` meson builds there.
//!  2. `pkg-config surelock` (an installed package): its -L directory, with an rpath when
//!     that directory is not one the dynamic loader searches anyway.
//!
//! The header used by `tests/header.rs` is `SURELOCK_HEADER`, else the repository's
//! `include/surelock.h`, else pkg-config's includedir. Every function that header declares
//! becomes `cfg(surelock_has = "<name>")`, so `src/sys.rs` can declare functions of newer
//! headers without breaking older ones.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
        .args(args)
        .arg("surelock")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn link_dir(dir: &Path, rpath: bool) {
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=surelock");
    if rpath {
        // Applies to this package's tests, examples and benches (a dependent crate sets its
        // own rpath or LD_LIBRARY_PATH).
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    println!("cargo:lib_dir={}", dir.display());
}

/// The names of the functions the header declares (`SURELOCK_API <type> <name>(`).
fn header_functions(header: &str) -> Vec<String> {
    let mut names = Vec::new();
    for decl in header.split("SURELOCK_API").skip(1) {
        let head = match decl.find('(') {
            Some(i) => &decl[..i],
            None => continue,
        };
        let name: String = head
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if name.starts_with("surelock_") {
            names.push(name);
        }
    }
    names
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SURELOCK_BUILD_DIR");
    println!("cargo:rerun-if-env-changed=SURELOCK_HEADER");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());

    let mut header = env::var_os("SURELOCK_HEADER").map(PathBuf::from);
    if let Some(build_dir) = env::var_os("SURELOCK_BUILD_DIR").filter(|d| !d.is_empty()) {
        let build_dir = PathBuf::from(build_dir);
        let build_dir = build_dir.canonicalize().unwrap_or(build_dir);
        if !build_dir.join("libsurelock.so").exists() {
            panic!("SURELOCK_BUILD_DIR={}: no libsurelock.so there (run meson compile first)",
                   build_dir.display());
        }
        link_dir(&build_dir, true);
        let test_lib_dir = build_dir.join("src/bindings/rust");
        let test_lib = test_lib_dir.join("libsurelock_test_unsafe.a");
        println!("cargo:rerun-if-changed={}", test_lib.display());
        if test_lib.exists() {
            // Only a search path: tests/rlock.rs names the library in its own #[link].
            println!("cargo:rustc-link-search=native={}", test_lib_dir.display());
            println!("cargo:rustc-cfg=surelock_test_unsafe_lib");
        }
    } else if let Some(libdir) = pkg_config(&["--variable=libdir"]) {
        let dir = PathBuf::from(libdir);
        let system = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"].iter().any(|s| dir.starts_with(s));
        link_dir(&dir, !system);
        if header.is_none() {
            if let Some(inc) = pkg_config(&["--variable=includedir"]) {
                header = Some(PathBuf::from(inc).join("surelock.h"));
            }
        }
    } else {
        panic!("libsurelock not found: install it (pkg-config surelock), or set \
                SURELOCK_BUILD_DIR to a meson build directory of surelock");
    }

    let repo_header = manifest.join("../../../include/surelock.h");
    let header = header.or_else(|| if repo_header.exists() { Some(repo_header) } else { None });
    if let Some(header) = header {
        println!("cargo:rerun-if-changed={}", header.display());
        println!("cargo:rustc-env=SURELOCK_HEADER_PATH={}", header.display());
        if let Ok(text) = std::fs::read_to_string(&header) {
            for name in header_functions(&text) {
                println!("cargo:rustc-cfg=surelock_has=\"{}\"", name);
            }
        }
    }
}
