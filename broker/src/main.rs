//! The `broker` binary. See `broker --help`.

#[cfg(not(madsim))]
fn main() {
    broker::fail_stop::install();
    if let Err(e) = broker::server::cli_main() {
        eprintln!("broker: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(madsim)]
fn main() {
    eprintln!("the broker binary runs only outside the simulator; use `cargo sim`");
    std::process::exit(2);
}
