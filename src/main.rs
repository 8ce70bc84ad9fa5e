//! ferrocd: the server binary. The runtime and gRPC edge arrive with the
//! "ferrocd serves the etcd KV API" issue; until then the binary only reports
//! its version and refuses to pretend it can serve.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-version") {
        println!("ferrocd Version: {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    eprintln!("ferrocd: the server is not implemented yet (libraries only)");
    std::process::exit(2);
}
