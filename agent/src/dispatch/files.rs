//! A task's files (its secrets opened, its configs) on their way from the leader to the node
//! that runs the task, over `/shoal/dispatch/1` (the mesh is authenticated: the leader knows
//! which node asks).
//!
//! - [`serve`], the leader's side: files only to the node the task is assigned to and only while
//!   it should run; in pages that each fit one message; never a value in an error.
//! - [`FileFetcher`], the worker's side: asks the leader (or, when this agent leads, its own
//!   state and key) for every page, and tries again for a while when no leader can answer (an
//!   election, a leader that has not got the data key yet).
//!
//! The worker keeps what it fetched only as long as the start of the task takes; the executor
//! puts the files on an in-memory filesystem and forgets them when the task stops.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_consensus::sealed::{self, DataKeyStore, SealError, TaskFile, TaskFilesError};
use shoal_consensus::{Quorum, leader_moved_from};
use shoal_discovery::{Mesh, ShoalProtocol};
use shoal_scheduler::{ClusterState, DesiredState, NodeId, TaskId};

use super::leader_link::LeaderView;
use super::messages::{
    DispatchRequest, DispatchResponse, FilesPage, PAGE_BUDGET_BYTES, decode, encode, encoded_len,
};
use crate::executor::ExecutorError;
use crate::worker::TaskFileSource;

/// How long a worker keeps asking for a task's files before the start fails (and the task is
/// placed again by the leader).
const FETCH_DEADLINE: Duration = Duration::from_secs(15);
/// Wait between two asks that found no leader able to answer.
const FETCH_RETRY: Duration = Duration::from_millis(200);
/// How long one ask waits for the leader's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The leader's answer to `node` asking for `task`'s files from the `skip`th on: the files
/// that fit one message, [`DispatchResponse::FilesRefused`] when this node may not have them
/// (or they cannot be made), [`DispatchResponse::Retry`] when this leader holds no data key yet.
pub fn serve(
    state: &ClusterState,
    key: Option<&sealed::DataKey>,
    node: &NodeId,
    task: TaskId,
    skip: u32,
) -> DispatchResponse {
    let refused = |reason: String| DispatchResponse::FilesRefused { reason };
    let Some(found) = state.tasks.get(&task) else {
        return refused(format!("no task {task}"));
    };
    if found.node.as_ref() != Some(node) {
        return refused(format!("task {task} is not assigned to node {node}"));
    }
    if found.desired == DesiredState::Shutdown || found.status.state.is_terminal() {
        return refused(format!("task {task} is not to run"));
    }
    let mut used = 0;
    let fits = |file: &TaskFile| {
        used += encoded_len(file);
        used <= PAGE_BUDGET_BYTES
    };
    let (total, files) = match sealed::task_files_from(state, key, task, skip as usize, fits) {
        Ok(found) => found,
        Err(TaskFilesError::Open {
            source: SealError::NoKey,
            ..
        }) => {
            return DispatchResponse::Retry {
                reason: "the leader holds no data key yet".into(),
            };
        }
        Err(error) => return refused(error.to_string()),
    };
    let total = u32::try_from(total).unwrap_or(u32::MAX);
    DispatchResponse::Files(FilesPage { total, files })
}

/// The worker's way to a task's files: the leader, over the mesh, or this agent's own state
/// when it leads.
#[derive(Clone)]
pub struct FileFetcher {
    /// This node.
    pub node: NodeId,
    /// The mesh.
    pub mesh: Mesh,
    /// Where the leader is.
    pub view: LeaderView,
    /// The raft handle (the state, when this agent leads).
    pub quorum: Quorum,
    /// This agent's copy of the data key (held only on managers).
    pub data_key: Arc<DataKeyStore>,
}

/// Why one ask got no files.
enum AskError {
    /// Worth asking again (no leader, no answer, no key yet).
    Again(String),
    /// The leader refused: asking again will not help.
    Refused(String),
}

