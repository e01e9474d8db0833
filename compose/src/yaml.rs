//! The YAML layer: text into a tree of [`Node`]s that remember where they came from.
//!
//! The tree is built from `saphyr-parser`'s events rather than through serde, for three reasons:
//! every node keeps its line and column (so an error about a bad `ports` entry points at it, not
//! just at the file); scalars keep their text until a key's reader types them (Compose
//! interpolates first: `replicas: ${N}` is a string until it has become `3`, and `mode: 0440` is
//! the octal the user meant); and aliases and merge keys are resolved here once, so the readers
//! never see them.
//!
//! Rules: aliases are replaced by a copy of their anchored node; a mapping's `<<` key (a mapping,
//! or a sequence of mappings) adds every key that the mapping does not set itself, the earlier
//! mapping of a sequence winning; a key set twice in one mapping is an error; only the first
//! document of a file is read, and a second one is an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{ComposeError, Location};

/// Where a node starts: the file's name (shared), line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The file's name as given to `load`.
    pub file: Arc<str>,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl Mark {
    fn at(file: &Arc<str>, span: Span) -> Mark {
        Mark {
            file: file.clone(),
            line: span.start.line() as u32,
            col: span.start.col() as u32 + 1,
        }
    }

    /// The public form of this place.
    pub fn location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.line as usize,
            column: self.col as usize,
        }
    }

    /// An [`ComposeError::Invalid`] at this place.
    pub fn invalid(&self, message: impl Into<String>) -> ComposeError {
        ComposeError::Invalid {
            at: self.location(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A scalar's text, untyped until read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The text as written (after escapes and folding).
    pub text: String,
    /// A plain (unquoted, not block) scalar: only those can be `null`.
    pub plain: bool,
}

/// A node's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Any scalar: string, number, boolean or null.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the file's order. Keys are unique.
    Map(Vec<(Key, Node)>),
}

/// A mapping's key and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where the key is written.
    pub mark: Mark,
}

/// A value with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub mark: Mark,
    /// A Compose merge tag on it: `!reset` or `!override`.
    pub tag: Option<MergeTag>,
}

/// Compose's tags for merging several files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeTag {
    /// `!reset`: the key is removed from the merged result.
    Reset,
    /// `!override`: the value replaces the earlier one whole instead of merging with it.
    Override,
}

impl Node {
    /// A mapping node at `mark` (used by the merger for synthesised maps).
    pub fn map(entries: Vec<(Key, Node)>, mark: Mark) -> Node {
        Node {
            value: Value::Map(entries),
            mark,
            tag: None,
        }
    }

    /// A plain string scalar.
    pub fn string(text: impl Into<String>, mark: Mark) -> Node {
        Node {
            value: Value::Scalar(Scalar {
                text: text.into(),
                plain: false,
            }),
            mark,
            tag: None,
        }
    }

    /// Whether this is YAML's null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.plain && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The entries of a mapping, or `None`.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value at `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// What kind of node this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(_) if self.is_null() => "null",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses one file's text. `file` names it in every mark and error.
pub fn parse(file: &str, text: &str) -> Result<Node, ComposeError> {
    let file: Arc<str> = Arc::from(file);
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| ComposeError::Yaml {
            at: Location {
                file: file.to_string(),
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        builder.event(event, span)?;
    }
    builder.root.ok_or_else(|| ComposeError::Invalid {
        at: Location {
            file: file.to_string(),
            line: 1,
            column: 1,
        },
        message: "the file is empty (a Compose file is a mapping with a `services` key)".into(),
    })
}

/// A collection being built.
enum Open {
    Seq {
        items: Vec<Node>,
        mark: Mark,
        anchor: usize,
        tag: Option<MergeTag>,
    },
    Map {
        entries: Vec<(Key, Node)>,
        /// A key read, waiting for its value.
        key: Option<Node>,
        mark: Mark,
        anchor: usize,
        tag: Option<MergeTag>,
    },
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), ComposeError> {
        let mark = Mark::at(&self.file, span);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(mark.invalid(
                        "a second YAML document (`---`): a Compose file holds one document",
                    ));
                }
                Ok(())
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| {
                    mark.invalid("an alias to an anchor that is not defined before it")
                })?;
                self.push(Node { mark, ..node })
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = Node {
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain && tag.is_none(),
                    }),
                    mark,
                    tag: merge_tag(tag.as_deref()),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::SequenceStart(anchor, tag) => {
                self.stack.push(Open::Seq {
                    items: Vec::new(),
                    mark,
                    anchor,
                    tag: merge_tag(tag.as_deref()),
                });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.stack.push(Open::Map {
                    entries: Vec::new(),
                    key: None,
                    mark,
                    anchor,
                    tag: merge_tag(tag.as_deref()),
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Seq {
                        items,
                        mark,
                        anchor,
                        tag,
                    }) => self.finish(Value::Seq(items), mark, anchor, tag),
                    Some(Open::Map {
                        entries,
                        mark,
                        anchor,
                        tag,
                        ..
                    }) => self.finish(Value::Map(resolve_merge_keys(entries)?), mark, anchor, tag),
                    None => return Err(mark.invalid("unbalanced YAML events")),
                };
                self.push(node)
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
        }
    }

    fn finish(&mut self, value: Value, mark: Mark, anchor: usize, tag: Option<MergeTag>) -> Node {
        let node = Node { value, mark, tag };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        node
    }

    fn push(&mut self, node: Node) -> Result<(), ComposeError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Open::Map { entries, key, .. }) => match key.take() {
                None => {
                    *key = Some(node);
                    Ok(())
                }
                Some(k) => {
                    let Value::Scalar(s) = &k.value else {
                        return Err(k
                            .mark
                            .invalid("a mapping key must be a scalar, not a sequence or mapping"));
                    };
                    let name = s.text.clone();
                    if name != "<<" && entries.iter().any(|(e, _)| e.name == name) {
                        return Err(k.mark.invalid(format!("key `{name}` is set twice")));
                    }
                    entries.push((Key { name, mark: k.mark }, node));
                    Ok(())
                }
            },
        }
    }
}

