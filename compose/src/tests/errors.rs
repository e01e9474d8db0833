//! Files that are refused, and where the error points; unsupported keys, warned or refused.

use super::{env, err, fixtures, ok};
use crate::{ComposeError, ComposeFile, LoadOptions, load};

fn load_fixture(name: &str, strict: bool) -> Result<crate::Stack, ComposeError> {
    let file = ComposeFile::read(fixtures().join(name)).expect("fixture");
    load("st", &[file], &env(), &LoadOptions { strict })
}

#[test]
fn invalid_yaml_names_line_and_column() {
    let e = load_fixture("invalid.yaml", false).expect_err("invalid");
    let ComposeError::Yaml { at, message } = &e else {
        panic!("not a YAML error: {e}")
    };
    assert!(at.file.ends_with("invalid.yaml"), "{e}");
    assert_eq!((at.line, at.column), (5, 5), "{e}");
    assert!(!message.is_empty());
    assert!(
        e.to_string().contains("invalid.yaml:5:5: invalid YAML: "),
        "{e}"
    );
    let e = err("services:\n  web:\n\timage: x\n");
    assert!(e.starts_with("/project/compose.yaml:3:"), "{e}");
}

#[test]
fn not_a_compose_file() {
    let e = load_fixture("not-compose.yaml", false).expect_err("list");
    assert!(e.to_string().ends_with("not-compose.yaml:2:1: not a Compose file: the top level must be a mapping with a `services` key, not a sequence"), "{e}");
    assert_eq!(
        err("just text\n"),
        "/project/compose.yaml:1:1: not a Compose file: the top level must be a mapping with a `services` key, not a scalar"
    );
    assert!(err("").contains("empty"));
    assert!(err("# only a comment\n").contains("empty"));
    assert!(err("volumes: {}\n").contains("no `services` key"));
    assert!(err("services: {}\n").contains("`services` is empty"));
    assert!(err("services: [web]\n").contains("`services` must be a mapping"));
    assert!(err("services:\n  web: busybox\n").contains("`services.web` must be a mapping"));
    assert!(err("services:\n  web:\n    command: x\n").contains("has no `image`"));
    assert!(err("services:\n  web:\n    image: [busybox]\n").contains("`image` must be a string"));
    assert!(err("services:\n  'we b':\n    image: busybox\n").contains("service name"));
    assert!(err("a: 1\n---\nb: 2\n").contains("second YAML document"));
}

#[test]
fn unknown_keys_are_errors_with_their_place() {
    assert_eq!(
        err("services:\n  web:\n    image: busybox\n    imagee: busybox\n"),
        "/project/compose.yaml:4:5: unknown key `imagee` in service \"web\": not a Compose key (extensions start with `x-`)"
    );
    assert!(
        err("servics:\n  web:\n    image: busybox\n")
            .contains("unknown key `servics` at the top level")
    );
    assert!(
        err("services:\n  web:\n    image: busybox\n    healthcheck: {tst: x}\n")
            .contains("`healthcheck`")
    );
    assert!(
        err("services:\n  web:\n    image: busybox\nvolumes:\n  v: {drivr: x}\n")
            .contains("`volumes.v`")
    );
}

#[test]
fn unsupported_keys_warn_and_strict_refuses_them() {
    let stack = load_fixture("unsupported.yaml", false).expect("warnings only");
    let got: Vec<_> = stack
        .warnings
        .iter()
        .map(|w| {
            (
                w.service.as_deref().unwrap_or(""),
                w.key.as_str(),
                w.at.line,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("builder", "privileged", 5),
            ("builder", "network_mode", 6),
            ("builder", "build", 4),
            ("web", "container_name", 9),
            ("web", "deploy.endpoint_mode", 11),
        ]
    );
    let text = stack.warnings[0].to_string();
    assert!(text.ends_with("unsupported.yaml:5:5: service \"builder\": `privileged` is not supported by shoal and is ignored"), "{text}");
    let e = load_fixture("unsupported.yaml", true).expect_err("strict");
    let ComposeError::Strict { warnings } = &e else {
        panic!("{e}")
    };
    assert_eq!(warnings.len(), 5);
    let text = e.to_string();
    assert!(
        text.starts_with("5 unsupported setting(s) (strict mode):"),
        "{text}"
    );
    assert!(
        text.contains("`network_mode` \"host\" is not supported"),
        "{text}"
    );
    // A file without unsupported keys loads the same in strict mode.
    let clean = "services:\n  web:\n    image: busybox\n";
    let strict = load(
        "st",
        &[ComposeFile::new("/p/c.yaml", clean)],
        &env(),
        &LoadOptions { strict: true },
    );
    assert!(strict.is_ok());
}

#[test]
fn build_without_image_is_an_error() {
    let e = err("services:\n  web:\n    build: .\n");
    assert!(
        e.starts_with("/project/compose.yaml:3:5:") && e.contains("does not build images"),
        "{e}"
    );
}

#[test]
fn depends_on_cycles_are_errors() {
    let e = load_fixture("cycle.yaml", false).expect_err("cycle");
    let ComposeError::Cycle { cycle } = &e else {
        panic!("{e}")
    };
    assert_eq!(cycle, &["a", "b", "c", "a"]);
    assert_eq!(e.to_string(), "depends_on cycle: a -> b -> c -> a");
    let e = err("services:\n  a:\n    image: busybox\n    depends_on: [a]\n");
    assert_eq!(e, "depends_on cycle: a -> a");
}

#[test]
fn stack_names_and_no_files() {
    for bad in ["", "Shop", "-x", "a b", "a/b"] {
        let r = load(
            bad,
            &[ComposeFile::new("c.yaml", "services: {s: {image: x}}")],
            &env(),
            &LoadOptions::default(),
        );
        assert!(matches!(r, Err(ComposeError::StackName(_))), "{bad:?}");
    }
    assert!(matches!(
        load("ok", &[], &env(), &LoadOptions::default()),
        Err(ComposeError::NoFiles)
    ));
    let long = "x".repeat(70);
    let e = load(
        &long,
        &[ComposeFile::new("c.yaml", "services: {s: {image: x}}")],
        &env(),
        &LoadOptions::default(),
    )
    .expect_err("too long");
    assert!(e.to_string().contains("not valid for shoal"), "{e}");
}

#[test]
fn errors_after_a_merge_point_into_the_later_file() {
    let files = [
        ComposeFile::new("/p/base.yaml", "services:\n  web:\n    image: busybox\n"),
        ComposeFile::new(
            "/p/over.yaml",
            "services:\n  web:\n    deploy:\n      replicas: many\n",
        ),
    ];
    let e = load("st", &files, &env(), &LoadOptions::default()).expect_err("bad");
    assert!(e.to_string().starts_with("/p/over.yaml:4:17:"), "{e}");
    let ok_stack = ok("services:\n  web:\n    image: busybox\n");
    assert!(ok_stack.warnings.is_empty());
}
