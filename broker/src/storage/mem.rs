//! In-memory disk with durable and volatile images (for crash tests and the simulator).
