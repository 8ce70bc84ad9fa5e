//! ferrocd: a thread-per-core, drop-in replacement for etcd v3.
//!
//! `main` parses etcd's command line (flags, `ETCD_*` environment,
//! `--config-file`), sets up logging and runs the node until SIGINT or
//! SIGTERM (exit 0 after a clean shutdown).

mod auto_compactor;
mod command;
mod config;
mod doorbell;
mod edge;
mod lessor;
mod metrics_http;
mod raft_node;
mod recovery;
mod server;
mod shared;
mod snapshotter;
mod watch_hub;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Registers this process for expedited membarrier before any thread
/// exists: glommio 0.9 otherwise registers lazily on its first park, which
/// then waits for a slow RCU sync (10-80 ms on the first timer).
fn register_membarrier() {
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    // SAFETY: a plain syscall with integer arguments; failure is harmless.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
        );
    }
}

fn init_logging(level: config::LogLevel) {
    use tracing::level_filters::LevelFilter;
    let filter = match level {
        config::LogLevel::Debug => LevelFilter::DEBUG,
        config::LogLevel::Info => LevelFilter::INFO,
        config::LogLevel::Warn => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    };
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_target(false)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_max_level(filter)
        .init();
}

fn main() {
    register_membarrier();
    server::block_signals();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    match config::parse(&args, &env) {
        Ok(config::Invocation::Version) => {
            println!("ferrocd Version: {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API Version: {}", edge::maintenance::ETCD_API_VERSION);
        }
        Ok(config::Invocation::Help) => {
            print!("{}", config::help_text());
        }
        Ok(config::Invocation::Run(cfg)) => {
            init_logging(cfg.log_level);
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            if let Err(e) = server::run(&cfg) {
                tracing::error!(error = %e, "ferrocd failed to run");
                std::process::exit(1);
            }
        }
        Err(err) => {
            eprintln!("{err}");
            if err.wants_usage() {
                eprint!("{}", config::USAGE);
            }
            std::process::exit(err.exit_code());
        }
    }
}
