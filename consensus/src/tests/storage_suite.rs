//! openraft's storage conformance suite against the redb log store and state machine, and the
//! log store's own promises (appends readable at once, timed, durable after the flush callback).

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use crate::storage::{self, LogStore, StateMachine};
use crate::types::TypeConfig;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_string(e)))?;
        let (log, sm) = storage::open(dir.path())
            .map_err(|e| StorageError::read(TypeConfig::err_from_string(e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_storage_passes_openraft_suite() {
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        Suite::test_all(RedbBuilder),
    )
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("storage suite failed: {e}"),
        Err(_) => panic!("storage suite timed out"),
    }
}

/// Appends are readable as soon as `append` returns, durable when the flush callback fires, and
/// timed in `shoal_raft_log_append_seconds` of the agent's registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_readable_at_once_timed_and_durable() {
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::vote::RaftLeaderIdExt;
    use openraft::{EntryPayload, RaftLogReader};
    use shoal_metrics::prometheus_client::{encoding::text::encode, registry::Registry};

    use crate::types::{Entry, LogId};

    type Leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let (mut log, sm) = storage::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let mut registry = Registry::default();
    let _families = crate::metrics::RaftMetricsFamilies::register(
        &mut registry,
        &sm.snapshot_metrics(),
        &crate::metrics::commit_histogram(),
        &log.metrics(),
        &crate::metrics::Refusals::default(),
    );
    let entries: Vec<Entry> = (1..=3)
        .map(|i| Entry {
            log_id: LogId::new(Leader::new_committed(1, 1), i),
            payload: EntryPayload::Blank,
        })
        .collect();
    let (flushed, durable) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(flushed))
        .await
        .unwrap_or_else(|e| panic!("append: {e}"));
    let read = log
        .try_get_log_entries(1..4)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(read.len(), 3, "appended entries are readable at once");
    match tokio::time::timeout(std::time::Duration::from_secs(10), durable).await {
        Ok(Ok(Ok(()))) => {}
        other => panic!("flush callback: {other:?}"),
    }
    let mut text = String::new();
    encode(&mut text, &registry).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.lines()
            .any(|l| l == "shoal_raft_log_append_seconds_count 1"),
        "one append observed:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("shoal_raft_log_sync_seconds_count ")),
        "write rounds observed:\n{text}"
    );
    // Durable: a fresh open of the file (the writer thread lets go of it) finds them.
    drop(log);
    drop(sm);
    let (mut log, _sm) = storage::open(dir.path()).unwrap_or_else(|e| panic!("reopen: {e}"));
    let read = log
        .try_get_log_entries(1..4)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(read.len(), 3);
}
