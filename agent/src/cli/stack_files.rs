//! The secrets and configs of a stack: made before its services from the Compose file's
//! `file:`, `environment:` and `content:` sources, named as the stack names them (`STACK_NAME`
//! unless the file gives a `name:`) and labelled with the stack, so that `stack rm` removes them
//! with its services. `external` ones must exist already.
//!
//! Secrets and configs are immutable. One that exists already is kept when it holds what the
//! file gives; one whose content differs is an error (nothing is deployed), and so is a secret
//! the stack did not make. A secret's value is never read back: a manager compares it with the
//! file's and answers whether they are the same. A changed value needs a new name.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shoal_compose::{Environment, FileObject, FileSource, STACK_NAMESPACE_LABEL, Stack};
use shoal_scheduler::ObjectKind;
use shoal_scheduler::secrets::MAX_VALUE_BYTES;
use zeroize::Zeroizing;

use super::secret::{collection, one, read_value};
use crate::control::api::{
    self, CompareValueRequest, CompareValueResponse, ConfigView, CreateObjectRequest,
    CreateObjectResponse, SecretView,
};
use crate::control::client::{ClientError, ControlClient};

/// What deploying does with one secret or config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectChange {
    /// It is made from the file.
    Create,
    /// It exists with the same content (a secret: made by this stack).
    Keep,
    /// It is `external` and exists.
    External,
}

/// One secret or config the stack's services mount, and what deploying does with it.
#[derive(Debug)]
pub struct ObjectStep<'s> {
    /// Secret or config.
    pub kind: ObjectKind,
    /// Its declaration in the file.
    pub object: &'s FileObject,
    /// What happens to it.
    pub change: ObjectChange,
    /// Its value, for one to create.
    value: Option<Zeroizing<Vec<u8>>>,
}

/// The stack's secrets and configs that its services mount, each read from its source and
/// compared with the cluster. Fails, changing nothing, on an external one that is missing, a
/// source that cannot be read, or an existing object that the file would change.
pub async fn plan<'s>(
    client: &ControlClient,
    stack: &'s Stack,
    env: &Environment,
) -> anyhow::Result<Vec<ObjectStep<'s>>> {
    let mut steps = Vec::new();
    for (kind, declared) in [
        (ObjectKind::Secret, &stack.secrets),
        (ObjectKind::Config, &stack.configs),
    ] {
        for (key, object) in declared {
            if !mounted(stack, kind, key) {
                continue;
            }
            steps.push(step(client, stack, env, kind, key, object).await?);
        }
    }
    Ok(steps)
}

/// Whether a service of the stack mounts `kind` `key` (as the file names it).
fn mounted(stack: &Stack, kind: ObjectKind, key: &str) -> bool {
    stack.services.iter().any(|s| {
        let mounts = match kind {
            ObjectKind::Secret => &s.secrets,
            ObjectKind::Config => &s.configs,
        };
        mounts.iter().any(|m| m.source == key)
    })
}

async fn step<'s>(
    client: &ControlClient,
    stack: &Stack,
    env: &Environment,
    kind: ObjectKind,
    key: &str,
    object: &'s FileObject,
) -> anyhow::Result<ObjectStep<'s>> {
    let name = &object.name;
    let existing = existing(client, kind, name).await?;
    if object.source == FileSource::External {
        anyhow::ensure!(
            existing.is_some(),
            "{kind} {name} ({key:?} in the file) is external and does not exist: create it \
             with `shoal {kind} create {name} FILE`"
        );
        return Ok(ObjectStep {
            kind,
            object,
            change: ObjectChange::External,
            value: None,
        });
    }
    let value = value_of(kind, key, object, env)?;
    let change = match existing {
        None => ObjectChange::Create,
        Some(Existing::Config(view)) => {
            let held = BASE64
                .decode(view.data.unwrap_or_default())
                .context("the agent answered a config whose data is not base64")?;
            anyhow::ensure!(
                held == value.as_slice(),
                "config {name} exists with other content, and configs cannot change: give the \
                 new content another name (`name: {name}_v2` under the top-level `configs`), \
                 or remove the stack first"
            );
            ObjectChange::Keep
        }
        Some(Existing::Secret(view)) => {
            anyhow::ensure!(
                view.labels.get(STACK_NAMESPACE_LABEL) == Some(&stack.name),
                "secret {name} exists and was not made by stack {}: mark it `external: true`, \
                 or give the stack's another name",
                stack.name
            );
            anyhow::ensure!(
                holds(client, name, &value).await?,
                "secret {name} exists with another value, and secrets cannot change: give the \
                 new value another name (`name: {name}_v2` under the top-level `secrets`), or \
                 remove the stack first"
            );
            ObjectChange::Keep
        }
    };
    let value = (change == ObjectChange::Create).then_some(value);
    Ok(ObjectStep {
        kind,
        object,
        change,
        value,
    })
}

