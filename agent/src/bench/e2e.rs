//! `shoal bench e2e`: shoal end to end on the local Docker engine with the locally built test
//! image, next to the floor of the same engine: 20 containers created and started straight
//! through the Docker API, 8 callers at once, no orchestration, then 40 more next to them.
//!
//! Figures: create 20 replicas until all run; the time `shoal service create` (the real CLI, a
//! child process) takes to return; scale 20 -> 60; a rolling update of 20 with parallelism 5 and
//! no delay; a killed container until its replacement runs; and, with the sim executor and 3
//! agents, a dead worker until its tasks run elsewhere.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt;
use shoal_scheduler::{Command, DesiredState, ServiceMode, ServiceSpec, TaskState, UpdateOrder};

use crate::daemon::{Agent, AgentConfig, ExecutorKind};
use crate::worker::now;

/// Flags of `shoal bench e2e`.
#[derive(clap::Args, Debug)]
pub struct E2eBenchArgs {
    /// The image to run (must exist locally; build it with tests/images/build-busybox-image.sh).
    #[arg(long, default_value = "shoal-test/busybox:latest")]
    pub image: String,
    /// Replicas created (scaled to three times as many).
    #[arg(long, default_value_t = 20)]
    pub replicas: u64,
}

const LIMIT: Duration = Duration::from_secs(180);

/// Runs the benchmark.
pub async fn run(args: &E2eBenchArgs) -> anyhow::Result<()> {
    let docker = crate::bench::engine_with_image(&args.image).await?;
    let floor = floor(&docker, &args.image, args.replicas as usize).await?;
    println!(
        "floor: {n} containers straight through the Docker API in {:.2}s, each replaced {} at a \
         time in {:.2}s, {} more next to them in {:.2}s",
        floor.create,
        UPDATE_PARALLELISM,
        floor.update,
        2 * args.replicas,
        floor.scale,
        n = args.replicas,
    );

    let dir = tempfile_dir("e2e")?;
    let mut config = AgentConfig::for_tests(&dir, ExecutorKind::Docker);
    config.metrics_addr = None;
    let agent = Agent::start(config).await?;
    crate::bench::wait_until("this node is ready", LIMIT, || {
        let state = agent.quorum().state();
        state
            .nodes
            .get(agent.node_id())
            .is_some_and(|n| n.state == shoal_scheduler::NodeState::Ready)
    })
    .await?;
    let result = orchestrated(&agent, args).await;
    let node = agent.node_id().to_string();
    agent.shutdown().await;
    remove_labelled(&docker, "io.shoal.node.id", &node).await;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = result?;

    let n = args.replicas;
    println!(
        "shoal: create {n} {:.2}s (cli {:.2}s), scale {n}->{} {:.2}s, update {n} {:.2}s \
         ({:.2}x the floor; start-first {:.2}s), replace killed {:.2}s",
        figures.create,
        figures.create_cli,
        n * 3,
        figures.scale,
        figures.update,
        figures.update / floor.update,
        figures.update_start_first,
        figures.replace,
    );
    let dead_worker = dead_worker().await?;
    println!("sim: a dead worker's tasks run elsewhere after {dead_worker:.2}s");
    println!(
        "{{\"bench\":\"e2e\",\"floor20_s\":{:.3},\"floor20to60_s\":{:.3},\"floor_update20_s\":{:.3},\
         \"create20_s\":{:.3},\"create20_cli_s\":{:.3},\"scale20to60_s\":{:.3},\"update20_s\":{:.3},\
         \"update20_start_first_s\":{:.3},\"replace_killed_s\":{:.3},\"dead_worker_s\":{dead_worker:.3}}}",
        floor.create,
        floor.scale,
        floor.update,
        figures.create,
        figures.create_cli,
        figures.scale,
        figures.update,
        figures.update_start_first,
        figures.replace
    );
    Ok(())
}

struct Figures {
    create: f64,
    create_cli: f64,
    scale: f64,
    update: f64,
    update_start_first: f64,
    replace: f64,
}

