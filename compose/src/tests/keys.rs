//! Every form of every service key outside `deploy`.

use std::collections::BTreeMap;

use shoal_scheduler::{
    MountKind, MountSpec, PortProtocol, PortSpec, RestartCondition, ServiceMode,
};

use super::{err, ok, one};
use crate::{Condition, Dependency, FileMount, STACK_NAMESPACE_LABEL};

fn port(published: u16, target: u16, protocol: PortProtocol, host_mode: bool) -> PortSpec {
    PortSpec {
        target,
        published,
        protocol,
        host_mode,
    }
}

fn tcp(published: u16, target: u16) -> PortSpec {
    port(published, target, PortProtocol::Tcp, false)
}

#[test]
fn name_image_and_stack_label() {
    let s = one("");
    assert_eq!(s.name, "s");
    assert_eq!(s.spec.name, "st_s");
    assert_eq!(s.spec.image, "busybox");
    assert_eq!(
        s.spec.labels.get(STACK_NAMESPACE_LABEL).map(String::as_str),
        Some("st")
    );
    assert_eq!(s.spec.mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(s.spec.stop_grace_ms, 10_000);
    assert_eq!(s.spec.restart.condition, RestartCondition::Any);
}

#[test]
fn command_and_entrypoint_as_string_or_list() {
    let s = one("    command: echo \"hello world\" 'a b' c\\ d\n    entrypoint: /bin/sh -c\n");
    assert_eq!(s.spec.args, ["echo", "hello world", "a b", "c d"]);
    assert_eq!(s.spec.command, ["/bin/sh", "-c"]);
    let s =
        one("    command: [\"sh\", \"-c\", \"echo $$HOME && ls\"]\n    entrypoint: [tini, --]\n");
    assert_eq!(s.spec.args, ["sh", "-c", "echo $HOME && ls"]);
    assert_eq!(s.spec.command, ["tini", "--"]);
    let s = one("    command: [\"echo\", 42, true]\n");
    assert_eq!(s.spec.args, ["echo", "42", "true"]);
}

#[test]
fn environment_as_map_or_list() {
    let s = one(
        "    environment:\n      A: 1\n      B: \"two words\"\n      C: ''\n      HOME:\n      UNSET_ONE:\n      T: ${TAG}\n",
    );
    assert_eq!(
        s.spec.env,
        ["A=1", "B=two words", "C=", "HOME=/home/u", "T=1.2"]
    );
    let s = one(
        "    environment:\n      - A=1\n      - B=x=y\n      - HOME\n      - UNSET_ONE\n      - EMPTY_VALUE=\n",
    );
    assert_eq!(s.spec.env, ["A=1", "B=x=y", "HOME=/home/u", "EMPTY_VALUE="]);
}

#[test]
fn env_file_as_string_list_or_long_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.env"), "A=1\nB=from-a\n").expect("write");
    std::fs::write(dir.path().join("b.env"), "B=from-b\nC=${TAG}\n").expect("write");
    let file = dir.path().join("compose.yaml");
    let load = |body: &str| {
        let yaml = format!("services:\n  s:\n    image: busybox\n{body}");
        crate::load(
            "st",
            &[crate::ComposeFile::new(&file, yaml)],
            &super::env(),
            &crate::LoadOptions::default(),
        )
    };
    let s = load("    env_file: a.env\n")
        .expect("string")
        .services
        .remove(0);
    assert_eq!(s.spec.env, ["A=1", "B=from-a"]);
    let s = load("    env_file: [./a.env, b.env]\n    environment: {A: override}\n")
        .expect("list")
        .services
        .remove(0);
    assert_eq!(s.spec.env, ["B=from-b", "C=1.2", "A=override"]);
    let s = load(
        "    env_file:\n      - path: a.env\n      - path: missing.env\n        required: false\n",
    )
    .expect("long")
    .services
    .remove(0);
    assert_eq!(s.spec.env, ["A=1", "B=from-a"]);
    let e = load("    env_file: missing.env\n").expect_err("missing");
    assert!(e.to_string().contains("missing.env"), "{e}");
}