/// Whether secret `name` holds `value`: a manager opens it and compares, and answers one bit.
async fn holds(client: &ControlClient, name: &str, value: &[u8]) -> anyhow::Result<bool> {
    let request = CompareValueRequest {
        data: BASE64.encode(value),
    };
    let answer: CompareValueResponse = client
        .post(&api::secret_compare(name), &request)
        .await
        .with_context(|| format!("comparing the file's value with secret {name}'s"))?;
    Ok(answer.same)
}

/// A secret or config as the cluster holds it.
enum Existing {
    Secret(SecretView),
    Config(ConfigView),
}

async fn existing(
    client: &ControlClient,
    kind: ObjectKind,
    name: &str,
) -> anyhow::Result<Option<Existing>> {
    let path = one(kind, name);
    let found = match kind {
        ObjectKind::Secret => client.get(&path).await.map(Existing::Secret),
        ObjectKind::Config => client.get(&path).await.map(Existing::Config),
    };
    match found {
        Ok(found) => Ok(Some(found)),
        Err(ClientError::Api { status, .. }) if status == hyper::StatusCode::NOT_FOUND => Ok(None),
        Err(error) => Err(error).with_context(|| format!("looking up {kind} {name}")),
    }
}

/// The value a secret or config gets from its source in the file.
fn value_of(
    kind: ObjectKind,
    key: &str,
    object: &FileObject,
    env: &Environment,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let value = match &object.source {
        FileSource::File(path) => {
            read_value(kind, &path.to_string_lossy()).with_context(|| format!("{kind} {key:?}"))?
        }
        FileSource::Environment(var) => {
            let value = env.get(var).with_context(|| {
                format!("{kind} {key:?} comes from variable {var}, which is not set")
            })?;
            Zeroizing::new(value.as_bytes().to_vec())
        }
        FileSource::Content(text) => Zeroizing::new(text.as_bytes().to_vec()),
        FileSource::External => {
            anyhow::bail!("{kind} {key:?} is external: the file gives no value")
        }
    };
    anyhow::ensure!(
        value.len() <= MAX_VALUE_BYTES,
        "{kind} {key:?}: a {kind} holds at most {} KiB",
        MAX_VALUE_BYTES / 1024
    );
    Ok(value)
}

/// Makes the secrets and configs the plan creates, labelled with the stack.
pub async fn create(
    client: &ControlClient,
    stack: &Stack,
    steps: &mut [ObjectStep<'_>],
) -> anyhow::Result<()> {
    for step in steps.iter_mut() {
        let Some(value) = step.value.take() else {
            continue;
        };
        let mut labels = step.object.labels.clone();
        labels.insert(STACK_NAMESPACE_LABEL.to_owned(), stack.name.clone());
        let request = Zeroizing::new(CreateObjectRequest {
            name: step.object.name.clone(),
            labels,
            data: BASE64.encode(value.as_slice()),
        });
        drop(value);
        let created: CreateObjectResponse = client
            .post(collection(step.kind), &*request)
            .await
            .with_context(|| format!("creating {} {}", step.kind, step.object.name))?;
        println!(
            "{} {} created as {}",
            step.kind, step.object.name, created.id
        );
    }
    Ok(())
}

/// Removes the secrets and configs stack `name` made (those labelled with it); what a service
/// outside the stack still uses is kept, and said.
pub async fn remove(client: &ControlClient, name: &str) -> anyhow::Result<Vec<String>> {
    let mine = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(STACK_NAMESPACE_LABEL).map(String::as_str) == Some(name)
    };
    let secrets: Vec<SecretView> = client.get(collection(ObjectKind::Secret)).await?;
    let configs: Vec<ConfigView> = client.get(collection(ObjectKind::Config)).await?;
    let owned = secrets
        .into_iter()
        .filter(|s| mine(&s.labels))
        .map(|s| (ObjectKind::Secret, s.name))
        .chain(
            configs
                .into_iter()
                .filter(|c| mine(&c.labels))
                .map(|c| (ObjectKind::Config, c.name)),
        );
    let mut failed = Vec::new();
    for (kind, object) in owned {
        match client.delete::<String>(&one(kind, &object)).await {
            Ok(_) => println!("removing {kind} {object}"),
            Err(error) => failed.push(format!("{kind} {object}: {error}")),
        }
    }
    Ok(failed)
}