impl FileFetcher {
    /// Every file of `task`, page after page, asking again while no leader can answer, until
    /// [`FETCH_DEADLINE`].
    async fn fetch_all(&self, task: TaskId) -> Result<Vec<TaskFile>, ExecutorError> {
        let deadline = tokio::time::Instant::now() + FETCH_DEADLINE;
        let mut files: Vec<TaskFile> = Vec::new();
        loop {
            let skip = u32::try_from(files.len()).unwrap_or(u32::MAX);
            match self.ask(task, skip).await {
                Ok(page) => {
                    if page.files.is_empty() && files.len() < page.total as usize {
                        return Err(ExecutorError::FilesUnavailable(format!(
                            "the leader sent no file past {skip} of {}",
                            page.total
                        )));
                    }
                    files.extend(page.files);
                    if files.len() >= page.total as usize {
                        files.truncate(page.total as usize);
                        return Ok(files);
                    }
                }
                Err(AskError::Refused(reason)) => {
                    return Err(ExecutorError::InvalidSpec(format!(
                        "the task's secrets and configs are not given to this node: {reason}"
                    )));
                }
                Err(AskError::Again(reason)) => {
                    if tokio::time::Instant::now() + FETCH_RETRY > deadline {
                        return Err(ExecutorError::FilesUnavailable(format!(
                            "no leader gave the task's secrets and configs within {} s: {reason}",
                            FETCH_DEADLINE.as_secs()
                        )));
                    }
                    tracing::debug!(%task, %reason, "task files not fetched yet; asking again");
                    tokio::time::sleep(FETCH_RETRY).await;
                }
            }
        }
    }

    /// One page, from this agent's own state when it leads, else from the leader it knows.
    async fn ask(&self, task: TaskId, skip: u32) -> Result<FilesPage, AskError> {
        let leads = self.view.local.borrow().is_some();
        let answer = if leads {
            let key = self.data_key.get();
            serve(&self.quorum.state(), key.as_ref(), &self.node, task, skip)
        } else {
            self.ask_leader(task, skip).await?
        };
        match answer {
            DispatchResponse::Files(page) => Ok(page),
            DispatchResponse::FilesRefused { reason } => Err(AskError::Refused(reason)),
            DispatchResponse::Retry { reason } => Err(AskError::Again(reason)),
            DispatchResponse::NotLeader => {
                Err(AskError::Again("asked an agent that does not lead".into()))
            }
            other => Err(AskError::Again(format!("unexpected answer {other:?}"))),
        }
    }

    async fn ask_leader(&self, task: TaskId, skip: u32) -> Result<DispatchResponse, AskError> {
        let leader = (*self.view.leader.borrow())
            .ok_or_else(|| AskError::Again("no leader known".into()))?;
        let request = encode(&DispatchRequest::TaskFiles { task, skip })
            .map_err(|e| AskError::Again(e.to_string()))?;
        let answer = tokio::select! {
            answer = self.mesh.request(leader, ShoalProtocol::Dispatch, request) => {
                answer.map_err(|e| AskError::Again(e.to_string()))?
            }
            () = leader_moved_from(self.view.leader.clone(), leader) => {
                return Err(AskError::Again(format!("the leader moved from {leader}")));
            }
            () = tokio::time::sleep(ASK_TIMEOUT) => {
                return Err(AskError::Again(format!("no answer from the leader {leader}")));
            }
        };
        decode::<DispatchResponse>(&answer).map_err(|e| AskError::Again(e.to_string()))
    }
}

