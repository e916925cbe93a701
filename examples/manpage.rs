//! Writes salt-sidecar's man pages, generated from the clap CLI
//! (`salt_sidecar::cli::Cli`): `salt-sidecar.1` and one page per subcommand
//! (`salt-sidecar-run.1`, ...), the way `git` has them. `scripts/package`
//! runs it and gzips the pages into the packages; `clap_mangen` is a
//! dev-dependency, so the shipped binary does not carry it.
//!
//!   cargo run --example manpage -- OUT_DIR [DATE]
//!
//! DATE (e.g. `2026-11-30`) goes into each page's title line; the packages
//! pass the commit date, so the same commit gives the same pages. Prints the
//! path of every page written, one a line.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: manpage OUT_DIR [DATE]");
        std::process::exit(64);
    };
    let date = args
        .next()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::create_dir_all(&out)?;

    let mut cli = salt_sidecar::cli::Cli::command().disable_help_subcommand(true);
    cli.build();
    write_pages(&cli, &out, &date)
}

/// The page of `cmd`, then those of its visible subcommands (which `build`
/// has already named `salt-sidecar-<sub>`).
fn write_pages(cmd: &clap::Command, out: &Path, date: &str) -> std::io::Result<()> {
    let path = Man::new(cmd.clone())
        .date(date)
        .source(format!("salt-sidecar {}", env!("CARGO_PKG_VERSION")))
        .manual("salt-sidecar manual")
        .generate_to(out)?;
    println!("{}", path.display());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, out, date)?;
    }
    Ok(())
}
