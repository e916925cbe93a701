//! The config file as serde reads it: Salt's keys and the `sidecar:`
//! section, unknown keys rejected, every value with its location. No
//! meaning yet: `validate` gives it one.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::config::quoted;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) master: Option<Spanned<RawMasters>>,
    pub(crate) master_type: Option<Spanned<String>>,
    pub(crate) master_alive_interval: Option<Spanned<u64>>,
    pub(crate) master_failback: Option<Spanned<bool>>,
    pub(crate) master_failback_interval: Option<Spanned<u64>>,
    pub(crate) random_reauth_delay: Option<Spanned<u64>>,
    #[serde(alias = "random_master")]
    pub(crate) master_shuffle: Option<Spanned<bool>>,
    pub(crate) publish_port: Option<Spanned<u16>>,
    pub(crate) master_port: Option<Spanned<u16>>,
    pub(crate) id: Option<Spanned<String>>,
    /// Salt's `transport`: picks the default probe (zeromq → zmtp, tcp → tcp).
    pub(crate) transport: Option<Spanned<String>>,
    pub(crate) sidecar: Option<Spanned<RawSidecar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSidecar {
    /// The SRV record naming the masters (instead of `master:`).
    pub(crate) master_srv: Option<Spanned<String>>,
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) listen_publish: Option<Spanned<String>>,
    pub(crate) listen_ret: Option<Spanned<String>>,
    pub(crate) admin: Option<Spanned<String>>,
    pub(crate) admin_allow_remote: Option<Spanned<bool>>,
    pub(crate) probe: Option<Spanned<String>>,
    pub(crate) rise: Option<Spanned<u32>>,
    pub(crate) fall: Option<Spanned<u32>>,
    pub(crate) connect_timeout: Option<Spanned<DurationValue>>,
    pub(crate) drain_timeout: Option<Spanned<DurationValue>>,
    /// How long a ret request may wait for the master's answer.
    pub(crate) ret_answer_timeout: Option<Spanned<DurationValue>>,
    pub(crate) half_close_timeout: Option<Spanned<DurationValue>>,
    pub(crate) move_sessions: Option<Spanned<bool>>,
    pub(crate) salt_events: Option<Spanned<bool>>,
    pub(crate) listen_allow_remote: Option<Spanned<bool>>,
    pub(crate) max_sessions: Option<Spanned<u32>>,
    pub(crate) admin_socket: Option<Spanned<String>>,
    pub(crate) admin_socket_mode: Option<Spanned<String>>,
    pub(crate) admin_socket_group: Option<Spanned<String>>,
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

pub(crate) type RawMasters = OneOrList<RawEntry>;

impl From<String> for RawEntry {
    fn from(text: String) -> Self {
        RawEntry::Text(text)
    }
}

/// One `master:` entry: `host`, `host:port`, `[v6]:port`, or a mapping.
#[derive(Debug)]
pub(crate) enum RawEntry {
    Text(String),
    Map(RawEntryMap),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntryMap {
    pub(crate) host: String,
    pub(crate) master_port: Option<u16>,
    pub(crate) publish_port: Option<u16>,
}

/// A duration written as seconds (`2`, `0.5`) or with a unit (`"500ms"`, `"2s"`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationValue(pub(crate) Duration);

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
