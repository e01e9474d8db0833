//! Several Compose files (`-c base.yaml -c override.yaml`) merged into one tree, in order, the
//! later file winning, with the rules of `docker compose`:
//!
//! - mappings merge key by key, recursively; a scalar or a sequence is replaced whole
//!   (`command`, `entrypoint`, `healthcheck.test`, ...);
//! - `environment`, `labels`, `deploy.labels`, `annotations`, `sysctls`, `depends_on` and a
//!   service's `networks` merge as mappings whichever form (list or mapping) each file used;
//! - `ports`, `expose`, `env_file`, `dns`, `dns_search`, `cap_add`, `cap_drop`, `tmpfs`,
//!   `security_opt`, `profiles`, `deploy.placement.constraints` and `preferences` are
//!   appended, leaving out entries already there;
//! - `volumes` merge by target path, `secrets` and `configs` by source name (a later entry
//!   replaces an earlier one with the same target or source);
//! - a later value tagged `!reset` removes the key, one tagged `!override` replaces it whole.
//!
//! Each file is interpolated before it is merged, and nodes keep the place of the file they
//! came from, so errors found after the merge still point into the right file.

use crate::yaml::{Key, MergeTag, Node, Scalar, Value};

/// Merges `over` into `base`.
pub fn merge(base: &mut Node, over: Node) {
    let mut path = Vec::new();
    merge_at(base, over, &mut path);
}

#[derive(Clone, Copy)]
enum Rule {
    Recurse,
    KeyValueMap,
    DependsMap,
    NetworksMap,
    Append,
    ByKey(fn(&Node) -> Option<String>),
}

fn rule(path: &[String]) -> Rule {
    if path.len() < 3 || path[0] != "services" {
        return Rule::Recurse;
    }
    match path[2..].join(".").as_str() {
        "environment" | "labels" | "deploy.labels" | "annotations" | "sysctls" => Rule::KeyValueMap,
        "depends_on" => Rule::DependsMap,
        "networks" => Rule::NetworksMap,
        "ports"
        | "expose"
        | "env_file"
        | "dns"
        | "dns_search"
        | "cap_add"
        | "cap_drop"
        | "tmpfs"
        | "security_opt"
        | "profiles"
        | "deploy.placement.constraints"
        | "deploy.placement.preferences" => Rule::Append,
        "volumes" => Rule::ByKey(volume_target),
        "secrets" | "configs" => Rule::ByKey(file_source),
        _ => Rule::Recurse,
    }
}