#[test]
fn ports_short_forms() {
    let s = one(
        "    ports:\n      - \"8080:80\"\n      - 127.0.0.1:5353:53/udp\n      - \"9000-9001:9100-9101\"\n      - \"[::1]:8443:443\"\n      - 81:81/TCP\n",
    );
    assert_eq!(
        s.spec.ports,
        [
            tcp(8080, 80),
            port(5353, 53, PortProtocol::Udp, false),
            tcp(9000, 9100),
            tcp(9001, 9101),
            tcp(8443, 443),
            tcp(81, 81),
        ]
    );
}

#[test]
fn ports_without_published_or_with_a_host_ip_warn() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    ports:\n      - \"80\"\n      - 3000\n      - 127.0.0.1:8080:8080\n      - \"7000-7001:7000\"\n",
    );
    let s = &stack.services[0];
    assert_eq!(
        s.spec.ports,
        [tcp(0, 80), tcp(0, 3000), tcp(8080, 8080), tcp(7000, 7000)]
    );
    let keys: Vec<_> = stack
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.at.line))
        .collect();
    assert_eq!(
        keys,
        [("ports", 5), ("ports", 6), ("ports", 7), ("ports", 8)]
    );
    assert!(
        stack.warnings[2].message.contains("127.0.0.1"),
        "{}",
        stack.warnings[2]
    );
    assert_eq!(stack.warnings[0].service.as_deref(), Some("s"));
}

#[test]
fn ports_long_form() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    ports:\n      - target: 80\n        published: 8080\n        protocol: tcp\n        mode: host\n      - target: 53\n        published: \"5353\"\n        protocol: udp\n        mode: ingress\n        name: dns\n        app_protocol: dns\n      - {target: 90, published: 9090-9091}\n      - {target: 443, published: 443, host_ip: 0.0.0.0}\n",
    );
    assert_eq!(
        stack.services[0].spec.ports,
        [
            port(8080, 80, PortProtocol::Tcp, true),
            port(5353, 53, PortProtocol::Udp, false),
            tcp(9090, 90),
            tcp(443, 443),
        ]
    );
    assert_eq!(stack.warnings.len(), 2, "{:?}", stack.warnings);
}

#[test]
fn bad_ports_are_errors() {
    for bad in [
        "\"80:80:80:80\"",
        "\"0:80\"",
        "\"70000\"",
        "\"80/sctp\"",
        "\"9000-9001:80-82\"",
        "\"2-1:2-1\"",
        "{published: 80}",
        "{target: 80, mode: bridge}",
        "{target: 80, colour: red}",
    ] {
        let e = err(&format!(
            "services:\n  s:\n    image: busybox\n    ports:\n      - {bad}\n"
        ));
        assert!(e.starts_with("/project/compose.yaml:5:"), "{bad}: {e}");
    }
}

#[test]
fn volumes_short_forms() {
    let s = ok("services:\n  s:\n    image: busybox\n    volumes:\n      - data:/var/lib/data\n      - data:/ro:ro\n      - ./conf:/etc/conf\n      - ../shared:/shared:rw\n      - /abs/path:/abs:ro\n      - ~/cache:/cache\n      - /anonymous\nvolumes:\n  data:\n")
        .services
        .remove(0);
    let m = |kind, source: &str, target: &str, read_only| MountSpec {
        kind,
        source: source.into(),
        target: target.into(),
        read_only,
    };
    assert_eq!(
        s.spec.mounts,
        [
            m(MountKind::Volume, "st_data", "/var/lib/data", false),
            m(MountKind::Volume, "st_data", "/ro", true),
            m(MountKind::Bind, "/project/conf", "/etc/conf", false),
            m(MountKind::Bind, "/shared", "/shared", false),
            m(MountKind::Bind, "/abs/path", "/abs", true),
            m(MountKind::Bind, "/home/u/cache", "/cache", false),
            m(MountKind::Volume, "", "/anonymous", false),
        ]
    );
}

