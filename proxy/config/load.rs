//! Reading a config file: the file's text to raw structs (with the YAML
//! parser's errors made one clear line) to a validated [`Config`].

use std::path::Path;

use crate::config::raw::RawConfig;
use crate::config::{Config, ConfigError};

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: String::new(),
        message: format!("cannot read config file: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw = parse_raw(path, text)?;
    raw.validate(path)
}

fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: "master".into(),
            message: "the file is empty; at least `master:` is required".into(),
        });
    }
    let mut key_path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
            key_path = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let loc = e.location();
        let message = yaml_message(&e);
        // Spanned<T> shows up as a `.value` segment in the path; drop it.
        let key = key_path.replace(".value", "");
        ConfigError {
            file: path.to_path_buf(),
            line: loc.map(|l| l.line() as u32),
            column: loc.map(|l| l.column() as u32),
            key: if key == "." || key == "value" {
                String::new()
            } else {
                key
            },
            message,
        }
    })
}

/// A YAML parser error's message without the location the crate prefixes
/// (`error: line L column C: `) or appends: [`ConfigError`] prints it once.
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let message = e.without_snippet().to_string();
    let message = match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("error") => rest.to_string(),
        _ => message,
    };
    let message = match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest.to_string(),
        _ => message,
    };
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => message[..i].to_string(),
        _ => message,
    }
}
