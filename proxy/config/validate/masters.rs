//! Who the masters are: `master:` (a list, or one entry) or
//! `sidecar.master_srv` (an SRV record naming them), `master_type` and
//! `master_shuffle` as they go with either, and no master that is the
//! sidecar itself.

use serde_saphyr::{Location, Spanned};

use super::{loc, parse_host_port, quoted, Ctx};
use crate::config::master::{label_for, Host, MasterId, MasterSpec};
use crate::config::raw::{RawEntry, RawMasters};
use crate::config::{
    ConfigError, MasterSource, MasterType, SidecarConfig, SrvSource, DEFAULT_PUBLISH_PORT,
    DEFAULT_RET_PORT, MAX_MASTERS,
};

/// Where the masters come from, and where each listed one was written
/// (none with an SRV record); `publish_port`/`ret_port` are the defaults.
pub(super) fn source(
    cx: &Ctx<'_>,
    list: Option<Spanned<RawMasters>>,
    srv: Option<Spanned<String>>,
    publish_port: u16,
    ret_port: u16,
) -> Result<(MasterSource, Vec<Location>), ConfigError> {
    match (list, srv) {
        (Some(_), Some(srv)) => Err(cx.err(
            loc(&srv),
            "sidecar.master_srv",
            "both `master` and `sidecar.master_srv` name the masters; keep one (the list, or the SRV record whose targets are the masters)",
        )),
        (None, Some(srv)) => {
            let srv = master_srv(cx, &srv, publish_port)?;
            Ok((MasterSource::Srv(srv), Vec::new()))
        }
        (list, None) => {
            let (masters, locations) = masters(cx, list, publish_port, ret_port)?;
            Ok((MasterSource::List(masters), locations))
        }
    }
}

/// The listed masters (none with an SRV record: they are found at run time).
pub(super) fn listed(source: &MasterSource) -> &[MasterSpec] {
    match source {
        MasterSource::List(masters) => masters,
        MasterSource::Srv(_) => &[],
    }
}

/// `master_type:` as it goes with the master source.
pub(super) fn master_type(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<String>>,
    source: &MasterSource,
    notes: &mut Vec<String>,
) -> Result<MasterType, ConfigError> {
    match source {
        MasterSource::List(masters) => list_master_type(cx, raw, masters.len(), notes),
        MasterSource::Srv(_) => srv_master_type(cx, raw),
    }
}

