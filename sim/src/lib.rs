//! The simulator. Built with `--cfg madsim` (see `cargo sim`).
