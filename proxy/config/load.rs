//! Reading a config file: the file's text to raw structs (with the YAML
//! parser's errors made one clear line) to a validated [`Config`].
//!
//! Only a regular file (or a symlink to one) of at most [`MAX_CONFIG_BYTES`]
//! is read: it is opened without waiting (a FIFO would block `open` until a
//! writer comes) and checked on the open descriptor, so neither a FIFO nor
//! `/dev/zero` can hang or exhaust the reader. Blocking file I/O all the same:
//! the running sidecar calls it off its async runtime (`ops::reload`).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::config::raw::RawConfig;
use crate::config::{yaml, Config, ConfigError};

/// The largest config file read (1 MiB); a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    parse(path, &text)
}

/// The text of the config file at `path`: a regular file (or a symlink to
/// one) of at most [`MAX_CONFIG_BYTES`], in UTF-8.
fn read(path: &Path) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError::whole_file(path, message);
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a
    // writer (it is then refused below); on a regular file it changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(format!("cannot read config file: {e}")))?;
    // What was opened, not what the path named a moment before.
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read config file: {e}")))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(fail(format!(
            "is {what}; the config must be a regular file (or a symlink to one)"
        )));
    }
    let too_big = |size: u64| {
        fail(format!(
            "is {size} bytes; a config file may have at most {MAX_CONFIG_BYTES} bytes (1 MiB)"
        ))
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed: a file that grew since fstat is caught.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read config file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    yaml::check(text).map_err(|r| ConfigError {
        file: path.to_path_buf(),
        line: Some(r.line),
        column: Some(r.column),
        key: r.key,
        message: r.message,
    })?;
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
