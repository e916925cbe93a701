//! What the YAML of a config file may contain, checked on the parser's
//! events before serde sees it: no tags (`!!python/object`, `!foo`,
//! `!!binary`: every value is plain text, a number, a list or a mapping),
//! and no key twice in one mapping (named with both lines, where the YAML
//! library would say only where the second is). Syntax errors are left to
//! the deserializer, whose messages say what it expected. Pure: text in,
//! a verdict out.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Marker, Parser};

/// Something the file's YAML may not contain, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// 1-based line and column.
    pub(crate) line: u32,
    pub(crate) column: u32,
    /// Dotted key path, e.g. `sidecar.rise` or `master[1]`.
    pub(crate) key: String,
    pub(crate) message: String,
}

/// One open collection while walking the events. Each keeps only its own
/// key or index: a path is built when there is something to report (a
/// 20,000-deep list must not make 20,000 paths).
enum Frame {
    Map {
        /// Scalar keys seen so far, with their line.
        seen: HashMap<String, u32>,
        /// The next node is a key (else the value of `key`).
        at_key: bool,
        key: Option<String>,
    },
    Seq {
        index: usize,
    },
}

impl Frame {
    /// This collection's part of the path of the node that comes next in it.
    fn step(&self) -> Option<String> {
        match self {
            Frame::Map {
                at_key: false,
                key: Some(k),
                ..
            } => Some(format!(".{k}")),
            Frame::Map { .. } => None,
            Frame::Seq { index } => Some(format!("[{index}]")),
        }
    }

    /// A child node ended: a key is followed by its value and the value by
    /// the next key; a list moves to its next entry.
    fn child_done(&mut self) {
        match self {
            Frame::Map { at_key, key, .. } => {
                if !*at_key {
                    *key = None;
                }
                *at_key = !*at_key;
            }
            Frame::Seq { index, .. } => *index += 1,
        }
    }
}

/// The key path (`sidecar.rise`, `master[1]`) of the node that comes next
/// inside `stack`.
fn path_of(stack: &[Frame]) -> String {
    let path: String = stack.iter().filter_map(Frame::step).collect();
    path.trim_start_matches('.').to_string()
}

