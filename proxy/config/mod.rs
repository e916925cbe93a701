//! The configuration file: Salt's own minion keys plus a `sidecar:` section.
//!
//! [`load`] reads YAML into raw serde structs (unknown keys rejected), then
//! [`validate`](RawConfig::validate) turns them into the typed [`Config`] the
//! rest of the sidecar uses. Every error carries the file, line and key, and
//! nothing after this module parses a string. No I/O except reading the file.

pub mod master;
pub mod settings;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::config::master::{label_for, Host, MasterId, MasterSpec};

/// Salt's default `publish_port`.
pub const DEFAULT_PUBLISH_PORT: u16 = 4505;
/// Salt's default `master_port` (the ret port).
pub const DEFAULT_RET_PORT: u16 = 4506;
/// Used when `master_alive_interval` is missing (Salt would then never check).
pub const DEFAULT_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Salt's default `random_reauth_delay`.
pub const DEFAULT_RANDOM_REAUTH_DELAY: Duration = Duration::from_secs(10);
/// Default admin endpoint.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// How a master's health is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Read the ZMTP greeting and READY, check the socket type (transport zeromq).
    Zmtp,
    /// A plain TCP connect (transport tcp: a ZMTP greeting would make it log a traceback).
    Tcp,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Zmtp => "zmtp",
            ProbeKind::Tcp => "tcp",
        }
    }
}

/// Salt's `master_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterType {
    Failover,
    Str,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this came from (for messages and reloads).
    pub source: PathBuf,
    /// Masters in configured order; `masters[i].id == MasterId(i)`.
    pub masters: Vec<MasterSpec>,
    pub master_type: MasterType,
    pub alive_interval: Duration,
    pub failback: bool,
    pub failback_interval: Duration,
    pub reauth_delay: Duration,
    pub shuffle: bool,
    /// The minion id (for shuffle and jitter seeds).
    pub minion_id: String,
    pub sidecar: SidecarConfig,
    /// Things worth a warning at start-up (e.g. a defaulted alive interval).
    pub warnings: Vec<String>,
    /// Things worth one info line at start-up (e.g. a list taken as failover).
    pub notes: Vec<String>,
}

/// The `sidecar:` section, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    pub listen_publish: SocketAddr,
    pub listen_ret: SocketAddr,
    pub admin: SocketAddr,
    /// `admin` may be a non-loopback address (it serves `/status` and the
    /// admin API without authentication).
    pub admin_allow_remote: bool,
    pub probe: ProbeKind,
    pub rise: u32,
    pub fall: u32,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    /// The minion listeners may be non-loopback addresses (an open relay to
    /// the masters for anyone who can reach them).
    pub listen_allow_remote: bool,
    /// `sidecar.max_sessions` as configured; the running cap also fits the
    /// open-file limit (see `limits::Budget`).
    pub max_sessions: Option<u32>,
    /// The admin commands' Unix socket.
    pub admin_socket: AdminSocket,
}

/// Where and with which permissions the admin Unix socket is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSocket {
    pub path: PathBuf,
    /// File mode bits (default 0660).
    pub mode: u32,
    /// Group to give the socket (name or numeric id), if any.
    pub group: Option<String>,
}

/// Default path of the admin socket (systemd's `RuntimeDirectory=salt-sidecar`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/salt-sidecar/admin.sock";

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// Dotted key path, e.g. `sidecar.rise` or `master[1]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key.is_empty() {
            write!(f, ": {}", one_line(&self.message))
        } else {
            write!(f, ": {}: {}", one_line(&self.key), one_line(&self.message))
        }
    }
}

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

