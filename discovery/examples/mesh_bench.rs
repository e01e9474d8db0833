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
    mesh::run(&cli.args).await
}
