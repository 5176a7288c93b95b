//! Fail-stop: a panic anywhere in a broker process ends the process.
//!
//! tokio catches a panicking task and lets the rest of the runtime go on, which would leave a
//! broker limping: a connection gone, a partition lock poisoned, a fetcher silently dead. A
//! broker that has broken one of its own invariants must stop and be restarted (recovery is
//! what restarts are for), never serve on. So the real binary installs [`install`], which
//! prints the panic with a clear fail-stop line and aborts; the release profile also builds
//! with `panic = "abort"`. In the simulator a panic in any node's task already ends the whole
//! simulated world (madsim propagates it), and the seed is reported as a simulator panic.

/// Installs the hook: the default panic report, one line saying the process stops, then abort.
#[cfg(not(madsim))]
pub fn install() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        eprintln!(
            "gregor: fail-stop: a panic in thread `{}` at {}; aborting the process (restart it: recovery runs on start)",
            thread.name().unwrap_or("unnamed"),
            info.location().map_or_else(|| "an unknown location".to_string(), |l| l.to_string()),
        );
        std::process::abort();
    }));
}
