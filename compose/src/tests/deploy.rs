//! Every form of every `deploy` key.

use shoal_scheduler::{
    Constraint, ConstraintKey, ConstraintOp, FailureAction, PlacementPreference, RestartCondition,
    ServiceMode, UpdateConfig, UpdateOrder,
};

use super::{err, ok, one};

#[test]
fn mode_and_replicas() {
    assert_eq!(
        one("    deploy: {replicas: 4}\n").spec.mode,
        ServiceMode::Replicated { replicas: 4 }
    );
    assert_eq!(
        one("    deploy: {mode: replicated, replicas: '0'}\n")
            .spec
            .mode,
        ServiceMode::Replicated { replicas: 0 }
    );
    assert_eq!(
        one("    deploy: {mode: global}\n").spec.mode,
        ServiceMode::Global
    );
    assert_eq!(
        one("    deploy:\n").spec.mode,
        ServiceMode::Replicated { replicas: 1 }
    );
    let stack = ok("services:\n  s:\n    image: busybox\n    deploy: {mode: replicated-job}\n");
    assert_eq!(stack.warnings[0].key, "deploy.mode");
    assert!(
        err("services:\n  s:\n    image: busybox\n    deploy: {mode: global, replicas: 2}\n")
            .contains("global")
    );
    assert!(
        err("services:\n  s:\n    image: busybox\n    deploy: {mode: everywhere}\n")
            .contains("everywhere")
    );
    assert!(
        err("services:\n  s:\n    image: busybox\n    deploy: {replicas: -1}\n")
            .contains("deploy.replicas")
    );
}

#[test]
fn placement() {
    let s = one(
        "    deploy:\n      placement:\n        constraints:\n          - node.labels.zone == eu\n          - node.role!=manager\n          - node.platform.os==linux\n        preferences:\n          - spread: node.labels.rack\n          - spread: node.labels.zone\n        max_replicas_per_node: 2\n",
    );
    assert_eq!(
        s.spec.constraints,
        [
            Constraint {
                key: ConstraintKey::Label("zone".into()),
                op: ConstraintOp::Eq,
                value: "eu".into()
            },
            Constraint {
                key: ConstraintKey::Role,
                op: ConstraintOp::Ne,
                value: "manager".into()
            },
            Constraint {
                key: ConstraintKey::PlatformOs,
                op: ConstraintOp::Eq,
                value: "linux".into()
            },
        ]
    );
    assert_eq!(
        s.spec.preferences,
        [
            PlacementPreference::SpreadOverLabel("rack".into()),
            PlacementPreference::SpreadOverLabel("zone".into())
        ]
    );
    assert_eq!(s.spec.max_replicas_per_node, 2);
    let e = err(
        "services:\n  s:\n    image: busybox\n    deploy:\n      placement:\n        constraints: [node.colour == red]\n",
    );
    assert!(
        e.starts_with("/project/compose.yaml:6:") && e.contains("invalid constraint"),
        "{e}"
    );
    assert!(err("services:\n  s:\n    image: busybox\n    deploy: {placement: {preferences: [{spread: zone}]}}\n").contains("placement preference"));
}

#[test]
fn resources_in_every_unit() {
    let s = one(
        "    deploy:\n      resources:\n        limits:\n          cpus: '0.5'\n          memory: 512M\n        reservations:\n          cpus: 0.25\n          memory: 1g\n",
    );
    let r = s.spec.resources;
    assert_eq!(
        (r.limits.nano_cpus, r.limits.memory_bytes),
        (500_000_000, 512 << 20)
    );
    assert_eq!(
        (r.reservations.nano_cpus, r.reservations.memory_bytes),
        (250_000_000, 1 << 30)
    );
    for (text, bytes) in [
        ("1048576", 1u64 << 20),
        ("64k", 64 << 10),
        ("2GiB", 2 << 30),
        ("1.5g", 3 << 29),
        ("100mb", 100 << 20),
    ] {
        let s = one(&format!(
            "    deploy: {{resources: {{limits: {{memory: {text}}}}}}}\n"
        ));
        assert_eq!(s.spec.resources.limits.memory_bytes, bytes, "{text}");
    }
    let s = one("    deploy: {resources: {limits: {cpus: 2}}}\n");
    assert_eq!(s.spec.resources.limits.nano_cpus, 2_000_000_000);
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    deploy:\n      resources:\n        limits: {pids: 100}\n        reservations:\n          devices: [{capabilities: [gpu]}]\n          generic_resources: []\n",
    );
    let keys: Vec<_> = stack.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "deploy.resources.limits.pids",
            "deploy.resources.reservations.devices",
            "deploy.resources.reservations.generic_resources"
        ]
    );
    assert!(err("services:\n  s:\n    image: busybox\n    deploy: {resources: {limits: {memory: lots}}}\n").contains("invalid size"));
    assert!(
        err("services:\n  s:\n    image: busybox\n    deploy: {resources: {limits: {cpus: -1}}}\n")
            .contains("invalid cpus")
    );
}

