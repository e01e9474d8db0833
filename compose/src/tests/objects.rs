//! Top-level `secrets`, `configs`, `volumes`, `networks`, extensions and anchors.

use std::path::PathBuf;

use super::{err, ok};
use crate::FileSource;

#[test]
fn secrets_and_configs_from_every_source() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\nsecrets:\n  a: {file: ./secrets/a.txt}\n  b: {external: true}\n  c: {external: true, name: real-c}\n  d: {environment: TOKEN, labels: {k: v}}\n  e: {file: /abs/e, name: custom-e}\nconfigs:\n  f: {file: ../f.conf}\n  g: {content: \"tag=${TAG}\"}\n  h: {external: {name: legacy-h}}\n",
    );
    let s = |n: &str| stack.secrets.get(n).expect(n);
    assert_eq!(
        s("a").source,
        FileSource::File(PathBuf::from("/project/secrets/a.txt"))
    );
    assert_eq!(s("a").name, "st_a");
    assert_eq!(
        (s("b").name.as_str(), &s("b").source),
        ("b", &FileSource::External)
    );
    assert_eq!(s("c").name, "real-c");
    assert_eq!(s("d").source, FileSource::Environment("TOKEN".into()));
    assert_eq!(s("d").labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(s("e").name, "custom-e");
    let c = |n: &str| stack.configs.get(n).expect(n);
    assert_eq!(c("f").source, FileSource::File(PathBuf::from("/f.conf")));
    assert_eq!(c("g").source, FileSource::Content("tag=1.2".into()));
    assert_eq!(
        (c("h").name.as_str(), &c("h").source),
        ("legacy-h", &FileSource::External)
    );
    assert!(
        err("services:\n  s:\n    image: busybox\nsecrets:\n  a: {content: x}\n")
            .contains("unknown key `content`")
    );
    assert!(
        err("services:\n  s:\n    image: busybox\nsecrets:\n  a: {file: x, external: true}\n")
            .contains("one of")
    );
    assert!(
        err("services:\n  s:\n    image: busybox\nsecrets:\n  a: {name: x}\n")
            .contains("needs one of")
    );
}

#[test]
fn volumes_and_networks() {
    let stack = ok(
        "services:\n  s:\n    image: busybox\nvolumes:\n  plain:\n  named: {name: exact}\n  ext: {external: true}\n  opts:\n    driver: local\n    driver_opts: {type: tmpfs, device: tmpfs}\n    labels: [a=b]\nnetworks:\n  front:\n  back: {driver: overlay, internal: true, attachable: true, labels: {x: y}}\n  outside: {external: true, name: host-net}\n  odd: {driver: macvlan, ipam: {driver: default}}\n",
    );
    let v = |n: &str| stack.volumes.get(n).expect(n);
    assert_eq!(v("plain").name, "st_plain");
    assert_eq!(v("named").name, "exact");
    assert!(v("ext").external && v("ext").name == "ext");
    assert_eq!(v("opts").driver.as_deref(), Some("local"));
    assert_eq!(
        v("opts").driver_opts.get("device").map(String::as_str),
        Some("tmpfs")
    );
    assert_eq!(v("opts").labels.get("a").map(String::as_str), Some("b"));
    let n = |k: &str| stack.networks.get(k).expect(k);
    assert_eq!(n("front").name, "st_front");
    assert!(n("back").internal && n("back").attachable);
    assert_eq!(
        (n("outside").name.as_str(), n("outside").external),
        ("host-net", true)
    );
    let keys: Vec<_> = stack.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["networks.odd.driver", "networks.odd.ipam"]);
    assert!(stack.warnings.iter().all(|w| w.service.is_none()));
}

#[test]
fn anchors_merge_keys_and_extension_fields() {
    let stack = ok(r#"
version: "3.9"
x-common: &common
  image: busybox:${TAG}
  environment: &env
    MODE: prod
  deploy:
    replicas: 2
  x-note: extensions are allowed inside services too
x-ports: &ports ["80:80"]
services:
  a:
    <<: *common
    ports: *ports
  b:
    <<: *common
    environment:
      <<: *env
      EXTRA: "1"
    deploy:
      replicas: 5
      x-owner: team
"#);
    let a = stack.service("a").expect("a");
    assert_eq!(a.spec.image, "busybox:1.2");
    assert_eq!(a.spec.env, ["MODE=prod"]);
    assert_eq!(
        a.spec.mode,
        shoal_scheduler::ServiceMode::Replicated { replicas: 2 }
    );
    assert_eq!(a.spec.ports.len(), 1);
    let b = stack.service("b").expect("b");
    assert_eq!(b.spec.env, ["EXTRA=1", "MODE=prod"]);
    assert_eq!(
        b.spec.mode,
        shoal_scheduler::ServiceMode::Replicated { replicas: 5 }
    );
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
}

#[test]
fn interpolation_in_a_file() {
    let stack = ok(
        "services:\n  s:\n    image: \"busybox:${TAG:-latest}\"\n    command: echo $$HOME ${EMPTY-unset} ${EMPTY:-empty}\n    deploy:\n      replicas: ${REPLICAS:-3}\n      resources: {limits: {memory: \"${MEM:-64}m\"}}\n    environment:\n      E: ${EMPTY}\n",
    );
    let s = &stack.services[0];
    assert_eq!(s.spec.image, "busybox:1.2");
    assert_eq!(s.spec.args, ["echo", "$HOME", "empty"]);
    assert_eq!(
        s.spec.mode,
        shoal_scheduler::ServiceMode::Replicated { replicas: 3 }
    );
    assert_eq!(s.spec.resources.limits.memory_bytes, 64 << 20);
    assert_eq!(s.spec.env, ["E="]);
    let e = err("services:\n  s:\n    image: ${IMAGE:?the image to run}\n");
    assert_eq!(
        e,
        "/project/compose.yaml:3:12: required variable IMAGE is not set: the image to run"
    );
    assert!(err("services:\n  s:\n    image: busybox\n    command: echo $(date)\n").contains("$$"));
}