#[test]
fn volumes_long_forms_and_tmpfs() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    volumes:\n      - type: volume\n        source: data\n        target: /data\n        read_only: true\n        volume: {nocopy: true}\n      - type: bind\n        source: ./src\n        target: /src\n        bind: {create_host_path: true, propagation: rshared}\n      - type: tmpfs\n        target: /scratch\n        tmpfs: {size: 10m}\n    tmpfs:\n      - /run\n      - /tmp:size=64m\nvolumes:\n  data:\n    external: true\n    name: shared-data\n",
    );
    let s = &stack.services[0];
    let kinds: Vec<_> = s
        .spec
        .mounts
        .iter()
        .map(|m| (m.kind, m.source.as_str(), m.target.as_str(), m.read_only))
        .collect();
    assert_eq!(
        kinds,
        [
            (MountKind::Volume, "shared-data", "/data", true),
            (MountKind::Bind, "/project/src", "/src", false),
            (MountKind::Tmpfs, "", "/scratch", false),
            (MountKind::Tmpfs, "", "/run", false),
            (MountKind::Tmpfs, "", "/tmp", false),
        ]
    );
    let keys: Vec<_> = stack.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "volumes[].volume.nocopy",
            "volumes[].bind.propagation",
            "volumes[].tmpfs.size",
            "tmpfs"
        ]
    );
    let single = one("    tmpfs: /run\n");
    assert_eq!(single.spec.mounts[0].kind, MountKind::Tmpfs);
}

#[test]
fn bad_volumes_are_errors() {
    let e = err("services:\n  s:\n    image: busybox\n    volumes: [undeclared:/data]\n");
    assert!(
        e.contains("\"undeclared\"") && e.contains("top-level `volumes`"),
        "{e}"
    );
    assert!(
        err("services:\n  s:\n    image: busybox\n    volumes: [./a:relative]\n")
            .contains("absolute")
    );
    assert!(
        err("services:\n  s:\n    image: busybox\n    volumes: [/a:/b:bogus]\n").contains("bogus")
    );
    assert!(err("services:\n  s:\n    image: busybox\n    volumes: [{type: npipe, source: x, target: /x}]\n").contains("npipe"));
    assert!(
        err("services:\n  s:\n    image: busybox\n    volumes: [{type: bind, target: /x}]\n")
            .contains("source")
    );
    assert!(
        err("services:\n  s:\n    image: busybox\n    volumes: [{source: x, target: /x}]\n")
            .contains("type")
    );
}

#[test]
fn secrets_and_configs_short_and_long() {
    let s = ok("services:\n  s:\n    image: busybox\n    secrets:\n      - token\n      - source: cert\n        target: tls.pem\n        uid: '101'\n        gid: '102'\n        mode: 0400\n      - source: token\n        target: /etc/token\n    configs:\n      - app\n      - source: app\n        target: etc/app.conf\n        mode: 0o640\nsecrets:\n  token: {file: ./token.txt}\n  cert: {external: true}\nconfigs:\n  app: {file: /etc/app.conf}\n")
        .services
        .remove(0);
    let fm = |source: &str, target: &str, uid: &str, gid: &str, mode| FileMount {
        source: source.into(),
        target: target.into(),
        uid: uid.into(),
        gid: gid.into(),
        mode,
    };
    assert_eq!(
        s.secrets,
        [
            fm("token", "/run/secrets/token", "0", "0", 0o444),
            fm("cert", "/run/secrets/tls.pem", "101", "102", 0o400),
            fm("token", "/etc/token", "0", "0", 0o444),
        ]
    );
    assert_eq!(
        s.configs,
        [
            fm("app", "/app", "0", "0", 0o444),
            fm("app", "/etc/app.conf", "0", "0", 0o640)
        ]
    );
    // The spec refers to the cluster's objects: named as the stack names them, numeric owners.
    let refs: Vec<_> = s
        .spec
        .secrets
        .iter()
        .map(|r| (r.source.as_str(), r.target.as_str(), r.uid, r.gid, r.mode))
        .collect();
    assert_eq!(
        refs,
        [
            ("st_token", "/run/secrets/token", 0, 0, 0o444),
            ("cert", "/run/secrets/tls.pem", 101, 102, 0o400),
            ("st_token", "/etc/token", 0, 0, 0o444),
        ]
    );
    assert_eq!(s.spec.configs[1].source, "st_app");
    assert_eq!(s.spec.configs[1].target, "/etc/app.conf");
    let e = err("services:\n  s:\n    image: busybox\n    secrets: [nope]\n");
    assert!(e.contains("secret \"nope\""), "{e}");
    let e = err(
        "services:\n  s:\n    image: busybox\n    secrets: [{source: t, uid: www}]\nsecrets:\n  t: {external: true}\n",
    );
    assert!(e.contains("numeric"), "{e}");
}

