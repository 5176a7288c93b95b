//! What the over-the-wire tests share.

use broker::server::{self, BrokerConfig, BrokerHandle};
use broker::storage::real::RealDisk;
use std::sync::Arc;

/// A broker and its controller in this process, on port 0, storing in `dir`.
pub async fn start_in(dir: &std::path::Path, overrides: &[(&str, &str)]) -> BrokerHandle {
    let mut config = BrokerConfig::default();
    config.set("listeners", "PLAINTEXT://127.0.0.1:0").unwrap();
    config.set("log.dirs", dir.to_str().unwrap()).unwrap();
    for (key, value) in overrides {
        config.set(key, value).unwrap();
    }
    server::start(config, Arc::new(RealDisk)).await.unwrap()
}