fn merge_at(base: &mut Node, mut over: Node, path: &mut Vec<String>) {
    if over.tag == Some(MergeTag::Override) {
        over.tag = None;
        *base = over;
        return;
    }
    match rule(path) {
        Rule::Recurse => {}
        Rule::KeyValueMap => {
            normalize_key_values(base);
            normalize_key_values(&mut over);
        }
        Rule::DependsMap => {
            normalize_depends(base);
            normalize_depends(&mut over);
        }
        Rule::NetworksMap => {
            normalize_names(base);
            normalize_names(&mut over);
        }
        Rule::Append => {
            as_list(base);
            as_list(&mut over);
            if let (Value::Seq(items), Value::Seq(more)) = (&mut base.value, &mut over.value) {
                for item in more.drain(..) {
                    if !items.iter().any(|i| same(i, &item)) {
                        items.push(item);
                    }
                }
                return;
            }
        }
        Rule::ByKey(key_of) => {
            as_list(base);
            as_list(&mut over);
            if let (Value::Seq(items), Value::Seq(more)) = (&mut base.value, &mut over.value) {
                for item in more.drain(..) {
                    let key = key_of(&item);
                    match items.iter_mut().find(|i| key.is_some() && key_of(i) == key) {
                        Some(slot) => *slot = item,
                        None => items.push(item),
                    }
                }
                return;
            }
        }
    }
    match (&mut base.value, over.value) {
        (Value::Map(entries), Value::Map(more)) => {
            for (key, value) in more {
                let reset = value.tag == Some(MergeTag::Reset);
                match entries.iter().position(|(k, _)| k.name == key.name) {
                    Some(i) if reset => {
                        entries.remove(i);
                    }
                    Some(i) => {
                        path.push(key.name.clone());
                        merge_at(&mut entries[i].1, value, path);
                        path.pop();
                    }
                    None if reset => {}
                    None => entries.push((key, strip_tags(value))),
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.mark = over.mark;
        }
    }
}

/// A single value written where a list may be (`env_file: a.env`) as a list of it.
fn as_list(node: &mut Node) {
    if matches!(node.value, Value::Scalar(_) | Value::Map(_)) && !node.is_null() {
        let item = Node {
            value: std::mem::replace(&mut node.value, Value::Seq(Vec::new())),
            mark: node.mark.clone(),
            tag: None,
        };
        node.value = Value::Seq(vec![item]);
    }
}

fn strip_tags(mut node: Node) -> Node {
    node.tag = None;
    node
}

/// `["A=1", "B"]` into `{A: "1", B: null}`.
fn normalize_key_values(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let entries = items
        .iter()
        .filter_map(|item| {
            let Value::Scalar(s) = &item.value else {
                return None;
            };
            let (k, v) = match s.text.split_once('=') {
                Some((k, v)) => (k, Node::string(v, item.mark.clone())),
                None => (s.text.as_str(), null(item)),
            };
            Some((key(k, item), v))
        })
        .collect();
    node.value = Value::Map(entries);
}

/// `[db]` into `{db: {condition: service_started}}`.
fn normalize_depends(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let entries = items
        .iter()
        .filter_map(|item| {
            let Value::Scalar(s) = &item.value else {
                return None;
            };
            let condition = (
                key("condition", item),
                Node::string("service_started", item.mark.clone()),
            );
            Some((
                key(&s.text, item),
                Node::map(vec![condition], item.mark.clone()),
            ))
        })
        .collect();
    node.value = Value::Map(entries);
}

/// `[front, back]` into `{front: null, back: null}`.
fn normalize_names(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let entries = items
        .iter()
        .filter_map(|item| match &item.value {
            Value::Scalar(s) => Some((key(&s.text, item), null(item))),
            _ => None,
        })
        .collect();
    node.value = Value::Map(entries);
}

fn key(name: &str, at: &Node) -> Key {
    Key {
        name: name.to_string(),
        mark: at.mark.clone(),
    }
}

fn null(at: &Node) -> Node {
    Node {
        value: Value::Scalar(Scalar {
            text: String::new(),
            plain: true,
        }),
        mark: at.mark.clone(),
        tag: None,
    }
}

fn scalar_text(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Scalar(s) => Some(&s.text),
        _ => None,
    }
}

/// A volume entry's target path: `src:/target[:mode]`, `/target`, or `target:` in the long form.
fn volume_target(node: &Node) -> Option<String> {
    if let Some(text) = scalar_text(node) {
        let mut parts = text.split(':');
        let first = parts.next()?;
        return Some(parts.next().unwrap_or(first).to_string());
    }
    node.get("target").and_then(scalar_text).map(str::to_string)
}

/// A secret's or config's source: the short form's name, or `source:`.
fn file_source(node: &Node) -> Option<String> {
    scalar_text(node)
        .or_else(|| node.get("source").and_then(scalar_text))
        .map(str::to_string)
}

/// Equal values, wherever they were written.
fn same(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Scalar(x), Value::Scalar(y)) => x.text == y.text && a.is_null() == b.is_null(),
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| k.name == k2.name && same(v, v2)))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn merged(a: &str, b: &str) -> Node {
        let mut base = parse("a.yaml", a).expect("a");
        merge(&mut base, parse("b.yaml", b).expect("b"));
        base
    }

    fn texts(node: &Node) -> Vec<String> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .map(|i| scalar_text(i).unwrap_or("<map>").to_string())
                .collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| format!("{}={}", k.name, scalar_text(v).unwrap_or("<map>")))
                .collect(),
            Value::Scalar(s) => vec![s.text.clone()],
        }
    }

    #[test]
    fn override_file_rules() {
        let base = "services:\n  web:\n    image: a:1\n    command: [x, y]\n    environment: [A=1, B=2]\n    labels: {l: one}\n    ports: ['80:80']\n    volumes: ['data:/data', './c:/etc/c:ro']\n    secrets: [s1]\n    depends_on: [db]\n    deploy: {replicas: 2, resources: {limits: {memory: 1g}}}\n";
        let over = "services:\n  web:\n    image: a:2\n    command: [z]\n    environment: {B: 3, C: 4}\n    labels: [l=two, m=x]\n    ports: ['80:80', '443:443']\n    volumes: [{type: bind, source: ./d, target: /data}]\n    secrets: [{source: s1, target: other}, s2]\n    depends_on: {cache: {condition: service_healthy}}\n    deploy: {resources: {limits: {cpus: '1'}}}\n  extra:\n    image: b\n";
        let m = merged(base, over);
        let web = m.get("services").and_then(|s| s.get("web")).expect("web");
        assert_eq!(texts(web.get("image").expect("image")), ["a:2"]);
        assert_eq!(texts(web.get("command").expect("command")), ["z"]);
        assert_eq!(
            texts(web.get("environment").expect("env")),
            ["A=1", "B=3", "C=4"]
        );
        assert_eq!(texts(web.get("labels").expect("labels")), ["l=two", "m=x"]);
        assert_eq!(
            texts(web.get("ports").expect("ports")),
            ["80:80", "443:443"]
        );
        let volumes = web.get("volumes").expect("volumes");
        assert_eq!(texts(volumes), ["<map>", "./c:/etc/c:ro"]);
        let secrets = web.get("secrets").expect("secrets");
        assert_eq!(texts(secrets), ["<map>", "s2"]);
        assert_eq!(
            texts(web.get("depends_on").expect("deps")),
            ["db=<map>", "cache=<map>"]
        );
        let limits = web
            .get("deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get("limits"))
            .expect("limits");
        assert_eq!(texts(limits), ["memory=1g", "cpus=1"]);
        assert_eq!(
            texts(
                web.get("deploy")
                    .and_then(|d| d.get("replicas"))
                    .expect("r")
            ),
            ["2"]
        );
        assert!(m.get("services").and_then(|s| s.get("extra")).is_some());
        // Places follow the file each value came from.
        assert_eq!(&*web.get("image").expect("image").mark.file, "b.yaml");
    }

    #[test]
    fn a_single_value_appends_to_a_list() {
        let m = merged(
            "services:\n  web:\n    env_file: [a.env]\n    tmpfs: /run\n",
            "services:\n  web:\n    env_file: b.env\n    tmpfs: [/tmp]\n",
        );
        let web = m.get("services").and_then(|s| s.get("web")).expect("web");
        assert_eq!(
            texts(web.get("env_file").expect("env_file")),
            ["a.env", "b.env"]
        );
        assert_eq!(texts(web.get("tmpfs").expect("tmpfs")), ["/run", "/tmp"]);
    }

    #[test]
    fn reset_and_override_tags() {
        let m = merged(
            "services:\n  web:\n    image: a\n    ports: ['80:80']\n    environment: {A: 1, B: 2}\n",
            "services:\n  web:\n    ports: !reset []\n    environment: !override {C: 3}\n",
        );
        let web = m.get("services").and_then(|s| s.get("web")).expect("web");
        assert!(web.get("ports").is_none());
        assert_eq!(texts(web.get("environment").expect("env")), ["C=3"]);
    }
}
