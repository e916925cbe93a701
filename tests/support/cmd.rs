//! Running programs from a test: the checkout's root (where `config/`,
//! `deploy/` and `scripts/` are), a command's output (a failure to start it
//! is a panic naming it), its bytes as text, and "run it, it must succeed".

use std::path::Path;
use std::process::{Command, Output};

/// The checkout the tests were built from.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `cmd`'s output; panics if it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Bytes as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd`, panics with its output unless it succeeds, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}
