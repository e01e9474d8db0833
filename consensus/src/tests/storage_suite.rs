//! openraft's storage conformance suite against the redb log store and state machine.

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
