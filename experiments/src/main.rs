//! `recursa`: looped reasoning models (TRM, HRM, DIS) on burn, from the command line.
//! The subcommands live in the library's [`recursa::cli`].

use std::process::ExitCode;

use clap::Parser;
use recursa::cli::{run, Cli};
use recursa_core::error::exit_code;

/// mimalloc, which keeps freed memory for reuse (the system allocator returns every
/// large tensor buffer to the OS, and the page faults of the next one cost a fifth of
/// a CPU step), with large zeroed byte buffers from the kernel's zero pages.
#[global_allocator]
static ALLOCATOR: recursa::alloc::Allocator = recursa::alloc::Allocator;

fn main() -> ExitCode {
    // Die quietly when the reader of stdout goes away (`recursa ... | head`), as
    // command-line tools do, instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    recursa::prepare_process();
    match run(Cli::parse().command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(exit_code::CHECK_FAILED),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
