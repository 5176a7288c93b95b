//! The broker binary, built inside this crate so the integration tests can start it as a child
//! process (and kill -9 it) through `env!("CARGO_BIN_EXE_gregor-broker")`.

fn main() {
    if let Err(e) = broker::server::cli_main() {
        eprintln!("broker: {e:#}");
        std::process::exit(1);
    }
}
