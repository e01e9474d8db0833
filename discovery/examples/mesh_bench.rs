//! Runs the mesh benchmark of `shoal bench mesh` (agent/src/bench/mesh.rs) from the discovery
//! crate: `cargo run --release -p shoal-discovery --example mesh_bench -- --agents 50`.

#[path = "../../agent/src/bench/mesh.rs"]
mod mesh;

use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: mesh::MeshBenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    mesh::run(&cli.args).await
}
