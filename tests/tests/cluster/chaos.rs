//! Chaos with a check, not a hope, on five machines with their own engines that joined a seed
//! (see `shoal_tests::nodes`): for a number of cycles a seeded schedule kills and restarts, pauses,
//! cuts off, partitions or makes lossy a random node, while three users keep creating, updating,
//! scaling, removing and reading services through random nodes with the CLI. Every request is
//! recorded with its call, its return and what it answered.
//!
//! After the last fault is healed: the recorded history must be linearizable against a model of
//! the service registry (`shoal_tests::linearizability`); no acknowledged write may be lost (the
//! last acknowledged write of each service, with nothing after or beside it, must be what a
//! final read sees); and every node's engine must run exactly the tasks the services want, no
//! surplus and none missing. The figures are printed; a failure prints the seed and the fault
//! schedule, and `SHOAL_CHAOS_SEED=<seed>` replays the same schedule (the users' requests
//! depend on timing too). `SHOAL_CHAOS_CYCLES` sets the number of cycles (3 by default, for CI).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use shoal_scheduler::Service;
use shoal_tests::linearizability::{
    Operation, Outcome, RegistryInput, RegistryModel, RegistryOutput, Verdict, check,
};
use shoal_tests::nodes::NodeCluster;
use shoal_tests::nodes::views::*;
use shoal_tests::*;

/// The services the users write: few, so that their requests meet.
const NAMES: [&str; 4] = ["chaos-a", "chaos-b", "chaos-c", "chaos-d"];
/// How many users write at once.
const USERS: usize = 3;
/// How long one request may take before its user gives up on it (its outcome is then unknown).
const REQUEST_LIMIT: Duration = Duration::from_secs(8);
/// How long the history check may search.
const CHECK_BUDGET: Duration = Duration::from_secs(60);
/// How long the cluster may take to converge after the last heal.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(120);

/// A seeded source of choices (splitmix64): the same seed, the same schedule.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One fault of the schedule, by node position.
#[derive(Debug, Clone)]
enum Fault {
    /// Killed (-9) and started again.
    Kill(usize),
    /// Frozen, then thawed.
    Pause(usize),
    /// Cut off from every other node.
    Isolate(usize),
    /// These nodes cut off from the others.
    Partition(Vec<usize>),
    /// Loses this percentage of its packets.
    Loss(usize, u32),
}

/// A fault and how long it is held.
#[derive(Debug, Clone)]
struct Cycle {
    fault: Fault,
    held: Duration,
}

/// The fault schedule of `seed`: `cycles` faults on `nodes` nodes.
fn schedule(seed: u64, cycles: usize, nodes: usize) -> Vec<Cycle> {
    let mut choices = Choices(seed);
    (0..cycles)
        .map(|_| {
            let node = choices.below(nodes as u64) as usize;
            let fault = match choices.below(5) {
                0 => Fault::Kill(node),
                1 => Fault::Pause(node),
                2 => Fault::Isolate(node),
                3 => {
                    let other = (node + 1 + choices.below(nodes as u64 - 1) as usize) % nodes;
                    Fault::Partition(vec![node, other])
                }
                _ => Fault::Loss(node, 30 + 10 * choices.below(4) as u32),
            };
            let held = Duration::from_millis(3000 + choices.below(4000));
            Cycle { fault, held }
        })
        .collect()
}

/// The history the users record, timed from one start.
struct History {
    started: Instant,
    operations: Mutex<Vec<Op>>,
    /// Requests left out: certainly without effect (refused as stale, or never sent).
    left_out: AtomicUsize,
}

impl History {
    fn record(
        &self,
        client: usize,
        input: RegistryInput,
        call: Instant,
        outcome: Outcome<RegistryOutput>,
    ) {
        let operation = Operation {
            client,
            input,
            call: call.duration_since(self.started),
            outcome,
        };
        self.operations.lock().expect("history").push(operation);
    }

    fn since_start(&self, at: Instant) -> Duration {
        at.duration_since(self.started)
    }
}

/// A user's next request, with a version string no other request uses.
fn next_input(choices: &mut Choices, user: usize, serial: &mut u32) -> RegistryInput {
    *serial += 1;
    let name = (*choices.pick(&NAMES)).to_owned();
    let version = format!("u{user}-{serial}");
    let replicas = choices.below(4) as u32;
    match choices.below(10) {
        0 | 1 => RegistryInput::Create {
            name,
            replicas: replicas.max(1),
            image: version,
        },
        2 | 3 => RegistryInput::Update {
            name,
            image: version,
        },
        4 | 5 => RegistryInput::Scale { name, replicas },
        6 => RegistryInput::Remove { name },
        _ => RegistryInput::Inspect { name },
    }
}