async fn orchestrated(agent: &Agent, args: &E2eBenchArgs) -> anyhow::Result<Figures> {
    let n = args.replicas;
    let quorum = agent.quorum();
    let spec = bench_spec("bench", &args.image, n);

    let started = Instant::now();
    write(agent, Command::CreateService { spec, at: now() }).await?;
    wait_running(agent, "bench", n, None).await?;
    let create = started.elapsed().as_secs_f64();

    let create_cli = cli_create(agent, &args.image, n).await?;

    let service = find(agent, "bench")?;
    let mut scaled = service.spec.clone();
    scaled.mode = ServiceMode::Replicated { replicas: n * 3 };
    let started = Instant::now();
    write(
        agent,
        Command::UpdateService {
            id: service.id,
            expected_revision: service.revision,
            spec: scaled,
            at: now(),
        },
    )
    .await?;
    wait_running(agent, "bench", n * 3, None).await?;
    let scale = started.elapsed().as_secs_f64();
    let service = find(agent, "bench")?;
    let mut back = service.spec.clone();
    back.mode = ServiceMode::Replicated { replicas: n };
    write(
        agent,
        Command::UpdateService {
            id: service.id,
            expected_revision: service.revision,
            spec: back,
            at: now(),
        },
    )
    .await?;
    wait_running(agent, "bench", n, None).await?;

    let update = rolling_update(agent, n, UpdateOrder::StopFirst, 2).await?;
    let update_start_first = rolling_update(agent, n, UpdateOrder::StartFirst, 3).await?;

    let replace = replace_killed(agent).await?;
    let _ = quorum;
    Ok(Figures {
        create,
        create_cli,
        scale,
        update,
        update_start_first,
        replace,
    })
}

