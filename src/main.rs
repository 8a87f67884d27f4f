//! The `sluice` command: run a SQL file, run stream tests, or a REPL.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as DataFusion's CLI uses: per-batch buffers are reused instead
/// of being returned to the kernel and zeroed again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the same position in v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed pages for reuse instead of returning them to the kernel
/// (mimalloc's default returns them after 10 ms). A micro-batch frees its
/// buffers when it ends and allocates the same again in the next one;
/// returned pages come back zeroed by the kernel, which was a fifth of a
/// windowed count's time and half of q15's (1 s of delay still left q15 at
/// half its speed). The process's resident memory therefore stays at its
/// peak, as a JVM heap does, rather than shrinking between batches.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins (e.g. 1000: return
/// pages after a second).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option of the allocator; mimalloc reads
        // options atomically and allows changing this one at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
