//! ferrocd: the server binary. The runtime and gRPC edge arrive with the
//! "ferrocd serves the etcd KV API" issue; until then the binary only parses
//! its etcd-compatible configuration, reports its version, and refuses to
//! pretend it can serve.

mod config;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
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
        }
        Ok(config::Invocation::Help) => {
            print!("{}", config::help_text());
        }
        Ok(config::Invocation::Run(cfg)) => {
            for w in &cfg.warnings {
                eprintln!("ferrocd: warning: {w}");
            }
            eprintln!("ferrocd: the server is not implemented yet (libraries only)");
            std::process::exit(2);
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