/// Checks `text`; the first tag or duplicate key found is refused.
pub(crate) fn check(text: &str) -> Result<(), Refused> {
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(text) {
        // A syntax error: the deserializer reports it, with what it expected.
        let Ok((event, span)) = event else {
            return Ok(());
        };
        let tag = match &event {
            Event::Scalar(_, _, _, tag)
            | Event::SequenceStart(_, _, tag)
            | Event::MappingStart(_, _, tag) => tag.as_ref(),
            _ => None,
        };
        if let Some(tag) = tag {
            let at = span.tag_start.unwrap_or(span.start);
            return Err(refused(
                at,
                &path_of(&stack),
                format!(
                    "YAML tags (here `{}`) are not allowed in the config: every value is plain text, a number, a list or a mapping; remove the tag",
                    shown_tag(tag.original_handle(), tag.suffix())
                ),
            ));
        }
        match event {
            Event::DocumentStart(..) => stack.clear(),
            Event::MappingStart(..) => stack.push(Frame::Map {
                seen: HashMap::new(),
                at_key: true,
                key: None,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                if let Some(parent) = stack.last_mut() {
                    parent.child_done();
                }
            }
            Event::Scalar(value, ..) => {
                let line = span.start.line() as u32;
                let duplicate = match stack.last_mut() {
                    Some(Frame::Map {
                        seen,
                        at_key: true,
                        key,
                    }) => {
                        let name = value.to_string();
                        let first = seen.get(&name).copied();
                        if first.is_none() {
                            seen.insert(name.clone(), line);
                        }
                        *key = Some(name.clone());
                        first.map(|first| (name, first))
                    }
                    _ => None,
                };
                if let Some((name, first)) = duplicate {
                    // The mapping's own path: every frame but itself.
                    let map_path = path_of(&stack[..stack.len().saturating_sub(1)]);
                    let full = if map_path.is_empty() {
                        name
                    } else {
                        format!("{map_path}.{name}")
                    };
                    return Err(refused(
                        span.start,
                        &full,
                        format!(
                            "is given twice in one mapping (lines {first} and {line}); keep one"
                        ),
                    ));
                }
                if let Some(parent) = stack.last_mut() {
                    parent.child_done();
                }
            }
            Event::Alias(_) => {
                if let Some(parent) = stack.last_mut() {
                    parent.child_done();
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A tag as written: `!!python/object:os.system`, `!foo`.
fn shown_tag(handle: &str, suffix: &str) -> String {
    let tag: String = format!("{handle}{suffix}")
        .chars()
        .flat_map(char::escape_default)
        .collect();
    if tag.chars().count() > 64 {
        let head: String = tag.chars().take(64).collect();
        format!("{head}…")
    } else {
        tag
    }
}

fn refused(at: Marker, key: &str, message: String) -> Refused {
    Refused {
        line: at.line() as u32,
        column: at.col() as u32 + 1,
        key: key.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(text: &str) -> Result<(), String> {
        check(text).map_err(|r| format!("{}:{}: {}: {}", r.line, r.column, r.key, r.message))
    }

    #[test]
    fn plain_yaml_passes() {
        let ok = [
            "master: [a, b]\nid: x\n",
            "master:\n  - host: a\n    master_port: 1\n  - host: b\n    master_port: 1\nsidecar:\n  rise: 2\n",
            // The same key in two different mappings is fine.
            "sidecar:\n  rise: 2\nid: rise\n",
            "master: &a [x]\nother: *a\n",
            // Syntax errors are the deserializer's to report.
            "master: [a\n",
            "---\n...\n---\n",
            "",
        ];
        for text in ok {
            assert_eq!(verdict(text), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn a_key_given_twice_is_named_with_both_lines() {
        let cases = [
            (
                "master: [a]\nid: x\nid: y\n",
                "3:1: id: is given twice in one mapping (lines 2 and 3); keep one",
            ),
            (
                "master: [a]\nsidecar:\n  rise: 2\n  fall: 2\n  rise: 3\n",
                "5:3: sidecar.rise: is given twice in one mapping (lines 3 and 5); keep one",
            ),
            (
                "master:\n  - host: a\n    host: b\n",
                "3:5: master[0].host: is given twice in one mapping (lines 2 and 3); keep one",
            ),
            (
                "sidecar: {rise: 2, rise: 3}\n",
                "1:20: sidecar.rise: is given twice in one mapping (lines 1 and 1); keep one",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(verdict(text), Err(want.to_string()), "{text:?}");
        }
    }

    #[test]
    fn every_tag_is_refused_where_it_is() {
        let cases = [
            (
                "master: !!python/object:os.system [a]\n",
                "1:9: master: YAML tags (here `!!python/object:os.system`)",
            ),
            (
                "master: [a]\nid: !foo x\n",
                "2:5: id: YAML tags (here `!foo`)",
            ),
            (
                "master: !!binary aGVsbG8=\n",
                "1:9: master: YAML tags (here `!!binary`)",
            ),
            (
                "master: [a]\nsidecar:\n  rise: !!int 2\n",
                "3:9: sidecar.rise: YAML tags (here `!!int`)",
            ),
            (
                "master:\n  - !!str a\n",
                "2:5: master[0]: YAML tags (here `!!str`)",
            ),
            ("!!map {master: [a]}\n", "1:1: : YAML tags (here `!!map`)"),
        ];
        for (text, want) in cases {
            let got = verdict(text).expect_err(text);
            assert!(
                got.starts_with(want),
                "{text:?}\n  got:  {got}\n  want: {want}…"
            );
        }
    }
}
