//! `shoal` (being wired up).
fn main() {}
