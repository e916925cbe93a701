//! Writing the sidecar YAML: comments, `key: value` lines with aligned
//! trailing comments, warnings (a comment and a list entry), where each
//! written key came from in the minion file, and values spelled so YAML
//! reads them with Salt's meaning. Knows no key: `keys` decides what to write.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::MinionChange;
use crate::config::ConfigError;

/// Column where trailing comments start.
const COMMENT_COLUMN: usize = 32;

pub(super) struct Writer<'a> {
    pub(super) file: &'a Path,
    pub(super) out: String,
    pub(super) warnings: Vec<String>,
    /// Where each emitted key came from in the minion file (`master[1]` too).
    pub(super) locations: Vec<(String, Location)>,
    pub(super) remove: Vec<&'static str>,
    /// The minion's `master_alive_interval` as the sidecar got it (seconds).
    pub(super) alive: String,
}

impl<'a> Writer<'a> {
    pub(super) fn new(file: &'a Path) -> Self {
        Writer {
            file,
            out: String::new(),
            warnings: Vec::new(),
            locations: Vec::new(),
            remove: Vec::new(),
            alive: String::new(),
        }
    }

    pub(super) fn err(&self, at: &Location, key: &str, message: String) -> ConfigError {
        let known = Some(*at).filter(|l| l.line() > 0);
        ConfigError {
            file: self.file.to_path_buf(),
            line: known.map(|l| l.line() as u32),
            column: known.map(|l| l.column() as u32),
            key: key.to_string(),
            message,
        }
    }

    pub(super) fn comment(&mut self, text: &str) {
        let _ = writeln!(self.out, "# {text}");
    }

    /// `key: value` with an aligned trailing comment.
    pub(super) fn entry(&mut self, line: &str, comment: &str) {
        if comment.is_empty() {
            let _ = writeln!(self.out, "{line}");
        } else {
            let _ = writeln!(self.out, "{line:<COMMENT_COLUMN$}# {comment}");
        }
    }

    /// A warning: a comment above the key it concerns, and in `warnings`.
    pub(super) fn warn(&mut self, text: String) {
        for line in wrap(&text, 76) {
            self.comment(&line);
        }
        self.warnings.push(text);
    }

    /// Copies a scalar key, Salt's spelling normalised (see [`scalar_text`]).
    pub(super) fn copy(
        &mut self,
        key: &'static str,
        v: &Spanned<Value>,
        kind: Kind,
        comment: &str,
    ) {
        self.locations.push((key.into(), v.referenced));
        let line = format!("{key}: {}", scalar_text(&v.value, kind));
        self.entry(&line, comment);
    }

    /// [`copy`](Self::copy), or Salt's `default` when the key is missing.
    pub(super) fn copy_or(
        &mut self,
        key: &'static str,
        v: Option<&Spanned<Value>>,
        kind: Kind,
        default: &str,
        comment: &str,
    ) {
        match v {
            Some(v) => self.copy(key, v, kind, comment),
            None => self.entry(&format!("{key}: {default}"), "Salt's default"),
        }
    }
}

/// The comment block the sidecar YAML opens with.
pub(super) fn header(change: &MinionChange, warnings: &[String]) -> String {
    let file = change.file.display();
    let mut h = String::new();
    let _ = writeln!(h, "# salt-sidecar configuration, converted from {file}");
    let _ = writeln!(
        h,
        "# by `salt-sidecar convert-minion-config`. Install it as /etc/salt-sidecar/config.yaml"
    );
    let _ = writeln!(
        h,
        "# and check it: salt-sidecar check-config --config /etc/salt-sidecar/config.yaml"
    );
    let _ = writeln!(h, "#");
    let _ = writeln!(h, "# Then change the minion ({file}):");
    let _ = writeln!(h, "#   master: {}", change.master);
    if !change.remove.is_empty() {
        let _ = writeln!(h, "#   and remove: {}", change.remove.join(", "));
    }
    let _ = writeln!(
        h,
        "# publish_port and master_port stay as they are: the sidecar listens on the same ports."
    );
    if !warnings.is_empty() {
        let _ = writeln!(
            h,
            "# {} warning(s) below: read them before rolling this out.",
            warnings.len()
        );
    }
    h
}

/// How a copied value is written.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Bool,
    Number,
    Text,
}

/// A value as the sidecar's YAML reads it with Salt's meaning: PyYAML's
/// YAML 1.1 booleans (`yes`, `On`) as `true`/`false`, numbers written as
/// strings as numbers; anything else quoted, for `config::parse` to reject.
pub(super) fn scalar_text(v: &Value, kind: Kind) -> String {
    match (v, kind) {
        (Value::Bool(b), _) => b.to_string(),
        (Value::Number(n), _) => n.to_string(),
        (Value::String(s), Kind::Bool) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" => "true".into(),
            "no" | "off" | "false" => "false".into(),
            _ => yaml_str(s),
        },
        (Value::String(s), Kind::Number) if s.trim().parse::<u64>().is_ok() => s.trim().to_string(),
        (Value::String(s), _) => yaml_str(s),
        (other, _) => yaml_str(&other.to_string()),
    }
}

/// A string as a YAML scalar: plain when it cannot be read as anything else,
/// else double-quoted (JSON's escaping is valid YAML).
pub(super) fn yaml_str(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

/// Splits text into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{scalar_text, wrap, yaml_str, Kind};

    #[test]
    fn values_that_yaml_would_misread_are_quoted() {
        assert_eq!(yaml_str("salt-a.example.net"), "salt-a.example.net");
        assert_eq!(yaml_str("salt-a:4506"), "salt-a:4506");
        assert_eq!(yaml_str("[::1]:4506"), "\"[::1]:4506\"");
        assert_eq!(yaml_str("10.5"), "\"10.5\"");
        assert_eq!(yaml_str("yes"), "\"yes\"");
        assert_eq!(yaml_str("a # b"), "\"a # b\"");
    }

    #[test]
    fn salts_yaml_1_1_spellings_are_written_with_salts_meaning() {
        let text = |v: &str| Value::String(v.into());
        assert_eq!(scalar_text(&text("Yes"), Kind::Bool), "true");
        assert_eq!(scalar_text(&text(" off "), Kind::Bool), "false");
        assert_eq!(scalar_text(&text("maybe"), Kind::Bool), "maybe");
        assert_eq!(scalar_text(&text(" 30 "), Kind::Number), "30");
        assert_eq!(scalar_text(&text("often"), Kind::Number), "often");
        assert_eq!(scalar_text(&Value::Bool(true), Kind::Text), "true");
        assert_eq!(scalar_text(&text("tcp"), Kind::Text), "tcp");
    }

    #[test]
    fn a_warning_wraps_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("  ", 5), Vec::<String>::new());
        assert_eq!(wrap("longword x", 3), ["longword", "x"]);
    }
}
