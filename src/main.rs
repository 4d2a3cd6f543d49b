//! The server binary: reads the configuration, sets up logging, and runs
//! the application (`confab::app`) until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use confab::app::Application;
use confab::config::Settings;
use tracing::error;

/// jemalloc rather than glibc's malloc: a tenth to a sixth less server CPU
/// per message (docs/performance-log.md, "jemalloc").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: pages freed are handed back
/// within about a second rather than ten, by jemalloc's own background
/// thread, so that an idle server holds what its sessions keep and not
/// what their handshakes used. Not at once (`dirty_decay_ms:0`): a busy
/// server then returned and took back pages all the time, and each
/// `madvise` that gave one back stopped the other core to flush its TLB
/// (7% of the CPU per message, for the same memory per idle session).
/// (`_RJEM_MALLOC_CONF` in the environment still overrides them.)
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true".as_ptr());

/// A C string pointer, as jemalloc declares `malloc_conf`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to a string literal, which is immutable and static.
unsafe impl Sync for MallocConf {}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("confab: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&settings.log))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match Application::build(settings).await {
        Ok(app) => {
            app.run_until_stopped().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// The server's allocator is jemalloc, with the options `MALLOC_CONF`
    /// gives it (a misnamed symbol would be silently ignored).
    #[test]
    fn jemalloc_is_the_allocator_and_reads_confabs_options() {
        use tikv_jemalloc_ctl::raw;
        // SAFETY: the decay options are `ssize_t` and background_thread a
        // `bool` in jemalloc's mallctl table.
        let (dirty, muzzy, background) = unsafe {
            (
                raw::read::<isize>(b"opt.dirty_decay_ms\0").unwrap(),
                raw::read::<isize>(b"opt.muzzy_decay_ms\0").unwrap(),
                raw::read::<bool>(b"background_thread\0").unwrap(),
            )
        };
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert_eq!((dirty, muzzy, background), (1000, 0, true));
        }
    }
}
