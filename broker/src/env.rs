//! The only reads of the clock and of randomness in the broker. Everything else gets the time
//! passed in (`now_ms`) and ids from here.
//!
//! Under madsim both are simulated: `SystemTime` is the simulated wall clock and
//! `madsim::rand` is seeded by the simulator, so a seed replays bit for bit.

/// Milliseconds since the Unix epoch. Under madsim the clock is simulated.
pub fn now_ms() -> i64 {
    // Intercepted by madsim in simulator builds, so this is the simulated wall clock there.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// 128 random bits for ids. `madsim::rand` is seeded by the simulator in simulator builds and
/// is `rand`'s OS-seeded generator otherwise.
#[allow(clippy::disallowed_methods)] // the seeded source, not the banned OS-seeded one, under madsim
pub fn random_u128() -> u128 {
    madsim::rand::random()
}