#[test]
fn restart_policy() {
    let s = one(
        "    deploy:\n      restart_policy:\n        condition: on-failure\n        delay: 5s\n        max_attempts: 3\n        window: 2m\n",
    );
    let r = s.spec.restart;
    assert_eq!(
        (r.condition, r.delay_ms, r.max_attempts, r.window_ms),
        (RestartCondition::OnFailure, 5_000, 3, 120_000)
    );
    for (text, c) in [
        ("none", RestartCondition::None),
        ("any", RestartCondition::Any),
    ] {
        assert_eq!(
            one(&format!(
                "    deploy: {{restart_policy: {{condition: {text}}}}}\n"
            ))
            .spec
            .restart
            .condition,
            c
        );
    }
    assert!(err("services:\n  s:\n    image: busybox\n    deploy: {restart_policy: {condition: always}}\n").contains("restart condition"));
}

#[test]
fn update_and_rollback_config() {
    let s = one(
        "    deploy:\n      update_config:\n        parallelism: 2\n        delay: 10s\n        failure_action: rollback\n        monitor: 30s\n        max_failure_ratio: 0.3\n        order: start-first\n      rollback_config:\n        parallelism: 0\n        failure_action: continue\n        order: stop-first\n",
    );
    assert_eq!(
        s.spec.update,
        UpdateConfig {
            parallelism: 2,
            delay_ms: 10_000,
            order: UpdateOrder::StartFirst,
            failure_action: FailureAction::Rollback,
            monitor_ms: 30_000,
            max_failure_permille: 300,
        }
    );
    // What rollback_config does not set comes from update_config.
    assert_eq!(
        s.spec.rollback,
        UpdateConfig {
            parallelism: 0,
            delay_ms: 10_000,
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Continue,
            monitor_ms: 30_000,
            max_failure_permille: 300,
        }
    );
    let s = one("    deploy: {update_config: {failure_action: pause, max_failure_ratio: 1}}\n");
    assert_eq!(
        (
            s.spec.update.failure_action,
            s.spec.update.max_failure_permille
        ),
        (FailureAction::Pause, 1000)
    );
    assert_eq!(s.spec.rollback.failure_action, FailureAction::Pause);
    let defaults = one("");
    assert_eq!(defaults.spec.update, UpdateConfig::default());
    assert!(err("services:\n  s:\n    image: busybox\n    deploy: {update_config: {max_failure_ratio: 1.5}}\n").contains("between 0 and 1"));
    assert!(
        err(
            "services:\n  s:\n    image: busybox\n    deploy: {update_config: {order: sideways}}\n"
        )
        .contains("sideways")
    );
    assert!(err("services:\n  s:\n    image: busybox\n    deploy: {update_config: {failure_action: panic}}\n").contains("panic"));
    assert!(err("services:\n  s:\n    image: busybox\n    deploy: {rollback_config: {failure_action: rollback}}\n").contains("rollback_config"));
    assert!(
        err("services:\n  s:\n    image: busybox\n    deploy: {update_config: {speed: 2}}\n")
            .contains("unknown key `speed`")
    );
}

#[test]
fn endpoint_mode_and_unknown_deploy_keys() {
    one("    deploy: {endpoint_mode: vip}\n");
    let stack = ok("services:\n  s:\n    image: busybox\n    deploy: {endpoint_mode: dnsrr}\n");
    assert_eq!(stack.warnings[0].key, "deploy.endpoint_mode");
    let e = err("services:\n  s:\n    image: busybox\n    deploy:\n      replica: 3\n");
    assert_eq!(
        e,
        "/project/compose.yaml:5:7: unknown key `replica` in `deploy` of service \"s\": not a Compose key (extensions start with `x-`)"
    );
}