// === raw serde structs ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    master: Option<Spanned<RawMasters>>,
    master_type: Option<Spanned<String>>,
    master_alive_interval: Option<Spanned<u64>>,
    master_failback: Option<Spanned<bool>>,
    master_failback_interval: Option<Spanned<u64>>,
    random_reauth_delay: Option<Spanned<u64>>,
    #[serde(alias = "random_master")]
    master_shuffle: Option<Spanned<bool>>,
    publish_port: Option<Spanned<u16>>,
    master_port: Option<Spanned<u16>>,
    id: Option<Spanned<String>>,
    /// Salt's `transport`: picks the default probe (zeromq → zmtp, tcp → tcp).
    transport: Option<Spanned<String>>,
    sidecar: Option<Spanned<RawSidecar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    listen: Option<Spanned<String>>,
    listen_publish: Option<Spanned<String>>,
    listen_ret: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    admin_allow_remote: Option<Spanned<bool>>,
    probe: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    connect_timeout: Option<Spanned<DurationValue>>,
    drain_timeout: Option<Spanned<DurationValue>>,
    listen_allow_remote: Option<Spanned<bool>>,
    max_sessions: Option<Spanned<u32>>,
    admin_socket: Option<Spanned<String>>,
    admin_socket_mode: Option<Spanned<String>>,
    admin_socket_group: Option<Spanned<String>>,
}

/// `master:` as Salt accepts it: one entry or a list of entries (also used
/// by `convert`, which reads a minion's entries loosely as YAML values).
#[derive(Debug)]
pub(crate) struct OneOrList<T>(pub(crate) Vec<Spanned<T>>);

impl<T> OneOrList<T> {
    /// A lone entry, written without a list (its location is not known).
    fn one(entry: T) -> Self {
        let unknown = Location::UNKNOWN;
        OneOrList(vec![Spanned::new(entry, unknown, unknown)])
    }
}

type RawMasters = OneOrList<RawEntry>;

impl From<String> for RawEntry {
    fn from(text: String) -> Self {
        RawEntry::Text(text)
    }
}

