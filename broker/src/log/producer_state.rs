//! Idempotent producer state: per producer id, its epoch and the last five batches' sequences.
