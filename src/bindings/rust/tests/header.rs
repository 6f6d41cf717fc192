//! `src/sys.rs` against `include/surelock.h`: every function the header declares is declared
//! in sys exactly once with the same number of parameters, and sys declares nothing else
//! (except functions gated on `surelock_has`, which a newer header adds). Also the constants.
use std::collections::BTreeMap;

const SYS: &str = include_str!("../src/sys.rs");

fn header_text() -> String {
    let path = match option_env!("SURELOCK_HEADER_PATH") {
        Some(path) => path,
        None => panic!("build.rs found no surelock.h (set SURELOCK_HEADER)"),
    };
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {}", path, e))
}

/// Parameters between the parentheses that open at `open` (no nested parentheses in
/// these declarations): `()` and `(void)` are 0.
fn arity(params: &str) -> usize {
    let p = params.trim();
    if p.is_empty() || p == "void" {
        0
    } else {
        p.split(',').count()
    }
}

fn ident_before(text: &str) -> String {
    let rev: String = text.trim_end().chars().rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    rev.chars().rev().collect()
}

/// name -> arity for every `SURELOCK_API <type> name(params);` of the header.
fn header_functions(header: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for decl in header.split("SURELOCK_API").skip(1) {
        let (open, close) = match (decl.find('('), decl.find(')')) {
            (Some(o), Some(c)) if o < c => (o, c),
            _ => continue, // the macro's own #define lines
        };
        let name = ident_before(&decl[..open]);
        if !name.starts_with("surelock_") {
            continue;
        }
        // Strip comments inside the parameter list (e.g. /* NULL = defaults */).
        let mut params = decl[open + 1..close].to_owned();
        while let (Some(a), Some(b)) = (params.find("/*"), params.find("*/")) {
            params.replace_range(a..b + 2, "");
        }
        assert!(out.insert(name.clone(), arity(&params)).is_none(), "{} twice in the header", name);
    }
    out
}

struct SysDecl {
    arity: usize,
    gated: bool,
    count: usize,
}

/// name -> declaration for every `pub fn surelock_*(...)` inside sys's extern block.
fn sys_functions() -> BTreeMap<String, SysDecl> {
    let block = &SYS[SYS.find("extern \"C\" {").expect("no extern block in sys.rs")..];
    let mut out: BTreeMap<String, SysDecl> = BTreeMap::new();
    let mut rest = block;
    while let Some(at) = rest.find("pub fn surelock_") {
        let before = &rest[..at];
        let decl = &rest[at + "pub fn ".len()..];
        let open = decl.find('(').unwrap();
        let close = decl.find(')').unwrap();
        let name = decl[..open].trim().to_owned();
        let last_line = before.trim_end().lines().last().unwrap_or("");
        let gated = last_line.trim() == format!("#[cfg(surelock_has = \"{}\")]", name);
        let e = out.entry(name).or_insert(SysDecl { arity: arity(&decl[open + 1..close]), gated,
                                                    count: 0 });
        e.count += 1;
        rest = &decl[close..];
    }
    out
}

#[test]
fn sys_declares_every_header_function_once_with_the_same_arity() {
    let header = header_functions(&header_text());
    let sys = sys_functions();
    assert!(header.len() >= 70, "parsed only {} header functions", header.len());
    let mut problems = Vec::new();
    for (name, &n) in &header {
        match sys.get(name) {
            None => problems.push(format!("{} ({} parameters) is not declared in sys.rs", name, n)),
            Some(d) if d.count != 1 => problems.push(format!("{} declared {} times", name, d.count)),
            Some(d) if d.arity != n => problems.push(format!(
                "{}: {} parameters in the header, {} in sys.rs", name, n, d.arity)),
            _ => {}
        }
    }
    for (name, d) in &sys {
        if !header.contains_key(name) && !d.gated {
            problems.push(format!("{} is in sys.rs but not in the header (gate it on \
                                   #[cfg(surelock_has = \"{}\")] if a newer header adds it)",
                                  name, name));
        }
    }
    assert!(problems.is_empty(), "sys.rs vs surelock.h:\n{}", problems.join("\n"));
}

#[test]
fn the_header_check_sees_a_missing_declaration_and_a_wrong_arity() {
    // The checker itself can fail: a header with one function more and one arity changed.
    let mut header = header_text();
    header.push_str("\nSURELOCK_API int surelock_not_in_sys(int fd);\n");
    let header = header.replace("surelock_mutex_lock(surelock_mutex *m)",
                                "surelock_mutex_lock(surelock_mutex *m, int extra)");
    let parsed = header_functions(&header);
    let sys = sys_functions();
    assert_eq!(parsed.get("surelock_not_in_sys"), Some(&1));
    assert!(!sys.contains_key("surelock_not_in_sys"));
    assert_eq!(parsed["surelock_mutex_lock"], 2);
    assert_eq!(sys["surelock_mutex_lock"].arity, 1);
    assert_eq!(parsed["surelock_version"], 0);
    assert_eq!(parsed["surelock_sem_acquire_async"], 5);
    assert_eq!(sys["surelock_sem_acquire_async"].arity, 5);
}

fn define(header: &str, name: &str) -> u64 {
    let line = header.lines().find(|l| l.starts_with(&format!("#define {} ", name)))
        .unwrap_or_else(|| panic!("#define {} not found", name));
    let value = line.split_whitespace().nth(2).unwrap();
    let digits: String = value.trim_start_matches("((uint64_t)").trim_end_matches(')')
        .trim_end_matches('u').to_owned();
    if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).unwrap()
    } else {
        digits.parse().unwrap()
    }
}

#[test]
fn sys_constants_match_the_header() {
    use surelock::sys::*;
    let h = header_text();
    assert_eq!(define(&h, "SURELOCK_VERSION_MAJOR"), SURELOCK_VERSION_MAJOR as u64);
    assert_eq!(define(&h, "SURELOCK_VERSION_MINOR"), SURELOCK_VERSION_MINOR as u64);
    assert_eq!(define(&h, "SURELOCK_EXCLUSIVE"), SURELOCK_EXCLUSIVE as u64);
    assert_eq!(define(&h, "SURELOCK_SHARED"), SURELOCK_SHARED as u64);
    assert_eq!(define(&h, "SURELOCK_IPC_NOCREATE"), SURELOCK_IPC_NOCREATE as u64);
    assert_eq!(define(&h, "SURELOCK_IPC_RECURSIVE"), SURELOCK_IPC_RECURSIVE as u64);
    assert_eq!(define(&h, "SURELOCK_IPC_ANY_OWNER"), SURELOCK_IPC_ANY_OWNER as u64);
    assert_eq!(define(&h, "SURELOCK_WAITER_SIZE"), SURELOCK_WAITER_SIZE as u64);
    assert_eq!(define(&h, "SURELOCK_SEM_MAX"), SURELOCK_SEM_MAX);
    assert_eq!(std::mem::size_of::<surelock_waiter>(), SURELOCK_WAITER_SIZE);
    assert_eq!(std::mem::align_of::<surelock_waiter>(), 16);
    assert_eq!(surelock::version(),
               format!("{}.{}.{}", SURELOCK_VERSION_MAJOR, SURELOCK_VERSION_MINOR,
                       define(&h, "SURELOCK_VERSION_PATCH")));
}
