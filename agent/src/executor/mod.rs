//! Executors (being written).