/// One `master:` entry: `host`, `host:port`, `[v6]:port`, or a mapping.
#[derive(Debug)]
enum RawEntry {
    Text(String),
    Map(RawEntryMap),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntryMap {
    host: String,
    master_port: Option<u16>,
    publish_port: Option<u16>,
}

/// A duration written as seconds (`2`, `0.5`) or with a unit (`"500ms"`, `"2s"`).
#[derive(Debug, Clone, Copy)]
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a master address (`host`, `host:port`, `[v6]:port`) or a mapping {host, master_port, publish_port}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEntry, E> {
                Ok(RawEntry::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEntry, A::Error> {
                RawEntryMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawEntry::Map)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, T> Deserialize<'de> for OneOrList<T>
where
    T: Deserialize<'de> + From<String>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + From<String>> Visitor<'de> for V<T> {
            type Value = OneOrList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a master address or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrList<T>, E> {
                Ok(OneOrList::one(T::from(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrList<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = seq.next_element::<Spanned<T>>()? {
                    out.push(entry);
                }
                Ok(OneOrList(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrList<T>, A::Error> {
                let entry = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(OneOrList::one(entry))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: seconds (`2`, `0.5`) or with a unit (`500ms`, `2s`, `1m`)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(|s| DurationValue(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationValue, E> {
                Duration::try_from_secs_f64(v)
                    .map(DurationValue)
                    .map_err(|_| {
                        E::custom("a duration must be a finite, non-negative number of seconds")
                    })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                let v = v.trim();
                if let Ok(secs) = v.parse::<f64>() {
                    return self.visit_f64(secs);
                }
                humantime::parse_duration(v).map(DurationValue).map_err(|_| {
                    E::custom(format!("{} is not a duration; write e.g. `500ms`, `2s`, `1m` or a number of seconds", quoted(v)))
                })
            }
        }
        d.deserialize_any(V)
    }
}

// === validation ===

/// Collects the location of a value for error messages.
struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, at: Option<&Location>, key: &str, message: impl Into<String>) -> ConfigError {
        let known = at.filter(|l| l.line() > 0);
        ConfigError {
            file: self.file.to_path_buf(),
            line: known.map(|l| l.line() as u32),
            column: known.map(|l| l.column() as u32),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn loc<T>(s: &Spanned<T>) -> Option<&Location> {
    Some(&s.referenced)
}

impl RawConfig {
    fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx { file };
        let mut warnings = Vec::new();
        let mut notes = Vec::new();

        let publish_port = port_or(
            &cx,
            self.publish_port.as_ref(),
            "publish_port",
            DEFAULT_PUBLISH_PORT,
        )?;
        let ret_port = port_or(
            &cx,
            self.master_port.as_ref(),
            "master_port",
            DEFAULT_RET_PORT,
        )?;

        let Some(raw_masters) = self.master else {
            return Err(cx.err(
                None,
                "master",
                "is required: the ordered list of masters to fail over between",
            ));
        };
        let masters_loc = raw_masters.referenced;
        let entries = raw_masters.value.0;
        if entries.is_empty() {
            return Err(cx.err(
                Some(&masters_loc),
                "master",
                "the list is empty; name at least one master",
            ));
        }
        if entries.len() > usize::from(u16::MAX) {
            return Err(cx.err(Some(&masters_loc), "master", "too many masters"));
        }
        let mut masters: Vec<MasterSpec> = Vec::with_capacity(entries.len());
        let mut master_locs: Vec<Location> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let key = format!("master[{i}]");
            let at = if entry.referenced.line() > 0 {
                &entry.referenced
            } else {
                &masters_loc
            };
            master_locs.push(*at);
            let (host, publish, ret) = match &entry.value {
                RawEntry::Text(text) => {
                    let (host, port) =
                        parse_host_port(text).map_err(|m| cx.err(Some(at), &key, m))?;
                    (host, publish_port, port.unwrap_or(ret_port))
                }
                RawEntry::Map(map) => {
                    let (host, port) = parse_host_port(&map.host)
                        .map_err(|m| cx.err(Some(at), &format!("{key}.host"), m))?;
                    if port.is_some() {
                        return Err(cx.err(
                            Some(at),
                            &format!("{key}.host"),
                            "in the mapping form, give the port as `master_port:`, not in `host:`",
                        ));
                    }
                    (
                        host,
                        map.publish_port.unwrap_or(publish_port),
                        map.master_port.unwrap_or(ret_port),
                    )
                }
            };
            if publish == 0 || ret == 0 {
                return Err(cx.err(
                    Some(at),
                    &key,
                    "port 0 is not a port a master can listen on",
                ));
            }
            let label = label_for(
                &host,
                publish,
                ret,
                (DEFAULT_PUBLISH_PORT, DEFAULT_RET_PORT),
            );
            if let Some(prev) = masters
                .iter()
                .find(|m| m.host == host && m.ret_port == ret && m.publish_port == publish)
            {
                return Err(cx.err(
                    Some(at),
                    &key,
                    format!(
                        "`{label}` is listed twice (also master[{}]); each master may appear once",
                        prev.id.0
                    ),
                ));
            }
            masters.push(MasterSpec {
                id: MasterId(i as u16),
                host,
                publish_port: publish,
                ret_port: ret,
                label,
            });
        }

        let master_type = match &self.master_type {
            None => {
                if masters.len() > 1 {
                    notes.push("`master` is a list without `master_type`: taking it as `master_type: failover`".into());
                }
                MasterType::Failover
            }
            Some(s) => match s.value.trim() {
                "failover" => MasterType::Failover,
                "str" if masters.len() > 1 => {
                    return Err(cx.err(
                        loc(s),
                        "master_type",
                        "`str` with several masters is Salt's hot multi-master (connected to all at once), which a proxy that forwards to one master at a time cannot do; salt-sidecar does failover: write `master_type: failover` (or drop the key) and list the masters in order of preference",
                    ));
                }
                "str" => MasterType::Str,
                "func" | "disable" => {
                    return Err(cx.err(loc(s), "master_type", format!("{} is not supported by salt-sidecar; use `failover` (or `str` with one master)", quoted(&s.value))));
                }
                other => {
                    return Err(cx.err(
                        loc(s),
                        "master_type",
                        format!(
                            "{} is not a master_type; expected `failover` or `str`",
                            quoted(other)
                        ),
                    ));
                }
            },
        };

        let alive_interval = match &self.master_alive_interval {
            None => {
                warnings.push(format!(
                    "`master_alive_interval` is missing: checking every master every {}s (Salt itself would silently never check)",
                    DEFAULT_ALIVE_INTERVAL.as_secs()
                ));
                DEFAULT_ALIVE_INTERVAL
            }
            Some(s) if s.value == 0 => {
                return Err(cx.err(
                    loc(s),
                    "master_alive_interval",
                    "must be at least 1 second; 0 would mean never checking",
                ));
            }
            Some(s) if s.value > 86_400 => {
                return Err(cx.err(
                    loc(s),
                    "master_alive_interval",
                    "must be at most 86400 seconds (one day)",
                ));
            }
            Some(s) => Duration::from_secs(s.value),
        };
        let failback = self.master_failback.as_ref().is_some_and(|s| s.value);
        // Salt's default is 0; we wait one alive interval so a master that just
        // came back proves itself before a fleet moves onto it.
        let failback_interval = match &self.master_failback_interval {
            None => alive_interval,
            Some(s) if s.value > 86_400 => {
                return Err(cx.err(
                    loc(s),
                    "master_failback_interval",
                    "must be at most 86400 seconds (one day)",
                ));
            }
            Some(s) => Duration::from_secs(s.value),
        };
        let reauth_delay = match &self.random_reauth_delay {
            None => DEFAULT_RANDOM_REAUTH_DELAY,
            Some(s) if s.value > 3_600 => {
                return Err(cx.err(
                    loc(s),
                    "random_reauth_delay",
                    "must be at most 3600 seconds",
                ));
            }
            Some(s) => Duration::from_secs(s.value),
        };
        let shuffle = self.master_shuffle.as_ref().is_some_and(|s| s.value);
        let minion_id = match &self.id {
            Some(s) if s.value.trim().is_empty() => {
                return Err(cx.err(loc(s), "id", "must not be empty"))
            }
            Some(s) => s.value.trim().to_string(),
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        let transport_probe = match &self.transport {
            None => None,
            Some(s) => match s.value.trim() {
                "zeromq" => Some(ProbeKind::Zmtp),
                "tcp" => Some(ProbeKind::Tcp),
                other => {
                    return Err(cx.err(
                        loc(s),
                        "transport",
                        format!(
                        "{} is not a transport salt-sidecar forwards; expected `zeromq` or `tcp`",
                        quoted(other)
                    ),
                    ))
                }
            },
        };

        let sidecar = self.sidecar.map(|s| s.value).unwrap_or_default();
        let sidecar = sidecar.validate(&cx, publish_port, ret_port, transport_probe)?;
        let listeners = [sidecar.listen_publish, sidecar.listen_ret];
        for (m, at) in masters.iter().zip(&master_locs) {
            if let Some(own) = m.loops_to(&listeners) {
                return Err(cx.err(
                    Some(at),
                    &format!("master[{}]", m.id.0),
                    format!("`{}` is the sidecar itself (its listener {own}): it would forward the minion to itself. List the real masters here; only the minion points at 127.0.0.1", m.label),
                ));
            }
        }

        Ok(Config {
            source: file.to_path_buf(),
            masters,
            master_type,
            alive_interval,
            failback,
            failback_interval,
            reauth_delay,
            shuffle,
            minion_id,
            sidecar,
            warnings,
            notes,
        })
    }
}

impl RawSidecar {
    fn validate(
        self,
        cx: &Ctx<'_>,
        publish_port: u16,
        ret_port: u16,
        transport_probe: Option<ProbeKind>,
    ) -> Result<SidecarConfig, ConfigError> {
        let listen_ip = match &self.listen {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(s) => s
                .value
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| {
                    cx.err(
                        loc(s),
                        "sidecar.listen",
                        format!("{} is not an IP address (e.g. 127.0.0.1)", quoted(&s.value)),
                    )
                })?,
        };
        let listen_publish = socket_or(
            cx,
            self.listen_publish.as_ref(),
            "sidecar.listen_publish",
            SocketAddr::new(listen_ip, publish_port),
        )?;
        let listen_ret = socket_or(
            cx,
            self.listen_ret.as_ref(),
            "sidecar.listen_ret",
            SocketAddr::new(listen_ip, ret_port),
        )?;
        if listen_publish == listen_ret {
            return Err(cx.err(
                self.listen_ret.as_ref().or(self.listen_publish.as_ref()).map(|s| &s.referenced),
                "sidecar.listen_ret",
                format!("the publish and ret listeners are both {listen_ret}; the minion needs two distinct ports"),
            ));
        }
        let listen_allow_remote = self.listen_allow_remote.as_ref().is_some_and(|s| s.value);
        for (addr, key, at) in [
            (
                listen_publish,
                "sidecar.listen_publish",
                self.listen_publish.as_ref(),
            ),
            (listen_ret, "sidecar.listen_ret", self.listen_ret.as_ref()),
        ] {
            if !addr.ip().is_loopback() && !listen_allow_remote {
                let (key, at) = match at {
                    Some(s) => (key, Some(&s.referenced)),
                    None => (
                        "sidecar.listen",
                        self.listen.as_ref().map(|s| &s.referenced),
                    ),
                };
                return Err(cx.err(at, key, format!("{addr} is not a loopback address: anyone who can reach it could use the sidecar as a relay to your masters; the minion on this host connects over loopback (127.0.0.1). Set `listen_allow_remote: true` only if other hosts must connect through it")));
            }
        }
        let admin = socket_or(cx, self.admin.as_ref(), "sidecar.admin", DEFAULT_ADMIN)?;
        if admin == listen_publish || admin == listen_ret {
            return Err(cx.err(
                self.admin.as_ref().map(|s| &s.referenced),
                "sidecar.admin",
                format!("{admin} is already a minion listener"),
            ));
        }
        let admin_allow_remote = self.admin_allow_remote.as_ref().is_some_and(|s| s.value);
        if !admin.ip().is_loopback() && !admin_allow_remote {
            return Err(cx.err(
                self.admin.as_ref().map(|s| &s.referenced),
                "sidecar.admin",
                format!("{admin} is not a loopback address; the admin endpoint has no authentication, so exposing it needs `admin_allow_remote: true` (admin commands are still accepted from loopback only)"),
            ));
        }
        let probe = match (&self.probe, transport_probe) {
            (None, t) => t.unwrap_or(ProbeKind::Zmtp),
            (Some(s), t) => {
                let p = match s.value.trim() {
                    "zmtp" => ProbeKind::Zmtp,
                    "tcp" => ProbeKind::Tcp,
                    other => return Err(cx.err(loc(s), "sidecar.probe", format!("{} is not a probe; expected `zmtp` (transport zeromq) or `tcp` (transport tcp)", quoted(other)))),
                };
                if t == Some(ProbeKind::Tcp) && p == ProbeKind::Zmtp {
                    return Err(cx.err(loc(s), "sidecar.probe", "`zmtp` contradicts `transport: tcp`: a tcp-transport master does not speak ZMTP (and logs a traceback for every probe); use `probe: tcp`"));
                }
                p
            }
        };
        let rise = count_or(cx, self.rise.as_ref(), "sidecar.rise", 2)?;
        let fall = count_or(cx, self.fall.as_ref(), "sidecar.fall", 2)?;
        let connect_timeout = duration_or(
            cx,
            self.connect_timeout.as_ref(),
            "sidecar.connect_timeout",
            Duration::from_secs(2),
            Duration::from_millis(10),
            Duration::from_secs(300),
        )?;
        let drain_timeout = duration_or(
            cx,
            self.drain_timeout.as_ref(),
            "sidecar.drain_timeout",
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        let max_sessions = match &self.max_sessions {
            None => None,
            Some(s) if s.value < 2 || s.value > 1_000_000 => {
                return Err(cx.err(
                    loc(s),
                    "sidecar.max_sessions",
                    "must be between 2 and 1000000 (one minion needs 2: publish and ret)",
                ))
            }
            Some(s) => Some(s.value),
        };
        let admin_socket = AdminSocket {
            path: match &self.admin_socket {
                None => PathBuf::from(DEFAULT_ADMIN_SOCKET),
                Some(s) if !Path::new(s.value.trim()).is_absolute() => {
                    return Err(cx.err(
                        loc(s),
                        "sidecar.admin_socket",
                        format!("{} is not an absolute path", quoted(&s.value)),
                    ))
                }
                Some(s) => PathBuf::from(s.value.trim()),
            },
            mode: match &self.admin_socket_mode {
                None => 0o660,
                Some(s) => {
                    let text = s.value.trim();
                    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                        Ok(m) if m <= 0o777 => m,
                        _ => return Err(cx.err(
                            loc(s),
                            "sidecar.admin_socket_mode",
                            format!("{} is not a file mode; write it in octal and quoted, e.g. \"0660\" (owner and group may send admin commands)", quoted(text)),
                        )),
                    }
                }
            },
            group: match &self.admin_socket_group {
                None => None,
                Some(s) if s.value.trim().is_empty() || s.value.contains(['/', ':', '\n']) => {
                    return Err(cx.err(
                        loc(s),
                        "sidecar.admin_socket_group",
                        format!("{} is not a group name or id", quoted(&s.value)),
                    ))
                }
                Some(s) => Some(s.value.trim().to_string()),
            },
        };
        Ok(SidecarConfig {
            listen_publish,
            listen_ret,
            admin,
            admin_allow_remote,
            probe,
            rise,
            fall,
            connect_timeout,
            drain_timeout,
            listen_allow_remote,
            max_sessions,
            admin_socket,
        })
    }
}

fn port_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<u16>>,
    key: &str,
    default: u16,
) -> Result<u16, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.value == 0 => {
            Err(cx.err(loc(s), key, "port 0 is not a port a master can listen on"))
        }
        Some(s) => Ok(s.value),
    }
}

fn count_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<u32>>,
    key: &str,
    default: u32,
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.value == 0 || s.value > 100 => {
            Err(cx.err(loc(s), key, "must be between 1 and 100 consecutive probes"))
        }
        Some(s) => Ok(s.value),
    }
}

fn duration_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<DurationValue>>,
    key: &str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.value.0 < min || s.value.0 > max => Err(cx.err(
            loc(s),
            key,
            format!(
                "{} is out of range [{}, {}]",
                humantime::format_duration(s.value.0),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        )),
        Some(s) => Ok(s.value.0),
    }
}

fn socket_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<String>>,
    key: &str,
    default: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let addr: SocketAddr = s.value.trim().parse().map_err(|_| {
        cx.err(
            loc(s),
            key,
            format!(
                "{} is not an IP:port address (e.g. 127.0.0.1:4505 or [::1]:4505)",
                quoted(&s.value)
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(cx.err(
            loc(s),
            key,
            "port 0 would pick a random port the minion cannot know; give a port",
        ));
    }
    Ok(addr)
}

/// Longest user value quoted in a message.
const MAX_QUOTED: usize = 64;
/// Longest message shown (a safety net: values are quoted short already).
const MAX_MESSAGE: usize = 512;

/// A user value as a message shows it: in backticks, control characters
/// escaped (one line, no forged log lines), at most [`MAX_QUOTED`] characters.
pub fn quoted(value: &str) -> String {
    let escaped: String = value.chars().flat_map(char::escape_default).collect();
    if escaped.chars().count() > MAX_QUOTED {
        let head: String = escaped.chars().take(MAX_QUOTED).collect();
        format!("`{head}…` ({} bytes)", value.len())
    } else {
        format!("`{escaped}`")
    }
}

/// One line, bounded: what any message (ours or the YAML parser's, which
/// may echo input) becomes before it is shown.
fn one_line(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars() {
        if out.len() >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
pub fn parse_host_port(text: &str) -> Result<(Host, Option<u16>), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty master address".into());
    }
    let parse_port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err("port 0 is not a port a master can listen on".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{} is not a port number (1-65535)", quoted(p))),
        }
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{}: missing `]` after an IPv6 address", quoted(text)))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{} is not an IPv6 address", quoted(ip)))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(|| {
                format!("{}: expected `:port` after `]`", quoted(text))
            })?)?),
        };
        return Ok((Host::Ip(ip), port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((Host::Ip(ip), None));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (text, None),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((Host::Ip(ip), port));
    }
    validate_hostname(host)?;
    Ok((Host::Name(host.to_ascii_lowercase()), port))
}

fn validate_hostname(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else if host.contains(':') {
        Err(format!(
            "{} is not a host name; write an IPv6 address with a port as `[addr]:port`",
            quoted(host)
        ))
    } else {
        Err(format!(
            "{} is not a valid host name or IP address",
            quoted(host)
        ))
    }
}