#[test]
fn healthcheck_forms() {
    let h = one("    healthcheck:\n      test: [\"CMD\", \"curl\", \"-f\", \"http://localhost/a b\"]\n      interval: 10s\n      timeout: 1500ms\n      retries: 5\n      start_period: 1m\n")
        .spec
        .health
        .expect("health");
    assert_eq!(h.command, "curl -f 'http://localhost/a b'");
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
        (10_000, 1_500, 5, 60_000)
    );
    let h = one("    healthcheck:\n      test: [\"CMD-SHELL\", \"pg_isready || exit 1\"]\n")
        .spec
        .health
        .expect("health");
    assert_eq!(h.command, "pg_isready || exit 1");
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
        (30_000, 30_000, 3, 0)
    );
    let h = one("    healthcheck:\n      test: wget -q http://localhost/\n      interval: 1.5s\n")
        .spec
        .health
        .expect("health");
    assert_eq!(
        (h.command.as_str(), h.interval_ms),
        ("wget -q http://localhost/", 1_500)
    );
    for off in ["disable: true", "test: [\"NONE\"]"] {
        let stack = ok(&format!(
            "services:\n  s:\n    image: busybox\n    healthcheck:\n      {off}\n"
        ));
        assert_eq!(stack.services[0].spec.health, None);
        assert_eq!(stack.warnings[0].key, "healthcheck", "{off}");
    }
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    healthcheck:\n      interval: 5s\n      start_interval: 1s\n",
    );
    let keys: Vec<_> = stack.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["healthcheck.start_interval", "healthcheck"]);
    assert!(err("services:\n  s:\n    image: busybox\n    healthcheck:\n      test: [\"BOGUS\", \"x\"]\n").contains("healthcheck.test"));
    assert!(
        err("services:\n  s:\n    image: busybox\n    healthcheck:\n      test: [\"CMD\"]\n")
            .contains("healthcheck.test")
    );
}

#[test]
fn labels_as_map_or_list_and_with_deploy_labels() {
    let s = one("    labels:\n      a: '1'\n      b:\n    deploy:\n      labels: [c=3, d]\n");
    let want: BTreeMap<String, String> = [
        ("a", "1"),
        ("b", ""),
        ("c", "3"),
        ("d", ""),
        (STACK_NAMESPACE_LABEL, "st"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(s.spec.labels, want);
    let s = one("    labels: [\"x=y=z\"]\n");
    assert_eq!(s.spec.labels.get("x").map(String::as_str), Some("y=z"));
}

#[test]
fn hostname_user_working_dir_go_into_the_spec() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    hostname: box\n    user: \"1000:1000\"\n    working_dir: /srv\n",
    );
    let s = &stack.services[0];
    assert_eq!(s.spec.hostname.as_deref(), Some("box"));
    assert_eq!(s.spec.user.as_deref(), Some("1000:1000"));
    assert_eq!(s.spec.working_dir.as_deref(), Some("/srv"));
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
}