/// Rolls `bench` to a new environment (`BENCH_VERSION=version`) with parallelism
/// [`UPDATE_PARALLELISM`], no delay and no monitor, in `order`; returns the seconds until all
/// `n` run the new spec and no old task is left.
async fn rolling_update(
    agent: &Agent,
    n: u64,
    order: UpdateOrder,
    version: u32,
) -> anyhow::Result<f64> {
    let service = find(agent, "bench")?;
    let mut updated = service.spec.clone();
    updated.env.retain(|e| !e.starts_with("BENCH_VERSION="));
    updated.env.push(format!("BENCH_VERSION={version}"));
    updated.update.parallelism = UPDATE_PARALLELISM as u64;
    updated.update.delay_ms = 0;
    updated.update.monitor_ms = 0;
    updated.update.order = order;
    let started = Instant::now();
    write(
        agent,
        Command::UpdateService {
            id: service.id,
            expected_revision: service.revision,
            spec: updated,
            at: now(),
        },
    )
    .await?;
    wait_running(agent, "bench", n, Some(service.version + 1)).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Kills one running container and times until the service runs its full count again.
async fn replace_killed(agent: &Agent) -> anyhow::Result<f64> {
    let state = agent.quorum().state();
    let service = find(agent, "bench")?;
    let victim = state
        .tasks
        .values()
        .find(|t| t.service == service.id && t.status.state == TaskState::Running)
        .and_then(|t| t.status.container_id.clone())
        .context("a running container to kill")?;
    let replicas = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => 1,
    };
    drop(state);
    let docker = Docker::connect_with_local_defaults()?;
    let started = Instant::now();
    docker
        .kill_container(
            &victim,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await?;
    crate::bench::wait_until("the killed container is replaced", LIMIT, || {
        let state = agent.quorum().state();
        let running = state
            .tasks
            .values()
            .filter(|t| t.service == service.id && t.desired == DesiredState::Running)
            .filter(|t| {
                t.status.state == TaskState::Running
                    && t.status.container_id.as_deref() != Some(&victim)
            })
            .count() as u64;
        running == replicas
    })
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the real CLI (`shoal service create`, waiting for convergence) and times it.
async fn cli_create(agent: &Agent, image: &str, n: u64) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let socket = agent.socket().to_path_buf();
    let image = image.to_string();
    let started = Instant::now();
    let output = tokio::process::Command::new(exe)
        .args([
            "service",
            "create",
            "--quiet",
            "--name",
            "cli",
            "--replicas",
            &n.to_string(),
        ])
        .arg("--socket")
        .arg(&socket)
        .arg(image.as_str())
        .args(workload())
        .output()
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        output.status.success(),
        "shoal service create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let service = find(agent, "cli")?;
    write(
        agent,
        Command::RemoveService {
            id: service.id,
            at: now(),
        },
    )
    .await?;
    // Let its containers go before the next figure, so that they do not share the engine.
    crate::bench::wait_until("the cli service's tasks end", LIMIT, || {
        let state = agent.quorum().state();
        let mut tasks = state.tasks.values().filter(|t| t.service == service.id);
        tasks.all(|t| t.status.state.is_terminal())
    })
    .await?;
    Ok(elapsed)
}

/// Three agents with the sim executor; a worker is killed; time until its tasks run elsewhere.
async fn dead_worker() -> anyhow::Result<f64> {
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| tempfile_dir(&format!("sim{i}")))
        .collect::<Result<_, _>>()?;
    let first = Agent::start(AgentConfig::for_tests(&dirs[0], ExecutorKind::Sim)).await?;
    let seed = first
        .mesh()
        .listen_addrs()
        .await?
        .first()
        .context("a listen address")?
        .to_string();
    let mut others = Vec::new();
    for dir in &dirs[1..] {
        let mut config = AgentConfig::for_tests(dir, ExecutorKind::Sim);
        config.join = vec![seed.clone()];
        others.push(Agent::start(config).await?);
    }
    crate::bench::wait_until("three ready nodes", LIMIT, || {
        first
            .quorum()
            .state()
            .nodes
            .values()
            .filter(|n| n.state == shoal_scheduler::NodeState::Ready)
            .count()
            == 3
    })
    .await?;
    write(
        &first,
        Command::CreateService {
            spec: bench_spec("sim", "sim", 30),
            at: now(),
        },
    )
    .await?;
    wait_running(&first, "sim", 30, None).await?;
    let leader = *first.quorum().leader().borrow();
    let victim_index = others
        .iter()
        .position(|a| Some(a.mesh().local_peer_id()) != leader)
        .unwrap_or(0);
    let victim = others.remove(victim_index);
    let victim_id = victim.node_id().clone();
    let observer = if leader == Some(first.mesh().local_peer_id()) {
        &first
    } else {
        &others[0]
    };
    let started = Instant::now();
    victim.kill().await;
    crate::bench::wait_until("the dead worker's tasks run elsewhere", LIMIT, || {
        let state = observer.quorum().state();
        let running: Vec<_> = state
            .tasks
            .values()
            .filter(|t| t.desired == DesiredState::Running && t.status.state == TaskState::Running)
            .collect();
        let nodes: BTreeSet<_> = running.iter().filter_map(|t| t.node.as_ref()).collect();
        running.len() == 30 && !nodes.contains(&victim_id)
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    first.shutdown().await;
    for agent in others {
        agent.shutdown().await;
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(elapsed)
}

/// What every benchmark container runs: a process that waits and exits at once on SIGTERM, as a
/// well-behaved service does (a bare `sleep` as PID 1 ignores SIGTERM and would time every stop
/// at its grace period instead of at shoal's speed).
fn workload() -> Vec<String> {
    ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
        .map(String::from)
        .to_vec()
}

/// The stop grace of the bench's containers (the workload exits at once on SIGTERM).
const BENCH_STOP_GRACE_MS: u64 = 1_000;

fn bench_spec(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    let mut spec = shoal_scheduler::synthetic::spec(name, replicas);
    spec.image = image.into();
    spec.args = workload();
    spec.stop_grace_ms = BENCH_STOP_GRACE_MS;
    spec
}

async fn write(agent: &Agent, command: Command) -> anyhow::Result<shoal_scheduler::Outcome> {
    Ok(agent.quorum().write(command).await??)
}

fn find(agent: &Agent, name: &str) -> anyhow::Result<shoal_scheduler::Service> {
    let state = agent.quorum().state();
    state
        .services
        .values()
        .find(|s| s.spec.name == name)
        .cloned()
        .with_context(|| format!("service {name} exists"))
}

/// Waits until `name` runs `n` tasks (of `version`, if given) and nothing else is left running.
async fn wait_running(
    agent: &Agent,
    name: &str,
    n: u64,
    version: Option<u64>,
) -> anyhow::Result<()> {
    crate::bench::wait_until(&format!("{name}: {n} running"), LIMIT, || {
        let state = agent.quorum().state();
        let Some(service) = state.services.values().find(|s| s.spec.name == name) else {
            return false;
        };
        let tasks = || state.tasks.values().filter(|t| t.service == service.id);
        let running = tasks()
            .filter(|t| t.desired == DesiredState::Running && t.status.state == TaskState::Running)
            .filter(|t| version.is_none_or(|v| t.spec_version == v))
            .count() as u64;
        let leftovers = tasks()
            .filter(|t| t.desired == DesiredState::Shutdown && !t.status.state.is_terminal())
            .count();
        running == n && leftovers == 0
    })
    .await
}

/// The floor of the same engine, straight through the API: `create` is `n` containers created
/// and started, 8 at once; `update` replaces each of them (stop with the bench's grace, then
/// create and start its successor), 5 at a time as a rolling update of parallelism 5 does;
/// `scale` starts `2n` more next to them, 8 at once (what scaling `n` to `3n` asks of the engine).
struct Floor {
    create: f64,
    update: f64,
    scale: f64,
}

/// Parallelism of the rolling update, in the floor and in shoal's update alike.
const UPDATE_PARALLELISM: usize = 5;

async fn floor(docker: &Docker, image: &str, n: usize) -> anyhow::Result<Floor> {
    let label = format!("floor-{}", std::process::id());
    let measured = floor_phases(docker, image, &label, n).await;
    remove_labelled(docker, "io.shoal.bench", &label).await;
    measured
}

async fn floor_phases(
    docker: &Docker,
    image: &str,
    label: &str,
    n: usize,
) -> anyhow::Result<Floor> {
    let create = start_straight(docker, image, label, 0..n).await?;
    let update = replace_straight(docker, image, label, n).await?;
    let scale = start_straight(docker, image, label, 3 * n..5 * n).await?;
    Ok(Floor {
        create,
        update,
        scale,
    })
}

/// Replaces containers `0..n` by `n..2n`: each lane stops one (with the bench spec's grace) and
/// creates and starts its successor, [`UPDATE_PARALLELISM`] lanes at once; returns the seconds.
async fn replace_straight(
    docker: &Docker,
    image: &str,
    label: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let grace = i32::try_from(BENCH_STOP_GRACE_MS / 1000).unwrap_or(1);
    let results: Vec<anyhow::Result<f64>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let old = floor_name(i);
            let stop = bollard::query_parameters::StopContainerOptionsBuilder::new()
                .t(grace)
                .build();
            docker.stop_container(&old, Some(stop)).await?;
            start_one(docker, image, label, n + i).await
        })
        .buffer_unordered(UPDATE_PARALLELISM)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    results.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(elapsed)
}

fn floor_name(i: usize) -> String {
    format!("shoal-bench-floor-{}-{i}", std::process::id())
}

/// Creates and starts floor container `i`.
async fn start_one(docker: &Docker, image: &str, label: &str, i: usize) -> anyhow::Result<f64> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(workload()),
        labels: Some([("io.shoal.bench".to_string(), label.to_string())].into()),
        ..Default::default()
    };
    let name = floor_name(i);
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = docker.create_container(Some(options), body).await?;
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await?;
    Ok(0.0)
}

/// Creates and starts one container per index of `range`, 8 at once; returns the seconds taken.
async fn start_straight(
    docker: &Docker,
    image: &str,
    label: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<f64>> = futures::stream::iter(range)
        .map(|i| start_one(docker, image, label, i))
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    results.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(elapsed)
}

pub(super) async fn remove_labelled(docker: &Docker, label: &str, value: &str) {
    let filters = std::collections::HashMap::from([("label", vec![format!("{label}={value}")])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return;
    };
    let remove = RemoveContainerOptionsBuilder::new().force(true).build();
    for id in containers.into_iter().filter_map(|c| c.id) {
        let _ = docker.remove_container(&id, Some(remove.clone())).await;
    }
}

pub(super) fn tempfile_dir(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "shoal-bench-{tag}-{}-{}",
        std::process::id(),
        now().0
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
