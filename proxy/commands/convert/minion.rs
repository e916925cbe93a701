//! Reading a salt-minion config loosely: only the keys the sidecar uses
//! (serde skips every other key), each as a YAML value with its location,
//! `master` as one address or a list. No meaning yet: `keys` gives it one.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::config::{self, ConfigError, OneOrList};

/// The minion keys the sidecar uses; serde skips every other key.
#[derive(Debug, Deserialize)]
pub(super) struct RawMinion {
    pub(super) master: Option<Spanned<RawMasters>>,
    pub(super) master_type: Option<Spanned<Value>>,
    pub(super) master_alive_interval: Option<Spanned<Value>>,
    pub(super) master_failback: Option<Spanned<Value>>,
    pub(super) master_failback_interval: Option<Spanned<Value>>,
    pub(super) random_reauth_delay: Option<Spanned<Value>>,
    pub(super) master_shuffle: Option<Spanned<Value>>,
    pub(super) random_master: Option<Spanned<Value>>,
    pub(super) publish_port: Option<Spanned<Value>>,
    pub(super) master_port: Option<Spanned<Value>>,
    pub(super) id: Option<Spanned<Value>>,
    pub(super) transport: Option<Spanned<Value>>,
}

/// `master:` as Salt takes it: one address or a list, each read as a YAML value.
pub(super) type RawMasters = OneOrList<Value>;

pub(super) fn no_master(file: &Path) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: None,
        column: None,
        key: "master".into(),
        message: "no `master:` in this file; list the masters this minion fails over between (if they are set in /etc/salt/minion.d/*.conf, convert that file)".into(),
    }
}

/// Reads the keys the sidecar uses; an empty file (or only comments) reads as no keys.
pub(super) fn parse_minion(path: &Path, text: &str) -> Result<RawMinion, ConfigError> {
    if text.trim().is_empty() {
        return Err(no_master(path));
    }
    let raw: Option<RawMinion> = serde_saphyr::from_str(text).map_err(|e| {
        let at = e.location();
        let message = config::yaml_message(&e);
        ConfigError {
            file: path.to_path_buf(),
            line: at.map(|l| l.line() as u32),
            column: at.map(|l| l.column() as u32),
            key: String::new(),
            message: format!("not a minion config: {message}"),
        }
    })?;
    raw.ok_or_else(|| no_master(path))
}
