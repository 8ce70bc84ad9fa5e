//! Compiles the etcd v3 `.proto` files with `protox` (pure Rust, no system
//! `protoc` required) and generates prost messages plus tonic client/server
//! stubs.

const PROTO_DIR: &str = "proto";

const PROTO_FILES: &[&str] = &[
    "proto/kv.proto",
    "proto/auth.proto",
    "proto/rpc.proto",
    "proto/v3lock.proto",
    "proto/v3election.proto",
    "proto/health.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let fds = protox::compile(PROTO_FILES, [PROTO_DIR])?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        // The stubs need tonic (and, through it, tokio's sync types); the
        // sans-IO crates use only the messages, so the stubs sit behind the
        // `grpc` feature and their dependency trees stay runtime-free.
        .server_mod_attribute(".", "#[cfg(feature = \"grpc\")]")
        .client_mod_attribute(".", "#[cfg(feature = \"grpc\")]")
        .compile_fds(fds)?;

    Ok(())
}
