//! The sample stack in `tests/fixtures/shop`: a busybox httpd front reading configs, an API
//! reading a secret, a database with a health check; alone and with its override file.

use std::path::PathBuf;

use shoal_scheduler::{
    FailureAction, PortProtocol, PortSpec, RestartCondition, ServiceMode, UpdateOrder,
};

use super::fixtures;
use crate::{
    ComposeError, ComposeFile, Condition, Environment, FileSource, LoadOptions,
    STACK_NAMESPACE_LABEL, load, start_order,
};

fn shop_env() -> Environment {
    let dir = fixtures().join("shop");
    let dotenv = std::fs::read_to_string(dir.join(".env")).expect(".env");
    let vars = crate::env::parse_env_file(&dotenv, &Environment::empty()).expect("parse .env");
    Environment::from_vars(vars)
}

fn shop(files: &[&str]) -> crate::Stack {
    let dir = fixtures().join("shop");
    let files: Vec<_> = files
        .iter()
        .map(|f| ComposeFile::read(dir.join(f)).expect("fixture"))
        .collect();
    load("shop", &files, &shop_env(), &LoadOptions { strict: false }).expect("shop loads")
}

#[test]
fn the_shop_stack() {
    let stack = shop(&["compose.yaml"]);
    let dir = fixtures().join("shop");
    let names: Vec<_> = stack
        .services
        .iter()
        .map(|s| s.spec.name.as_str())
        .collect();
    assert_eq!(names, ["shop_api", "shop_db", "shop_web"]);
    let order: Vec<_> = start_order(&stack)
        .expect("order")
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(order, ["db", "api", "web"]);

    let web = stack.service("web").expect("web");
    assert_eq!(web.spec.image, "busybox:1.36");
    assert_eq!(
        web.spec.args,
        [
            "httpd",
            "-f",
            "-v",
            "-p",
            "8080",
            "-h",
            "/www",
            "-c",
            "/etc/httpd.conf"
        ]
    );
    assert_eq!(
        web.spec.ports,
        [PortSpec {
            target: 8080,
            published: 8080,
            protocol: PortProtocol::Tcp,
            host_mode: false
        }]
    );
    assert_eq!(web.spec.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(web.spec.max_replicas_per_node, 1);
    assert_eq!(web.spec.resources.limits.memory_bytes, 64 << 20);
    assert_eq!(web.spec.stop_grace_ms, 5_000);
    assert_eq!(
        web.configs
            .iter()
            .map(|c| c.target.as_str())
            .collect::<Vec<_>>(),
        ["/etc/httpd.conf", "/www/index.html"]
    );
    assert_eq!(web.depends_on[0].condition, Condition::Started);
    let health = web.spec.health.as_ref().expect("web health");
    assert_eq!(
        health.command,
        "wget -q -O /dev/null http://127.0.0.1:8080/"
    );
    assert_eq!(
        web.spec.labels.get("com.example.app").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        web.spec.labels.get("com.example.tier").map(String::as_str),
        Some("staging")
    );
    assert_eq!(
        web.spec
            .labels
            .get(STACK_NAMESPACE_LABEL)
            .map(String::as_str),
        Some("shop")
    );
    // deploy.restart_policy wins over the anchor's `restart: on-failure`.
    assert_eq!(
        (
            web.spec.restart.condition,
            web.spec.restart.max_attempts,
            web.spec.restart.delay_ms
        ),
        (RestartCondition::OnFailure, 3, 2_000)
    );
    assert_eq!(
        (
            web.spec.update.order,
            web.spec.update.failure_action,
            web.spec.update.max_failure_permille
        ),
        (UpdateOrder::StartFirst, FailureAction::Rollback, 250)
    );

    let api = stack.service("api").expect("api");
    assert_eq!(api.spec.command, ["/bin/sh", "-c"]);
    assert_eq!(api.spec.args.len(), 1);
    assert!(
        api.spec.args[0]
            .contains("db=${DB_HOST} password bytes: $(wc -c < /run/secrets/db_password)"),
        "{:?}",
        api.spec.args
    );
    assert_eq!(
        api.spec.env,
        [
            "API_WORKERS=4",
            "GREETING=hello, shop",
            "DB_HOST=db",
            "DB_USER=shop"
        ]
    );
    assert_eq!(api.secrets[0].target, "/run/secrets/db_password");
    assert_eq!(api.depends_on[0].service, "db");
    assert_eq!(api.depends_on[0].condition, Condition::Healthy);
    assert_eq!(api.spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(api.spec.resources.limits.nano_cpus, 500_000_000);
    assert_eq!(api.spec.resources.reservations.memory_bytes, 32 << 20);

    let db = stack.service("db").expect("db");
    assert_eq!(db.spec.mounts[0].source, "shop_db-data");
    assert_eq!(
        db.spec.health.as_ref().map(|h| h.command.as_str()),
        Some("test -f /data/ready")
    );
    assert_eq!(db.spec.constraints.len(), 2);
    assert_eq!(db.spec.restart.condition, RestartCondition::Any);

    assert_eq!(
        stack.secrets["db_password"].source,
        FileSource::File(dir.join("db_password.txt"))
    );
    assert_eq!(stack.secrets["db_password"].name, "shop_db_password");
    assert_eq!(
        stack.configs["httpd_conf"].source,
        FileSource::File(dir.join("httpd.conf"))
    );
    for object in stack.secrets.values().chain(stack.configs.values()) {
        let FileSource::File(path) = &object.source else {
            panic!("not a file")
        };
        assert!(path.is_file(), "{} is missing", path.display());
    }
    assert_eq!(stack.volumes["db-data"].name, "shop_db-data");
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
}

#[test]
fn the_shop_with_its_override() {
    let stack = shop(&["compose.yaml", "override.yaml"]);
    let web = stack.service("web").expect("web");
    assert_eq!(
        web.spec
            .ports
            .iter()
            .map(|p| p.published)
            .collect::<Vec<_>>(),
        [9090]
    );
    assert_eq!(web.spec.mode, ServiceMode::Replicated { replicas: 1 });
    // The rest of web's deploy is kept.
    assert_eq!(web.spec.max_replicas_per_node, 1);
    let api = stack.service("api").expect("api");
    assert!(
        api.spec.env.contains(&"LOG_LEVEL=debug".to_string()),
        "{:?}",
        api.spec.env
    );
    assert_eq!(api.spec.resources.limits.memory_bytes, 256 << 20);
    assert_eq!(api.spec.resources.limits.nano_cpus, 500_000_000);
}

#[test]
fn the_shop_needs_its_required_variable() {
    let dir = fixtures().join("shop");
    let file = ComposeFile::read(dir.join("compose.yaml")).expect("fixture");
    let e = load(
        "shop",
        &[file],
        &Environment::empty(),
        &LoadOptions::default(),
    )
    .expect_err("DB_USER unset");
    let ComposeError::Interpolation { at, message } = &e else {
        panic!("{e}")
    };
    assert_eq!(at.line, 69);
    assert_eq!(
        message,
        "required variable DB_USER is not set: set DB_USER (in .env beside this file)"
    );
}

#[test]
fn environment_for_project_reads_the_shops_dotenv() {
    let env = Environment::for_project(&fixtures().join("shop")).expect("env");
    let expected = std::env::var("TIER").unwrap_or_else(|_| "staging".into());
    assert_eq!(env.get("TIER"), Some(expected.as_str()));
    let dir: PathBuf = crate::project_dir(std::path::Path::new("sub/compose.yaml"));
    assert!(
        dir.is_absolute() && dir.ends_with("sub"),
        "{}",
        dir.display()
    );
}