#[test]
fn depends_on_short_and_long() {
    let stack = ok(
        "services:\n  web:\n    image: busybox\n    depends_on: [api]\n  api:\n    image: busybox\n    depends_on:\n      db:\n        condition: service_healthy\n      migrate:\n        condition: service_completed_successfully\n        restart: true\n      cache:\n      optional:\n        required: false\n  db:\n    image: busybox\n  migrate:\n    image: busybox\n  cache:\n    image: busybox\n",
    );
    let api = stack.service("api").expect("api");
    let d = |service: &str, condition| Dependency {
        service: service.into(),
        condition,
        required: true,
    };
    assert_eq!(
        api.depends_on,
        [
            d("db", Condition::Healthy),
            d("migrate", Condition::CompletedSuccessfully),
            d("cache", Condition::Started)
        ]
    );
    assert_eq!(
        stack.service("web").expect("web").depends_on,
        [d("api", Condition::Started)]
    );
    assert_eq!(stack.warnings[0].key, "depends_on.migrate.restart");
    let order: Vec<_> = crate::start_order(&stack)
        .expect("order")
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(order, ["cache", "db", "migrate", "api", "web"]);
    let e = err("services:\n  web:\n    image: busybox\n    depends_on: [ghost]\n");
    assert!(
        e.starts_with("/project/compose.yaml:4:") && e.contains("\"ghost\""),
        "{e}"
    );
    let e = err(
        "services:\n  web:\n    image: busybox\n    depends_on: {db: {condition: service_ready}}\n  db:\n    image: busybox\n",
    );
    assert!(e.contains("service_ready"), "{e}");
}

#[test]
fn service_networks_list_or_map() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\n    networks:\n      front:\n        aliases: [www]\n      back:\n  t:\n    image: busybox\n    networks: [back, default]\nnetworks:\n  front:\n  back:\n    driver: overlay\n    attachable: true\n",
    );
    assert_eq!(stack.service("s").expect("s").networks, ["front", "back"]);
    assert_eq!(stack.service("t").expect("t").networks, ["back", "default"]);
    assert_eq!(stack.warnings.len(), 1);
    assert_eq!(stack.warnings[0].key, "networks.front.aliases");
    assert!(
        err("services:\n  s:\n    image: busybox\n    networks: [nowhere]\n")
            .contains("\"nowhere\"")
    );
}

#[test]
fn service_level_resources_restart_scale_and_grace() {
    let s = one(
        "    cpus: 1.5\n    mem_limit: 1g\n    mem_reservation: 512m\n    restart: on-failure:4\n    scale: 3\n    stop_grace_period: 1m30s\n    expose: [\"80\"]\n",
    );
    assert_eq!(s.spec.resources.limits.nano_cpus, 1_500_000_000);
    assert_eq!(s.spec.resources.limits.memory_bytes, 1 << 30);
    assert_eq!(s.spec.resources.reservations.memory_bytes, 512 << 20);
    assert_eq!(
        (s.spec.restart.condition, s.spec.restart.max_attempts),
        (RestartCondition::OnFailure, 4)
    );
    assert_eq!(s.spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(s.spec.stop_grace_ms, 90_000);
    for (text, condition) in [
        ("no", RestartCondition::None),
        ("always", RestartCondition::Any),
        ("unless-stopped", RestartCondition::Any),
        ("on-failure", RestartCondition::OnFailure),
    ] {
        assert_eq!(
            one(&format!("    restart: {text}\n"))
                .spec
                .restart
                .condition,
            condition,
            "{text}"
        );
    }
    // deploy wins over the service-level forms.
    let s = one(
        "    cpus: 2\n    restart: \"no\"\n    scale: 3\n    deploy:\n      replicas: 5\n      resources: {limits: {memory: 1M}}\n      restart_policy: {condition: any}\n",
    );
    assert_eq!(s.spec.mode, ServiceMode::Replicated { replicas: 5 });
    assert_eq!(s.spec.resources.limits.nano_cpus, 0);
    assert_eq!(s.spec.restart.condition, RestartCondition::Any);
}