impl TaskFileSource for FileFetcher {
    fn fetch(&self, task: TaskId) -> BoxFuture<'_, Result<Vec<TaskFile>, ExecutorError>> {
        Box::pin(self.fetch_all(task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_scheduler::secrets::FileRef;
    use shoal_scheduler::{
        Blob, Command, ObjectKind, ServiceId, Task, TaskState, Timestamp, status_at, synthetic,
    };

    fn key() -> sealed::DataKey {
        sealed::DataKey::from_bytes([7; 32])
    }

    fn create_config(state: &mut ClusterState, name: &str, data: Vec<u8>) {
        state
            .apply(&Command::CreateConfig {
                name: name.into(),
                labels: Default::default(),
                data: Blob(data),
                at: Timestamp(1),
            })
            .expect("created");
    }

    /// A state with one task, on `node`, of a service that mounts secret `db-password` and
    /// config `site`.
    fn state_with_task(node: &str) -> (ClusterState, TaskId) {
        let mut state = ClusterState::default();
        let sealed = sealed::seal_secret(&key(), "db-password", b"hunter2").expect("sealed");
        state
            .apply(&Command::CreateSecret {
                name: "db-password".into(),
                labels: Default::default(),
                sealed,
                at: Timestamp(1),
            })
            .expect("created");
        create_config(&mut state, "site", b"listen 80".to_vec());
        let mut spec = synthetic::spec("web", 1);
        spec.secrets = vec![FileRef::secret("db-password")];
        spec.configs = vec![FileRef::config("site")];
        let service = synthetic::create_service(&mut state, spec, Timestamp(2)).expect("created");
        let task = TaskId(7);
        state.tasks.insert(
            task,
            Task {
                id: task,
                service,
                slot: Some(1),
                node: Some(NodeId::new(node)),
                spec_version: 1,
                desired: DesiredState::Running,
                status: status_at(TaskState::Assigned, Timestamp(2)),
                created_at: Timestamp(2),
                not_before: Timestamp(2),
            },
        );
        (state, task)
    }

    #[test]
    fn the_tasks_node_gets_its_files_and_no_other_node_does() {
        let (state, task) = state_with_task("node-a");
        let node = NodeId::new("node-a");
        let DispatchResponse::Files(page) = serve(&state, Some(&key()), &node, task, 0) else {
            panic!("files expected");
        };
        assert_eq!(page.total, 2);
        assert_eq!(page.files[0].kind, ObjectKind::Secret);
        assert_eq!(page.files[0].bytes.as_slice(), b"hunter2");
        assert_eq!(page.files[0].target, "/run/secrets/db-password");
        assert_eq!(page.files[1].bytes.as_slice(), b"listen 80");
        let DispatchResponse::Files(rest) = serve(&state, Some(&key()), &node, task, 1) else {
            panic!("files expected");
        };
        assert_eq!(rest.files.len(), 1);

        let other = NodeId::new("node-b");
        let refused = serve(&state, Some(&key()), &other, task, 0);
        assert!(
            matches!(&refused, DispatchResponse::FilesRefused { reason } if reason.contains("not assigned")),
            "{refused:?}"
        );
        let unknown = serve(&state, Some(&key()), &node, TaskId(999), 0);
        assert!(matches!(unknown, DispatchResponse::FilesRefused { .. }));
    }

    #[test]
    fn a_leader_without_the_key_says_ask_again_and_a_wrong_key_refuses_without_the_value() {
        let (state, task) = state_with_task("node-a");
        let node = NodeId::new("node-a");
        assert!(matches!(
            serve(&state, None, &node, task, 0),
            DispatchResponse::Retry { .. }
        ));
        let wrong = sealed::DataKey::from_bytes([8; 32]);
        let answer = serve(&state, Some(&wrong), &node, task, 0);
        let DispatchResponse::FilesRefused { reason } = answer else {
            panic!("refused expected");
        };
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn a_stopping_task_gets_no_files() {
        let (mut state, task) = state_with_task("node-a");
        state.tasks.get_mut(&task).expect("task").desired = DesiredState::Shutdown;
        let answer = serve(&state, Some(&key()), &NodeId::new("node-a"), task, 0);
        assert!(matches!(answer, DispatchResponse::FilesRefused { .. }));
    }

    #[test]
    fn large_files_go_in_pages_that_fit_one_message() {
        let (mut state, task) = state_with_task("node-a");
        let service: ServiceId = state.tasks[&task].service;
        let mut configs = Vec::new();
        for i in 0..12 {
            let name = format!("big-{i}");
            create_config(&mut state, &name, vec![b'x'; 500 * 1024]);
            configs.push(FileRef::config(&name));
        }
        state
            .services
            .get_mut(&service)
            .expect("service")
            .spec
            .configs = configs;
        let node = NodeId::new("node-a");
        let mut held = 0u32;
        let mut pages = 0;
        while held < 13 {
            let answer = serve(&state, Some(&key()), &node, task, held);
            encode(&answer).expect("every page fits one message");
            let DispatchResponse::Files(page) = answer else {
                panic!("files expected");
            };
            assert_eq!(page.total, 13);
            assert!(!page.files.is_empty());
            held += page.files.len() as u32;
            pages += 1;
        }
        assert!(pages >= 2, "{pages} pages");
    }
}
