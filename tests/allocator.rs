//! The binary's jemalloc options (src/allocator.rs): freed memory goes back to the system after a
//! second, from a background thread. Read back from jemalloc's own statistics of a real run of
//! the binary, so a renamed symbol or a malformed option string (jemalloc ignores both
//! silently) fails here instead of showing up as peak RSS at a million phones.
#![cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]

use std::process::Command;

fn options(env: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phonefleet"));
    cmd.arg("--version");
    // stats_print makes jemalloc print its options at exit; later sources override earlier
    // ones, so the compiled-in options stay unless the environment names them too.
    cmd.env(
        "_RJEM_MALLOC_CONF",
        match env {
            Some(extra) => format!("stats_print:true,{extra}"),
            None => "stats_print:true".to_owned(),
        },
    );
    let out = cmd.output().expect("running phonefleet --version");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn option<'a>(stats: &'a str, name: &str) -> &'a str {
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("opt.{name}: ")))
        .unwrap_or_else(|| panic!("opt.{name} not in jemalloc's statistics:\n{stats}"))
        .split(' ')
        .next()
        .unwrap_or_default()
}

#[test]
fn the_binary_returns_freed_memory_within_a_second_from_a_background_thread() {
    let stats = options(None);
    assert_eq!(option(&stats, "background_thread"), "true");
    assert_eq!(option(&stats, "dirty_decay_ms"), "1000");
    assert_eq!(option(&stats, "muzzy_decay_ms"), "0");
}

#[test]
fn the_environment_still_overrides_the_built_in_options() {
    let stats = options(Some("dirty_decay_ms:5000"));
    assert_eq!(option(&stats, "dirty_decay_ms"), "5000");
    assert_eq!(option(&stats, "background_thread"), "true");
}
