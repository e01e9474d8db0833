//! Link options of the `shoal` binary.
//!
//! On GNU/Linux the binary packs its relative relocations (`-z pack-relative-relocs`, DT_RELR):
//! a position-independent executable otherwise carries 1.4 MB of them (24 bytes each), which the
//! loader reads at every start and which then stay resident. Packed, they take a few KB. It needs
//! glibc 2.36 or newer to run, and binutils 2.38 or newer (or lld) to link.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