fn merge_tag(tag: Option<&saphyr_parser::Tag>) -> Option<MergeTag> {
    let tag = tag?;
    match (tag.handle.as_str(), tag.suffix.as_str()) {
        ("!", "reset") => Some(MergeTag::Reset),
        ("!", "override") => Some(MergeTag::Override),
        _ => None,
    }
}

/// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`): keys of the mapping win, then the
/// merged mappings in order.
fn resolve_merge_keys(entries: Vec<(Key, Node)>) -> Result<Vec<(Key, Node)>, ComposeError> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return Ok(entries);
    }
    let mut own = Vec::with_capacity(entries.len());
    let mut merged = Vec::new();
    for (key, value) in entries {
        if key.name != "<<" {
            own.push((key, value));
            continue;
        }
        match value.value {
            Value::Map(m) => merged.push(m),
            Value::Seq(items) => {
                for item in items {
                    match item.value {
                        Value::Map(m) => merged.push(m),
                        _ => {
                            return Err(item.mark.invalid(
                                "a merge key (`<<`) takes a mapping or a sequence of mappings",
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(value
                    .mark
                    .invalid("a merge key (`<<`) takes a mapping or a sequence of mappings"));
            }
        }
    }
    for map in merged {
        for (key, value) in map {
            if !own.iter().any(|(k, _)| k.name == key.name) {
                own.push((key, value));
            }
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(node: &Node) -> &str {
        match &node.value {
            Value::Scalar(s) => &s.text,
            _ => panic!("not a scalar"),
        }
    }

    #[test]
    fn marks_are_one_based() {
        let root = parse("f.yaml", "a:\n  b: 1\n").expect("parse");
        let b = root.get("a").and_then(|a| a.get("b")).expect("b");
        assert_eq!((b.mark.line, b.mark.col), (2, 6));
        assert_eq!(text(b), "1");
    }

    #[test]
    fn aliases_and_merge_keys_resolve() {
        let yaml = "x-base: &base\n  a: 1\n  b: 2\nx-more: &more\n  c: 3\n  a: 9\nm:\n  <<: [*base, *more]\n  b: 5\nn: *base\n";
        let root = parse("f", yaml).expect("parse");
        let m = root.get("m").expect("m");
        assert_eq!(text(m.get("a").expect("a")), "1");
        assert_eq!(text(m.get("b").expect("b")), "5");
        assert_eq!(text(m.get("c").expect("c")), "3");
        assert!(m.get("<<").is_none());
        assert_eq!(
            text(root.get("n").and_then(|n| n.get("b")).expect("b")),
            "2"
        );
    }

    #[test]
    fn nulls_and_quoted_strings() {
        let root = parse("f", "a:\nb: ~\nc: null\nd: 'null'\ne: \"\"\n").expect("parse");
        for k in ["a", "b", "c"] {
            assert!(root.get(k).expect(k).is_null(), "{k}");
        }
        assert!(!root.get("d").expect("d").is_null());
        assert!(!root.get("e").expect("e").is_null());
    }

    #[test]
    fn duplicate_keys_and_bad_yaml_are_errors_with_places() {
        let err = parse("f.yaml", "a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!(err.to_string(), "f.yaml:3:1: key `a` is set twice");
        let err = parse("f.yaml", "services:\n  web:\n    image: [a\n").expect_err("bad");
        let ComposeError::Yaml { at, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(at.file, "f.yaml");
        assert!(at.line >= 3, "{err}");
        let err = parse("f.yaml", "a: *nope\n").expect_err("alias");
        assert!(err.to_string().starts_with("f.yaml:1:"), "{err}");
    }

    #[test]
    fn merge_tags_are_kept() {
        let root = parse("f", "a: !reset []\nb: !override {x: 1}\nc: !!str 1\n").expect("parse");
        assert_eq!(root.get("a").expect("a").tag, Some(MergeTag::Reset));
        assert_eq!(root.get("b").expect("b").tag, Some(MergeTag::Override));
        assert_eq!(root.get("c").expect("c").tag, None);
    }
}
