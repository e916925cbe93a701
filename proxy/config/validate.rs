//! Raw structs to the typed [`Config`], one function per section; every
//! error names the file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use crate::config::host;
use crate::config::master::{label_for, Host, MasterId, MasterSpec};
use crate::config::raw::{DurationValue, RawConfig, RawEntry, RawMasters, RawSidecar};
use crate::config::*;

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
    pub(crate) fn validate(self, file: &Path) -> Result<Config, ConfigError> {
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
        let mut sidecar = self.sidecar.map(|s| s.value).unwrap_or_default();
        let srv_raw = sidecar.master_srv.take();
        let answer_raw = sidecar.ret_answer_timeout.take();
        let (source, locations) = match (self.master, srv_raw) {
            (Some(_), Some(srv)) => {
                return Err(cx.err(
                    loc(&srv),
                    "sidecar.master_srv",
                    "both `master` and `sidecar.master_srv` name the masters; keep one (the list, or the SRV record whose targets are the masters)",
                ));
            }
            (None, Some(srv)) => {
                let srv = master_srv(&cx, &srv, publish_port)?;
                (MasterSource::Srv(srv), Vec::new())
            }
            (list, None) => {
                let (masters, locations) = masters(&cx, list, publish_port, ret_port)?;
                (MasterSource::List(masters), locations)
            }
        };
        let master_type = match &source {
            MasterSource::List(masters) => {
                master_type(&cx, self.master_type.as_ref(), masters.len(), &mut notes)?
            }
            MasterSource::Srv(_) => srv_master_type(&cx, self.master_type.as_ref())?,
        };
        let alive_interval =
            alive_interval(&cx, self.master_alive_interval.as_ref(), &mut warnings)?;
        let failback = self.master_failback.as_ref().is_some_and(|s| s.value);
        let failback_interval =
            failback_interval(&cx, self.master_failback_interval.as_ref(), alive_interval)?;
        let reauth_delay = reauth_delay(&cx, self.random_reauth_delay.as_ref())?;
        let shuffle = self.master_shuffle.as_ref().is_some_and(|s| s.value);
        if let (Some(s), MasterSource::Srv(_)) =
            (self.master_shuffle.as_ref().filter(|s| s.value), &source)
        {
            return Err(cx.err(
                loc(s),
                "master_shuffle",
                "with `sidecar.master_srv` the order comes from the records' priority and weight (already spread per minion id); drop `master_shuffle`",
            ));
        }
        let minion_id = minion_id(&cx, self.id.as_ref())?;
        let transport_probe = transport_probe(&cx, self.transport.as_ref())?;

        let sidecar = sidecar.validate(&cx, publish_port, ret_port, transport_probe)?;
        let sidecar = SidecarConfig {
            ret_answer_timeout: ret_answer_timeout(
                &cx,
                answer_raw.as_ref(),
                alive_interval,
                transport_probe,
                sidecar.probe,
            )?,
            ..sidecar
        };
        no_self_loop(&cx, config_masters(&source), &locations, &sidecar)?;
        if let Some(warning) = open_admin_socket(&sidecar.admin_socket) {
            warnings.push(warning);
        }

        Ok(Config {
            source: file.to_path_buf(),
            master_source: source,
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

/// The listed masters (none with an SRV record: they are found at run time).
fn config_masters(source: &MasterSource) -> &[MasterSpec] {
    match source {
        MasterSource::List(masters) => masters,
        MasterSource::Srv(_) => &[],
    }
}

/// `sidecar.master_srv`: the SRV record whose targets are the masters.
fn master_srv(
    cx: &Ctx<'_>,
    raw: &Spanned<String>,
    publish_port: u16,
) -> Result<SrvSource, ConfigError> {
    let key = "sidecar.master_srv";
    let text = raw.value.trim();
    match parse_host_port(text) {
        Ok((Host::Name(name), None)) => Ok(SrvSource {
            name: name.trim_end_matches('.').to_string(),
            publish_port,
        }),
        Ok((Host::Name(_), Some(_))) => Err(cx.err(
            loc(raw),
            key,
            format!("{} has a port; give only the record's name (its targets carry their ports), e.g. `_salt._tcp.example.net`", quoted(text)),
        )),
        Ok((Host::Ip(_), _)) => Err(cx.err(
            loc(raw),
            key,
            format!("{} is an address, not the name of an SRV record; write e.g. `_salt._tcp.example.net`", quoted(text)),
        )),
        Err(m) => Err(cx.err(loc(raw), key, m)),
    }
}

/// `master_type:` with `sidecar.master_srv`: failover (the default) only.
fn srv_master_type(cx: &Ctx<'_>, raw: Option<&Spanned<String>>) -> Result<MasterType, ConfigError> {
    match raw {
        Some(s) if s.value.trim() != "failover" => Err(cx.err(
            loc(s),
            "master_type",
            format!("{} does not go with `sidecar.master_srv`: the record's targets are masters to fail over between; write `master_type: failover` (or drop the key)", quoted(&s.value)),
        )),
        _ => Ok(MasterType::Failover),
    }
}

/// `master:`: every entry to a [`MasterSpec`], in the configured order;
/// `publish_port`/`master_port` are the defaults an entry may override.
fn masters(
    cx: &Ctx<'_>,
    raw: Option<Spanned<RawMasters>>,
    publish_port: u16,
    ret_port: u16,
) -> Result<(Vec<MasterSpec>, Vec<Location>), ConfigError> {
    let Some(raw_masters) = raw else {
        return Err(cx.err(
            None,
            "master",
            "is required: the ordered list of masters to fail over between (or `sidecar.master_srv`: an SRV record naming them)",
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
    if entries.len() > MAX_MASTERS {
        let at = entries
            .get(MAX_MASTERS)
            .map(|e| &e.referenced)
            .filter(|l| l.line() > 0)
            .unwrap_or(&masters_loc);
        return Err(cx.err(
            Some(at),
            &format!("master[{MAX_MASTERS}]"),
            format!(
                "the list has {} masters; salt-sidecar takes at most {MAX_MASTERS} (every master is probed and has its own metrics)",
                entries.len()
            ),
        ));
    }
    let mut masters: Vec<MasterSpec> = Vec::with_capacity(entries.len());
    let mut locations: Vec<Location> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("master[{i}]");
        let at = if entry.referenced.line() > 0 {
            &entry.referenced
        } else {
            &masters_loc
        };
        locations.push(*at);
        let (host, publish, ret) = entry_ports(cx, &key, at, &entry.value, publish_port, ret_port)?;
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
            srv: None,
        });
    }
    Ok((masters, locations))
}

/// No master may be the sidecar itself: a literal address or `localhost` on
/// one of the minion listeners would forward the minion to itself.
fn no_self_loop(
    cx: &Ctx<'_>,
    masters: &[MasterSpec],
    locations: &[Location],
    sidecar: &SidecarConfig,
) -> Result<(), ConfigError> {
    let listeners = [sidecar.listen_publish, sidecar.listen_ret];
    for (m, at) in masters.iter().zip(locations) {
        if let Some(own) = m.loops_to(&listeners) {
            return Err(cx.err(
                Some(at),
                &format!("master[{}]", m.id.0),
                format!("`{}` is the sidecar itself (its listener {own}): it would forward the minion to itself. List the real masters here; only the minion points at 127.0.0.1", m.label),
            ));
        }
    }
    Ok(())
}

/// A warning when the admin socket's mode lets every local user connect
/// (and so drain, pin or reload the sidecar).
fn open_admin_socket(socket: &AdminSocket) -> Option<String> {
    (socket.mode & 0o007 != 0).then(|| {
        format!(
            "`sidecar.admin_socket_mode` {:04o} lets every local user send admin commands (drain, pin, reload) on {}; use \"0660\" with `admin_socket_group` for the operators",
            socket.mode,
            socket.path.display()
        )
    })
}

/// One `master:` entry's host and (publish, ret) ports; `publish_port` and
/// `ret_port` are the defaults it may override.
fn entry_ports(
    cx: &Ctx<'_>,
    key: &str,
    at: &Location,
    entry: &RawEntry,
    publish_port: u16,
    ret_port: u16,
) -> Result<(Host, u16, u16), ConfigError> {
    Ok(match entry {
        RawEntry::Text(text) => {
            let (host, port) = parse_host_port(text).map_err(|m| cx.err(Some(at), key, m))?;
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
    })
}

/// `master_type:`; a list without it is taken as failover (with a note).
fn master_type(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<String>>,
    masters: usize,
    notes: &mut Vec<String>,
) -> Result<MasterType, ConfigError> {
    Ok(match raw {
        None => {
            if masters > 1 {
                notes.push("`master` is a list without `master_type`: taking it as `master_type: failover`".into());
            }
            MasterType::Failover
        }
        Some(s) => match s.value.trim() {
            "failover" => MasterType::Failover,
            "str" if masters > 1 => {
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
    })
}

/// `master_alive_interval:`; missing, the default (with a warning).
fn alive_interval(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<u64>>,
    warnings: &mut Vec<String>,
) -> Result<Duration, ConfigError> {
    Ok(match raw {
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
    })
}

/// `master_failback_interval:`; missing, one alive interval.
fn failback_interval(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<u64>>,
    alive_interval: Duration,
) -> Result<Duration, ConfigError> {
    // Salt's default is 0; we wait one alive interval so a master that just
    // came back proves itself before a fleet moves onto it.
    Ok(match raw {
        None => alive_interval,
        Some(s) if s.value > 86_400 => {
            return Err(cx.err(
                loc(s),
                "master_failback_interval",
                "must be at most 86400 seconds (one day)",
            ));
        }
        Some(s) => Duration::from_secs(s.value),
    })
}

/// `random_reauth_delay:`.
fn reauth_delay(cx: &Ctx<'_>, raw: Option<&Spanned<u64>>) -> Result<Duration, ConfigError> {
    Ok(match raw {
        None => DEFAULT_RANDOM_REAUTH_DELAY,
        Some(s) if s.value > 3_600 => {
            return Err(cx.err(
                loc(s),
                "random_reauth_delay",
                "must be at most 3600 seconds",
            ));
        }
        Some(s) => Duration::from_secs(s.value),
    })
}

/// `id:`; missing, the host name (as Salt does).
fn minion_id(cx: &Ctx<'_>, raw: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    Ok(match raw {
        Some(s) if s.value.trim().is_empty() => {
            return Err(cx.err(loc(s), "id", "must not be empty"))
        }
        Some(s) => s.value.trim().to_string(),
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    })
}

/// `sidecar.ret_answer_timeout`: passive hung-master detection on ret
/// sessions, on both transports (a stuck ZeroMQ master still completes
/// every ZMTP handshake in libzmq's I/O thread, so the `zmtp` probe alone
/// cannot see it). Default: one alive interval, at least
/// [`MIN_DEFAULT_RET_ANSWER_TIMEOUT`] with `transport: tcp` and
/// [`MIN_DEFAULT_RET_ANSWER_TIMEOUT_ZEROMQ`] with `probe: zmtp` (ZeroMQ
/// messages followed): wherever the sidecar knows what a request is and can
/// ask the master a Salt `ping`. Off by default with
/// `probe: tcp` on ZeroMQ (bytes not followed, and a master checked by a
/// plain connect may be no Salt master to ping); `0` turns it off.
fn ret_answer_timeout(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<DurationValue>>,
    alive_interval: Duration,
    transport_probe: Option<ProbeKind>,
    probe: ProbeKind,
) -> Result<Option<Duration>, ConfigError> {
    match raw {
        None if transport_probe == Some(ProbeKind::Ping) => {
            Ok(Some(alive_interval.max(MIN_DEFAULT_RET_ANSWER_TIMEOUT)))
        }
        None if probe == ProbeKind::Zmtp => Ok(Some(
            alive_interval.max(MIN_DEFAULT_RET_ANSWER_TIMEOUT_ZEROMQ),
        )),
        None => Ok(None),
        Some(s) if s.value.0.is_zero() => Ok(None),
        Some(_) => duration_or(
            cx,
            raw,
            "sidecar.ret_answer_timeout",
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )
        .map(Some),
    }
}

/// `transport:`: the probe it implies, if given (`ping` for tcp).
fn transport_probe(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<String>>,
) -> Result<Option<ProbeKind>, ConfigError> {
    Ok(match raw {
        None => None,
        Some(s) => match s.value.trim() {
            "zeromq" => Some(ProbeKind::Zmtp),
            "tcp" => Some(ProbeKind::Ping),
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
    })
}

impl RawSidecar {
    fn validate(
        self,
        cx: &Ctx<'_>,
        publish_port: u16,
        ret_port: u16,
        transport_probe: Option<ProbeKind>,
    ) -> Result<SidecarConfig, ConfigError> {
        let (listen_publish, listen_ret) = self.listeners(cx, publish_port, ret_port)?;
        let listen_allow_remote = self.listen_allow_remote(cx, listen_publish, listen_ret)?;
        let (admin, admin_allow_remote) = self.admin(cx, listen_publish, listen_ret)?;
        let probe = self.probe(cx, transport_probe)?;
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
        let half_close_timeout = duration_or(
            cx,
            self.half_close_timeout.as_ref(),
            "sidecar.half_close_timeout",
            DEFAULT_HALF_CLOSE_TIMEOUT,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
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
            half_close_timeout,
            // Needs the alive interval and the transport: set by the caller.
            ret_answer_timeout: None,
            move_sessions: self.move_sessions.as_ref().is_none_or(|s| s.value),
            salt_events: self.salt_events.as_ref().is_none_or(|s| s.value),
            listen_allow_remote,
            max_sessions: self.max_sessions(cx)?,
            admin_socket: self.admin_socket(cx)?,
        })
    }

    /// `listen_allow_remote`: a non-loopback minion listener is an open
    /// relay to the masters unless explicitly allowed.
    fn listen_allow_remote(
        &self,
        cx: &Ctx<'_>,
        listen_publish: SocketAddr,
        listen_ret: SocketAddr,
    ) -> Result<bool, ConfigError> {
        let allowed = self.listen_allow_remote.as_ref().is_some_and(|s| s.value);
        for (addr, key, at) in [
            (
                listen_publish,
                "sidecar.listen_publish",
                self.listen_publish.as_ref(),
            ),
            (listen_ret, "sidecar.listen_ret", self.listen_ret.as_ref()),
        ] {
            if !addr.ip().is_loopback() && !allowed {
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
        Ok(allowed)
    }

    /// `max_sessions`: the cap on minion connections (fitted to the
    /// open-file limit at start).
    fn max_sessions(&self, cx: &Ctx<'_>) -> Result<Option<u32>, ConfigError> {
        match &self.max_sessions {
            None => Ok(None),
            Some(s) if s.value < 2 || s.value > 1_000_000 => Err(cx.err(
                loc(s),
                "sidecar.max_sessions",
                "must be between 2 and 1000000 (one minion needs 2: publish and ret)",
            )),
            Some(s) => Ok(Some(s.value)),
        }
    }

    /// `admin_socket`, `admin_socket_mode`, `admin_socket_group`: where the
    /// admin commands are accepted, and who may send them.
    fn admin_socket(&self, cx: &Ctx<'_>) -> Result<AdminSocket, ConfigError> {
        let path = match &self.admin_socket {
            None => PathBuf::from(DEFAULT_ADMIN_SOCKET),
            Some(s) if !Path::new(s.value.trim()).is_absolute() => {
                return Err(cx.err(
                    loc(s),
                    "sidecar.admin_socket",
                    format!("{} is not an absolute path", quoted(&s.value)),
                ))
            }
            Some(s) => PathBuf::from(s.value.trim()),
        };
        let mode = match &self.admin_socket_mode {
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
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(cx.err(
                self.admin_socket.as_ref().map(|s| &s.referenced),
                "sidecar.admin_socket",
                format!(
                    "the path has {} bytes; a Unix socket path has at most {MAX_SOCKET_PATH} (the kernel's sun_path); choose a shorter one",
                    path.as_os_str().len()
                ),
            ));
        }
        let group = match &self.admin_socket_group {
            None => None,
            Some(s) if s.value.trim().is_empty() || s.value.contains(['/', ':', '\n']) => {
                return Err(cx.err(
                    loc(s),
                    "sidecar.admin_socket_group",
                    format!("{} is not a group name or id", quoted(&s.value)),
                ))
            }
            Some(s) => {
                let name = s.value.trim().to_string();
                let Some(gid) = host::group_id(&name) else {
                    return Err(cx.err(
                        loc(s),
                        "sidecar.admin_socket_group",
                        format!("no group {} in /etc/group (give a group name from /etc/group or a numeric id)", quoted(&name)),
                    ));
                };
                Some(SocketGroup { name, gid })
            }
        };
        Ok(AdminSocket { path, mode, group })
    }

    /// `listen`, `listen_publish`, `listen_ret`: the minion's two listeners.
    fn listeners(
        &self,
        cx: &Ctx<'_>,
        publish_port: u16,
        ret_port: u16,
    ) -> Result<(SocketAddr, SocketAddr), ConfigError> {
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
        Ok((listen_publish, listen_ret))
    }

    /// `admin`, `admin_allow_remote`: the admin endpoint.
    fn admin(
        &self,
        cx: &Ctx<'_>,
        listen_publish: SocketAddr,
        listen_ret: SocketAddr,
    ) -> Result<(SocketAddr, bool), ConfigError> {
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
        Ok((admin, admin_allow_remote))
    }

    /// `probe`, checked against Salt's `transport`.
    fn probe(
        &self,
        cx: &Ctx<'_>,
        transport_probe: Option<ProbeKind>,
    ) -> Result<ProbeKind, ConfigError> {
        Ok(match (&self.probe, transport_probe) {
            (None, t) => t.unwrap_or(ProbeKind::Zmtp),
            (Some(s), t) => {
                let p = match s.value.trim() {
                "zmtp" => ProbeKind::Zmtp,
                "tcp" => ProbeKind::Tcp,
                "ping" => ProbeKind::Ping,
                other => return Err(cx.err(loc(s), "sidecar.probe", format!("{} is not a probe; expected `zmtp` (transport zeromq), `ping` or `tcp` (transport tcp)", quoted(other)))),
            };
                if t == Some(ProbeKind::Ping) && p == ProbeKind::Zmtp {
                    return Err(cx.err(loc(s), "sidecar.probe", "`zmtp` contradicts `transport: tcp`: a tcp-transport master does not speak ZMTP (and logs a traceback for every probe); use `probe: ping` (or `tcp`)"));
                }
                if t != Some(ProbeKind::Ping) && p == ProbeKind::Ping {
                    return Err(cx.err(loc(s), "sidecar.probe", "`ping` sends Salt's tcp-transport request, which needs `transport: tcp` (a ZeroMQ master would never answer it); add `transport: tcp`, or use `probe: zmtp`"));
                }
                p
            }
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
/// escaped (one line, no forged log lines), at most `MAX_QUOTED` characters.
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
pub(crate) fn one_line(message: &str) -> String {
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
    // Not an address as a whole, with two or more colons: an IPv6 address
    // and a port need brackets (`2001:db8::1:14506` is not "port 14506").
    if text.matches(':').count() > 1 {
        let fix = match text.rsplit_once(':') {
            Some((ip, port)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                format!("; write `[{ip}]:{port}`")
            }
            _ => String::new(),
        };
        return Err(format!(
            "{} is not an address: an IPv6 address with a port must be in brackets, `[addr]:port`{fix}",
            quoted(text)
        ));
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