/// `master_shuffle:` (or Salt's `random_master`); not with an SRV record,
/// whose priorities and weights already order the masters per minion.
pub(super) fn shuffle(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<bool>>,
    source: &MasterSource,
) -> Result<bool, ConfigError> {
    let shuffle = raw.is_some_and(|s| s.value);
    if let (Some(s), MasterSource::Srv(_)) = (raw.filter(|s| s.value), source) {
        return Err(cx.err(
            loc(s),
            "master_shuffle",
            "with `sidecar.master_srv` the order comes from the records' priority and weight (already spread per minion id); drop `master_shuffle`",
        ));
    }
    Ok(shuffle)
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
pub(super) fn no_self_loop(
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

/// `master_type:` with a `master:` list; a list without it is taken as
/// failover (with a note).
fn list_master_type(
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

#[cfg(test)]
mod tests {
    use crate::config::master::Host;
    use crate::config::{MasterType, MAX_MASTERS};

    use super::super::testing::{assert_refused, load, refused};

    #[test]
    fn every_entry_form_gives_its_ports_and_label_in_order() {
        let c = load(
            "master:\n  - salt-a\n  - salt-b:14506\n  - \"[2001:db8::5]\"\n  - {host: salt-c, master_port: 5506, publish_port: 5505}\nmaster_alive_interval: 5\n",
        );
        let got: Vec<(String, u16, u16, &str)> = c
            .masters()
            .iter()
            .map(|m| {
                (
                    m.host.to_string(),
                    m.publish_port,
                    m.ret_port,
                    m.label.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("salt-a".into(), 4505, 4506, "salt-a"),
                ("salt-b".into(), 4505, 14506, "salt-b:14506"),
                ("[2001:db8::5]".into(), 4505, 4506, "[2001:db8::5]"),
                ("salt-c".into(), 5505, 5506, "salt-c:5506/5505"),
            ]
        );
        let ids: Vec<u16> = c.masters().iter().map(|m| m.id.0).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
    }

    #[test]
    fn the_top_level_ports_are_every_entrys_defaults() {
        let c = load(
            "master: [a, b:7]\npublish_port: 5505\nmaster_port: 5506\nmaster_alive_interval: 5\n",
        );
        let ports: Vec<(u16, u16)> = c
            .masters()
            .iter()
            .map(|m| (m.publish_port, m.ret_port))
            .collect();
        assert_eq!(ports, [(5505, 5506), (5505, 7)]);
    }

    #[test]
    fn one_entry_without_a_list_is_a_master_list_of_one() {
        let c = load("master: Salt.Example.NET\nmaster_alive_interval: 5\n");
        assert_eq!(c.masters().len(), 1);
        assert_eq!(c.masters()[0].host, Host::Name("salt.example.net".into()));
        assert_eq!(c.master_type, MasterType::Failover);
        assert!(
            c.notes.is_empty(),
            "one master needs no note: {:?}",
            c.notes
        );
    }

    #[test]
    fn a_missing_or_empty_list_is_refused() {
        assert_refused(
            "id: x\n",
            "t.yaml: master: is required: the ordered list of masters to fail over between (or `sidecar.master_srv`",
        );
        assert_refused(
            "master: []\n",
            "t.yaml:1:9: master: the list is empty; name at least one master",
        );
    }

    #[test]
    fn at_most_64_masters() {
        let list = |n: usize| -> String {
            let entries: String = (0..n).map(|i| format!("  - m{i}\n")).collect();
            format!("master:\n{entries}master_alive_interval: 5\n")
        };
        assert_eq!(load(&list(MAX_MASTERS)).masters().len(), MAX_MASTERS);
        assert_refused(
            &list(MAX_MASTERS + 1),
            "t.yaml:66:5: master[64]: the list has 65 masters; salt-sidecar takes at most 64",
        );
    }

    #[test]
    fn a_bad_entry_is_named_by_its_index() {
        assert_refused(
            "master:\n  - a\n  - b:0\n",
            "t.yaml:3:5: master[1]: port 0 is not a port a master can listen on",
        );
        assert_refused(
            "master:\n  - a\n  - {host: b, master_port: 0}\n",
            "t.yaml:3:5: master[1]: port 0 is not a port a master can listen on",
        );
        assert_refused(
            "master:\n  - salt master\n",
            "t.yaml:2:5: master[0]: `salt master` is not a valid host name or IP address",
        );
        assert_refused(
            "master:\n  - {host: \"b:4506\"}\n",
            "t.yaml:2:5: master[0].host: in the mapping form, give the port as `master_port:`, not in `host:`",
        );
        assert_refused(
            "master:\n  - salt-a\n  - salt-b\n  - SALT-A\n",
            "t.yaml:4:5: master[2]: `salt-a` is listed twice (also master[0]); each master may appear once",
        );
    }

    #[test]
    fn the_same_host_on_other_ports_is_another_master() {
        let c = load("master: [salt-a, \"salt-a:14506\"]\nmaster_alive_interval: 5\n");
        assert_eq!(c.masters().len(), 2);
    }

    #[test]
    fn a_list_is_failover_with_a_note_and_str_takes_one_master() {
        let c = load("master: [a, b]\nmaster_alive_interval: 5\n");
        assert_eq!(c.master_type, MasterType::Failover);
        assert_eq!(
            c.notes,
            ["`master` is a list without `master_type`: taking it as `master_type: failover`"]
        );
        let c = load("master: [a, b]\nmaster_type: failover\nmaster_alive_interval: 5\n");
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let c = load("master: a\nmaster_type: str\nmaster_alive_interval: 5\n");
        assert_eq!(c.master_type, MasterType::Str);
    }

    #[test]
    fn hot_multi_master_and_other_types_are_refused() {
        assert_refused(
            "master: [a, b]\nmaster_type: str\n",
            "t.yaml:2:14: master_type: `str` with several masters is Salt's hot multi-master",
        );
        assert!(refused("master: [a, b]\nmaster_type: str\n")
            .contains("write `master_type: failover` (or drop the key)"));
        assert_refused(
            "master: a\nmaster_type: func\n",
            "t.yaml:2:14: master_type: `func` is not supported by salt-sidecar; use `failover` (or `str` with one master)",
        );
        assert_refused(
            "master: a\nmaster_type: failover2\n",
            "t.yaml:2:14: master_type: `failover2` is not a master_type; expected `failover` or `str`",
        );
    }

    #[test]
    fn an_srv_record_names_the_masters_instead_of_a_list() {
        let c = load("sidecar:\n  master_srv: _Salt._TCP.Example.NET.\npublish_port: 5505\nmaster_alive_interval: 5\n");
        assert!(c.masters().is_empty());
        let srv = c.srv().expect("an SRV source");
        assert_eq!(
            (srv.name.as_str(), srv.publish_port),
            ("_salt._tcp.example.net", 5505)
        );
        assert_eq!(c.master_type, MasterType::Failover);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn an_srv_record_is_refused_with_a_list_a_port_an_address_or_a_shuffle() {
        assert_refused(
            "master: a\nsidecar:\n  master_srv: _salt._tcp.example.net\n",
            "t.yaml:3:15: sidecar.master_srv: both `master` and `sidecar.master_srv` name the masters; keep one",
        );
        assert_refused(
            "sidecar:\n  master_srv: _salt._tcp.example.net:4506\n",
            "t.yaml:2:15: sidecar.master_srv: `_salt._tcp.example.net:4506` has a port",
        );
        assert_refused(
            "sidecar:\n  master_srv: 192.0.2.10\n",
            "t.yaml:2:15: sidecar.master_srv: `192.0.2.10` is an address, not the name of an SRV record",
        );
        assert_refused(
            "sidecar:\n  master_srv: \"\"\n",
            "t.yaml:2:15: sidecar.master_srv: empty master address",
        );
        assert_refused(
            "master_type: str\nsidecar:\n  master_srv: _salt._tcp.example.net\n",
            "t.yaml:1:14: master_type: `str` does not go with `sidecar.master_srv`",
        );
        assert_refused(
            "master_shuffle: true\nsidecar:\n  master_srv: _salt._tcp.example.net\n",
            "t.yaml:1:17: master_shuffle: with `sidecar.master_srv` the order comes from the records' priority and weight",
        );
        // A shuffle that is off says nothing.
        let c = load("random_master: false\nsidecar:\n  master_srv: _salt._tcp.example.net\nmaster_alive_interval: 5\n");
        assert!(!c.shuffle);
    }

    #[test]
    fn shuffle_is_off_by_default_and_random_master_is_its_alias() {
        assert!(!load("master: [a, b]\nmaster_alive_interval: 5\n").shuffle);
        assert!(load("master: [a, b]\nmaster_shuffle: true\nmaster_alive_interval: 5\n").shuffle);
        assert!(load("master: [a, b]\nrandom_master: true\nmaster_alive_interval: 5\n").shuffle);
    }

    #[test]
    fn a_master_on_the_sidecars_own_listener_is_refused() {
        assert_refused(
            "master:\n  - salt-a\n  - localhost\n",
            "t.yaml:3:5: master[1]: `localhost` is the sidecar itself (its listener 127.0.0.1:4505)",
        );
        assert_refused(
            "master:\n  - \"[::ffff:127.0.0.5]:14506\"\nsidecar:\n  listen: 127.0.0.5\n  listen_ret: 127.0.0.5:14506\n",
            "t.yaml:2:5: master[0]: `[::ffff:127.0.0.5]:14506` is the sidecar itself (its listener 127.0.0.5:4505)",
        );
        // The same address on ports the sidecar does not listen on is a master.
        let c = load("master: [\"127.0.0.1:14506\"]\npublish_port: 14505\nmaster_alive_interval: 5\nsidecar:\n  listen_publish: 127.0.0.1:4505\n  listen_ret: 127.0.0.1:4506\n");
        assert_eq!(c.masters()[0].label, "127.0.0.1:14506/14505");
    }
}
