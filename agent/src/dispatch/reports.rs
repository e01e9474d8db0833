//! The leader's report batcher: status reports from every worker are written through raft in
//! batches. While one batch is being committed the next one gathers, so a burst of reports from
//! many workers costs a few log entries, not one each.

use std::collections::BTreeMap;

use shoal_consensus::Quorum;
use shoal_scheduler::{Command, NodeId, TaskId, TaskStatus};
use tokio::sync::{mpsc, oneshot};

/// Capacity of the batcher's queue.
const QUEUE_CAPACITY: usize = 4096;
/// Most reports written in one command.
const MAX_BATCH: usize = 2048;

/// One worker's reports waiting to be written, with the channel that tells it the outcome.
#[derive(Debug)]
pub struct PendingReports {
    /// The reporting node (authenticated by the mesh).
    pub node: NodeId,
    /// Its reports.
    pub reports: Vec<(TaskId, TaskStatus)>,
    /// `Ok` once committed, `Err(reason)` to make the worker retry.
    pub done: oneshot::Sender<Result<(), String>>,
}

/// A queue into the batcher.
pub fn channel() -> (mpsc::Sender<PendingReports>, mpsc::Receiver<PendingReports>) {
    mpsc::channel(QUEUE_CAPACITY)
}

/// Writes queued reports until the queue closes.
pub async fn run(
    quorum: Quorum,
    mut queue: mpsc::Receiver<PendingReports>,
    metrics: shoal_metrics::AgentMetrics,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].reports.len();
        while count < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => {
                    count += more.reports.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        write_batch(&quorum, batch).await;
        metrics.dispatcher_reports.inc_by(count as u64);
    }
}

/// One node's reports in a batch, and who waits for them.
#[derive(Default)]
struct NodeBatch {
    reports: Vec<(TaskId, TaskStatus)>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

/// One command per reporting node (or several, of at most [`MAX_BATCH`] reports each), written
/// concurrently; every waiter hears the outcome.
async fn write_batch(quorum: &Quorum, batch: Vec<PendingReports>) {
    let mut by_node: BTreeMap<NodeId, NodeBatch> = BTreeMap::new();
    for pending in batch {
        let entry = by_node.entry(pending.node).or_default();
        entry.reports.extend(pending.reports);
        entry.waiters.push(pending.done);
    }
    let writes = by_node
        .into_iter()
        .map(|(node, NodeBatch { reports, waiters })| async move {
            let mut outcome = Ok(());
            for chunk in reports.chunks(MAX_BATCH) {
                let command = Command::ReportTaskStatus {
                    node: node.clone(),
                    reports: chunk.to_vec(),
                };
                if let Err(error) = quorum.write(command).await {
                    outcome = Err(error.to_string());
                    break;
                }
            }
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        });
    futures::future::join_all(writes).await;
}