/// The CLI arguments for `input`.
fn command(input: &RegistryInput) -> Vec<String> {
    let strings = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    match input {
        RegistryInput::Create {
            name,
            replicas,
            image,
        } => strings(&[
            "shoal",
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            &replicas.to_string(),
            "--env",
            &format!("VERSION={image}"),
            "--stop-grace-period",
            "1s",
            TEST_IMAGE,
            "sleep",
            "3600",
        ]),
        RegistryInput::Update { name, image } => strings(&[
            "shoal",
            "service",
            "update",
            "--detach",
            "--env-add",
            &format!("VERSION={image}"),
            name,
        ]),
        RegistryInput::Scale { name, replicas } => strings(&[
            "shoal",
            "service",
            "scale",
            "--detach",
            &format!("{name}={replicas}"),
        ]),
        RegistryInput::Remove { name } => strings(&["shoal", "service", "rm", name]),
        RegistryInput::Inspect { name } => strings(&["shoal", "service", "inspect", name]),
    }
}

/// What a successful `service inspect` printed, as the model's answer.
fn found(stdout: &[u8]) -> Option<RegistryOutput> {
    let service: Service = serde_json::from_slice(stdout).ok()?;
    let image = service
        .spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("VERSION="))?
        .to_owned();
    let replicas = u32::try_from(service.spec.replicas()?).ok()?;
    Some(RegistryOutput::Found { replicas, image })
}

/// What one request answered: `None` when it certainly did nothing and showed nothing (the
/// node's container could not run the command, or the write was refused as stale), so that it
/// is left out of the history.
fn outcome_of(
    input: &RegistryInput,
    output: &std::process::Output,
) -> Option<Option<RegistryOutput>> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Some(Some(match input {
            RegistryInput::Inspect { .. } => match found(&output.stdout) {
                Some(answer) => answer,
                None => return Some(None),
            },
            _ => RegistryOutput::Done,
        }));
    }
    if stderr.contains("is paused")
        || stderr.contains("is not running")
        || stderr.contains("stale:")
    {
        return None;
    }
    if stderr.contains("already exists") {
        return Some(Some(RegistryOutput::Exists));
    }
    if stderr.contains("no such service") {
        return Some(Some(RegistryOutput::NotFound));
    }
    if stderr.contains("nothing to change") {
        return Some(Some(RegistryOutput::Unchanged));
    }
    Some(None)
}

/// Sends `input` through `node` and records it, unless it certainly did nothing.
fn request(
    cluster: &NodeCluster,
    history: &History,
    user: usize,
    node: &str,
    input: RegistryInput,
) {
    let args = command(&input);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let call = Instant::now();
    let output = cluster.exec_within(node, REQUEST_LIMIT, &args);
    let returned = Instant::now();
    let Some(answer) = outcome_of(&input, &output) else {
        history.left_out.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let outcome = match answer {
        Some(output) => Outcome::Returned {
            output,
            at: history.since_start(returned),
        },
        None => Outcome::Unknown,
    };
    history.record(user, input, call, outcome);
}

/// A user: requests through random nodes until `stop`.
fn user(cluster: &NodeCluster, history: &History, user: usize, seed: u64, stop: &AtomicBool) {
    let mut choices = Choices(seed ^ (user as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut serial = 0;
    let nodes = cluster.nodes().to_vec();
    // Bounded: at most one request per 50 ms over an hour.
    for _ in 0..72_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let node = choices.pick(&nodes).clone();
        let input = next_input(&mut choices, user, &mut serial);
        request(cluster, history, user, &node, input);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Applies `fault`.
fn inflict(cluster: &NodeCluster, fault: &Fault) {
    let nodes = cluster.nodes();
    match fault {
        Fault::Kill(n) => cluster.kill(&nodes[*n]),
        Fault::Pause(n) => cluster.pause(&nodes[*n]),
        Fault::Isolate(n) => cluster.isolate(&nodes[*n]),
        Fault::Partition(side) => {
            let a: Vec<&str> = side.iter().map(|n| nodes[*n].as_str()).collect();
            let b: Vec<&str> = (0..nodes.len())
                .filter(|n| !side.contains(n))
                .map(|n| nodes[n].as_str())
                .collect();
            cluster.partition(&a, &b);
        }
        Fault::Loss(n, percent) => cluster.lose_packets(&nodes[*n], *percent),
    }
}

/// Undoes `fault`; a killed node is started and its agent waited for.
async fn heal(cluster: &NodeCluster, fault: &Fault) {
    let nodes = cluster.nodes();
    match fault {
        Fault::Kill(n) => {
            let node = &nodes[*n];
            let restarted = SystemTime::now();
            cluster.start(node);
            cluster
                .until("the restarted node's agent runs", FORMATION_LIMIT, |c| {
                    let started = c.agent_started_at(node).ok_or("not yet")?;
                    (started >= restarted)
                        .then_some(())
                        .ok_or_else(|| "not yet".to_owned())
                })
                .await;
        }
        Fault::Pause(n) => cluster.unpause(&nodes[*n]),
        _ => cluster.heal_all(),
    }
}

type Op = Operation<RegistryInput, RegistryOutput>;

/// When `op` ended for its user: never, when its outcome is unknown.
fn ended(op: &Op) -> Duration {
    match &op.outcome {
        Outcome::Returned { at, .. } => *at,
        Outcome::Unknown => Duration::MAX,
    }
}

/// Whether `op` may have changed the registry: a write acknowledged or of unknown outcome.
fn may_have_written(op: &Op) -> bool {
    !matches!(op.input, RegistryInput::Inspect { .. })
        && matches!(
            op.outcome,
            Outcome::Unknown
                | Outcome::Returned {
                    output: RegistryOutput::Done,
                    ..
                }
        )
}

/// Whether `seen` (a read's answer) shows the effect of the acknowledged write `write`.
fn shows(write: &RegistryInput, seen: &RegistryOutput) -> bool {
    match (write, seen) {
        (RegistryInput::Remove { .. }, RegistryOutput::NotFound) => true,
        (
            RegistryInput::Create {
                replicas, image, ..
            },
            RegistryOutput::Found {
                replicas: r,
                image: i,
            },
        ) => replicas == r && image == i,
        (RegistryInput::Update { image, .. }, RegistryOutput::Found { image: i, .. }) => image == i,
        (RegistryInput::Scale { replicas, .. }, RegistryOutput::Found { replicas: r, .. }) => {
            replicas == r
        }
        _ => false,
    }
}

/// Every acknowledged write that a final read contradicts although nothing came after or
/// beside it: for each service, the acknowledged write that every other write of it (acknowledged
/// or of unknown outcome) ended before, if there is one, against the last read.
fn lost_writes(history: &[Op]) -> Vec<String> {
    let mut lost = Vec::new();
    for name in NAMES {
        let ops: Vec<&Op> = history.iter().filter(|o| o.input.name() == name).collect();
        let Some(last_read) = ops
            .iter()
            .filter(|o| matches!(o.input, RegistryInput::Inspect { .. }))
            .max_by_key(|o| o.call)
        else {
            continue;
        };
        let Outcome::Returned { output: seen, .. } = &last_read.outcome else {
            continue;
        };
        let writes: Vec<&Op> = ops
            .iter()
            .copied()
            .filter(|o| may_have_written(o))
            .collect();
        let last = writes.iter().find(|w| {
            matches!(w.outcome, Outcome::Returned { .. })
                && ended(w) < last_read.call
                && writes
                    .iter()
                    .all(|o| std::ptr::eq(*o, **w) || ended(o) < w.call)
        });
        if let Some(last) = last
            && !shows(&last.input, seen)
        {
            lost.push(format!(
                "{:?} acknowledged, then the final read saw {seen:?}",
                last.input
            ));
        }
    }
    lost
}

/// Running task containers of each service in the engines against what it wants:
/// `(surplus, missing, by service)`.
fn surplus_and_missing(
    cluster: &NodeCluster,
    wanted: &BTreeMap<String, u32>,
) -> Result<(usize, usize, String), String> {
    let nodes = cluster.nodes().to_vec();
    let (mut surplus, mut missing) = (0, 0);
    let mut seen = Vec::new();
    for name in NAMES {
        let running: usize = engines(cluster, &nodes, name)?
            .values()
            .map(|t| t.len())
            .sum();
        let want = wanted.get(name).copied().unwrap_or(0) as usize;
        surplus += running.saturating_sub(want);
        missing += want.saturating_sub(running);
        seen.push(format!("{name} {running}/{want}"));
    }
    Ok((surplus, missing, seen.join(", ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_the_registry_linearizable_and_the_engines_exact() {
    init_logging();
    let seed = std::env::var("SHOAL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let cycles: usize = std::env::var("SHOAL_CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut cluster = NodeCluster::new("chaos");
    start_joined_cluster(&mut cluster, 5).await;
    let cluster = Arc::new(cluster);
    let faults = schedule(seed, cycles, cluster.nodes().len());
    let replay = format!(
        "seed {seed} (replay: SHOAL_CHAOS_SEED={seed} SHOAL_CHAOS_CYCLES={cycles}); schedule: {faults:?}"
    );
    eprintln!("chaos: {replay}");

    let history = Arc::new(History {
        started: Instant::now(),
        operations: Mutex::new(Vec::new()),
        left_out: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let users: Vec<_> = (0..USERS)
        .map(|u| {
            let (cluster, history, stop) = (
                Arc::clone(&cluster),
                Arc::clone(&history),
                Arc::clone(&stop),
            );
            tokio::task::spawn_blocking(move || user(&cluster, &history, u, seed, &stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for cycle in &faults {
        inflict(&cluster, &cycle.fault);
        tokio::time::sleep(cycle.held).await;
        heal(&cluster, &cycle.fault).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for u in users {
        u.await.expect("a user");
    }

    // Healed: one cluster again; no request of a user is still running in a node.
    let healed = Instant::now();
    cluster.heal_all();
    until_formed(&cluster, 5).await;
    let formed_after = healed.elapsed();
    let nodes = cluster.nodes().to_vec();
    cluster.on_each(&nodes, |n| {
        cluster.exec(n, &["pkill", "-9", "-f", "shoal service"])
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, name) in NAMES.iter().enumerate() {
        let input = RegistryInput::Inspect {
            name: (*name).to_owned(),
        };
        request(&cluster, &history, USERS, &nodes[i % nodes.len()], input);
    }
    let operations = history.operations.lock().expect("history").clone();
    let acknowledged = operations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Returned { .. }))
        .count();
    let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &operations {
        let kind = match &op.outcome {
            Outcome::Unknown => "unknown",
            Outcome::Returned { output, .. } => match output {
                RegistryOutput::Done => "done",
                RegistryOutput::Exists => "exists",
                RegistryOutput::NotFound => "not found",
                RegistryOutput::Unchanged => "unchanged",
                RegistryOutput::Found { .. } => "found",
            },
        };
        *answers.entry(kind).or_default() += 1;
    }
    let checked = Instant::now();
    let verdict = check(&RegistryModel, &operations, CHECK_BUDGET);
    let check_time = checked.elapsed();
    let lost = lost_writes(&operations);

    // What the final reads say the services want, and how long the engines took to match.
    let wanted: BTreeMap<String, u32> = operations
        .iter()
        .filter(|o| o.client == USERS)
        .filter_map(|o| match (&o.input, &o.outcome) {
            (
                RegistryInput::Inspect { name },
                Outcome::Returned {
                    output: RegistryOutput::Found { replicas, .. },
                    ..
                },
            ) => Some((name.clone(), *replicas)),
            _ => None,
        })
        .collect();
    let mut tasks = (usize::MAX, usize::MAX, String::new());
    for _ in 0..(CONVERGENCE_LIMIT.as_millis() / 500) {
        if let Ok(seen) = surplus_and_missing(&cluster, &wanted) {
            tasks = seen;
            if tasks.0 == 0 && tasks.1 == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged_after = healed.elapsed();
    let linearizable = match &verdict {
        Verdict::Linearizable => "yes".to_owned(),
        Verdict::NotLinearizable { .. } => "NO".to_owned(),
        Verdict::Inconclusive { .. } => format!("undecided within {CHECK_BUDGET:?}"),
    };
    eprintln!(
        "chaos: {cycles} cycles, {} operations ({answers:?}; {} more left out: refused as stale \
         or never sent), {acknowledged} acknowledged, {} lost, \
         linearizable: {linearizable} (checked in {check_time:?}); tasks: {} surplus, {} missing \
         ({}); after the last heal: one cluster in {formed_after:?}, engines exact in {converged_after:?}",
        operations.len(),
        history.left_out.load(Ordering::Relaxed),
        lost.len(),
        tasks.0,
        tasks.1,
        tasks.2,
    );
    assert!(lost.is_empty(), "lost writes: {lost:?}\n{replay}");
    match verdict {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { explanation } => {
            panic!("the history is not linearizable:\n{explanation}\n{replay}")
        }
        Verdict::Inconclusive { explanation } => {
            eprintln!("chaos: the check gave up (not a failure of the cluster): {explanation}")
        }
    }
    assert_eq!(
        (tasks.0, tasks.1),
        (0, 0),
        "surplus and missing tasks: {}\n{replay}",
        tasks.2
    );
}
