//! Property tests (proptest) for the three parsers and the one state machine
//! that see untrusted or unbounded input:
//!
//! - the config loader: any text never panics and always gives a one-line
//!   error naming the file (or a config that satisfies every validated rule);
//! - the ZMTP codec and the probe: any bytes never panic, decoding is
//!   incremental and bounded, and a probe against a server that sends
//!   anything and then stalls returns within its timeout;
//! - the selection state machine: random event sequences keep its invariants
//!   (see [`check_invariants`]); the rise/fall hysteresis flips exactly as
//!   its rule says.
//!
//! Pure and loopback only (127.0.95.x); no root needed. Case counts are kept
//! so the file runs in well under a minute on a busy 2-core machine; set
//! `PROPTEST_CASES` to run more.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;
use salt_sidecar::config::{self, ProbeKind};
use salt_sidecar::hysteresis::Hysteresis;
use salt_sidecar::master::{MasterId, Port};
use salt_sidecar::probe;
use salt_sidecar::select::{Action, Event, Health, Policy, Reason, Selector, SessionFate};
use salt_sidecar::zmtp::{self, Frame, SocketType};
use tokio::time::Instant;

/// proptest's default case count unless `PROPTEST_CASES` says otherwise.
fn cases(default: u32) -> PtConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    PtConfig {
        cases,
        // Shrinking a slow async case can take minutes; the failing input is printed anyway.
        max_shrink_iters: 256,
        // Failing inputs are printed; no regression files in the source tree.
        failure_persistence: None,
        ..PtConfig::default()
    }
}

// === config loader ===

const CONFIG_PATH: &str = "/etc/salt-sidecar/fuzz.yaml";

/// Checks what `config::parse` says about `text`: a valid config satisfies
/// the rules `validate` promises; an error is one clear line.
fn check_config_text(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new(CONFIG_PATH);
    match config::parse(path, text) {
        Ok(c) => {
            prop_assert!(!c.masters().is_empty(), "a valid config has a master");
            for (i, m) in c.masters().iter().enumerate() {
                prop_assert_eq!(m.id, MasterId(i as u16));
                prop_assert!(m.publish_port != 0 && m.ret_port != 0, "port 0 accepted");
            }
            let mut labels: Vec<&str> = c.masters().iter().map(|m| m.label.as_str()).collect();
            labels.sort_unstable();
            labels.dedup();
            prop_assert_eq!(labels.len(), c.masters().len(), "duplicate master accepted");
            prop_assert!(!c.alive_interval.is_zero(), "alive interval 0 accepted");
            prop_assert!(c.sidecar.rise >= 1 && c.sidecar.fall >= 1);
            prop_assert!(
                c.sidecar.listen_publish != c.sidecar.listen_ret,
                "both listeners on one address accepted"
            );
            prop_assert!(
                c.sidecar.admin.ip().is_loopback() || c.sidecar.admin_allow_remote,
                "non-loopback admin accepted without admin_allow_remote"
            );
            if c.masters().len() > 1 {
                prop_assert_eq!(c.master_type, config::MasterType::Failover);
            }
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(!e.message.trim().is_empty(), "empty message: {:?}", e);
            prop_assert!(
                shown.starts_with(CONFIG_PATH),
                "error does not name the file: {}",
                shown
            );
            prop_assert!(!shown.contains('\n'), "error is not one line: {:?}", shown);
            prop_assert!(
                shown.len() < 2048,
                "error of {} bytes (echoes the input?)",
                shown.len()
            );
        }
    }
    Ok(())
}

/// A YAML scalar of the kinds a config contains, valid or not.
fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (0u32..70_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f}")),
        Just("true".to_string()),
        Just("False".to_string()),
        Just("~".to_string()),
        Just("null".to_string()),
        Just("''".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just(".nan".to_string()),
        Just("-.inf".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
        Just("\"500ms\"".to_string()),
        Just("2s".to_string()),
        Just("1m".to_string()),
        Just("\"-3s\"".to_string()),
        Just("10years".to_string()),
        Just("failover".to_string()),
        Just("str".to_string()),
        Just("zmtp".to_string()),
        Just("tcp".to_string()),
        Just("ping".to_string()),
        Just("zeromq".to_string()),
        Just("127.0.0.1".to_string()),
        Just("127.0.0.1:4506".to_string()),
        Just("0.0.0.0:9464".to_string()),
        Just("\"[::1]:9464\"".to_string()),
        Just("\"::1\"".to_string()),
        Just("\"[fe80::1%eth0]:4506\"".to_string()),
        Just("salt-a.example.net".to_string()),
        Just("salt-a.example.net:99999".to_string()),
        Just("\"host:\"".to_string()),
        Just("\":4506\"".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
        Just("!!str 5".to_string()),
        Just("|\n  block".to_string()),
        "[a-z0-9.:\\-\\[\\]]{0,24}",
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

/// A value for a key: a scalar, a flow list, or a small mapping.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => yaml_scalar(),
        1 => prop::collection::vec(yaml_scalar(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => (yaml_scalar(), yaml_scalar(), yaml_scalar()).prop_map(|(h, m, p)| {
            format!("{{host: {h}, master_port: {m}, publish_port: {p}}}")
        }),
    ]
}

const TOP_KEYS: &[&str] = &[
    "master",
    "master_type",
    "master_alive_interval",
    "master_failback",
    "master_failback_interval",
    "random_reauth_delay",
    "master_shuffle",
    "random_master",
    "publish_port",
    "master_port",
    "id",
    "transport",
    "sidecar",
    "unknown_key",
    "Master",
];

const SIDECAR_KEYS: &[&str] = &[
    "listen",
    "listen_publish",
    "listen_ret",
    "admin",
    "admin_allow_remote",
    "probe",
    "rise",
    "fall",
    "connect_timeout",
    "drain_timeout",
    "ret_answer_timeout",
    "bogus",
];

/// A config file built from the real keys with values of every kind: most
/// are rejected, some are valid; every outcome must be clean.
fn structured_config() -> impl Strategy<Value = String> {
    let top = prop::collection::vec(
        (prop::sample::select(TOP_KEYS), yaml_value(), any::<bool>()),
        0..10,
    );
    let side = prop::collection::vec((prop::sample::select(SIDECAR_KEYS), yaml_value()), 0..6);
    let masters = prop::collection::vec(yaml_scalar(), 0..4);
    (top, side, masters, any::<bool>()).prop_map(|(top, side, masters, block_list)| {
        let mut out = String::new();
        if block_list {
            out.push_str("master:\n");
            for m in &masters {
                out.push_str(&format!("  - {m}\n"));
            }
        }
        for (key, value, as_block) in top {
            if key == "sidecar" {
                if as_block {
                    out.push_str("sidecar:\n");
                    for (k, v) in &side {
                        out.push_str(&format!("  {k}: {v}\n"));
                    }
                } else {
                    out.push_str(&format!("sidecar: {value}\n"));
                }
            } else {
                out.push_str(&format!("{key}: {value}\n"));
            }
        }
        out
    })
}

/// The largest char boundary of `s` at or before byte `at`.
fn char_floor(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

/// Mutations of a known-good file: drop, duplicate or garble one line.
fn mutated_valid_config() -> impl Strategy<Value = String> {
    const BASE: &str = "master:\n  - 127.0.0.2\n  - salt-b.example.net:14506\n  - {host: salt-c.example.net, master_port: 5506, publish_port: 5505}\nmaster_type: failover\nmaster_alive_interval: 5\nmaster_failback: true\nmaster_failback_interval: 20\nrandom_reauth_delay: 3\nid: web-01\nsidecar:\n  listen: 127.0.0.1\n  admin: 127.0.0.1:19464\n  probe: zmtp\n  rise: 3\n  fall: 1\n  connect_timeout: 500ms\n  drain_timeout: 2m\n";
    let lines = BASE.lines().count();
    (0..lines, 0u8..4, "\\PC{0,8}", 0usize..40).prop_map(move |(at, op, junk, col)| {
        let mut v: Vec<String> = BASE.lines().map(str::to_string).collect();
        match op {
            0 => {
                v.remove(at);
            }
            1 => {
                let l = v[at].clone();
                v.insert(at, l);
            }
            2 => {
                let cut = char_floor(&v[at], col);
                v[at].insert_str(cut, &junk);
            }
            _ => {
                let cut = char_floor(&v[at], col);
                v[at].truncate(cut);
            }
        }
        v.join("\n")
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_any_text_never_panics_and_errors_are_one_clear_line(text in "\\PC{0,200}") {
        check_config_text(&text)?;
    }

    #[test]
    fn config_any_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_config_text(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn config_built_from_real_keys_is_valid_or_clearly_rejected(text in structured_config()) {
        check_config_text(&text)?;
    }

    #[test]
    fn config_mutations_of_a_valid_file_are_valid_or_clearly_rejected(text in mutated_valid_config()) {
        check_config_text(&text)?;
    }
}

/// Hostile YAML: deep nesting, alias expansion, huge scalars and many keys
/// must be answered (an error or a config) quickly, without a stack overflow
/// (which would abort this whole test binary) or unbounded memory: each
/// within 20 s of CPU in the debug build (all take under 4 s; an exponential
/// blow-up takes far longer).
#[test]
fn config_hostile_yaml_is_answered_quickly() {
    let deep_list = format!("master: {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let deep_map = format!("master:\n{}", {
        let mut s = String::new();
        for i in 0..2_000 {
            s.push_str(&" ".repeat(i + 1));
            s.push_str("k:\n");
        }
        s
    });
    let mut laughs = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i", "master"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let huge_scalar = format!("master: {}\n", "x".repeat(8 << 20));
    let many_keys: String = (0..50_000).map(|i| format!("k{i}: {i}\n")).collect();
    let many_masters = format!(
        "master:\n{}",
        (0..70_000)
            .map(|i| format!("  - 10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255))
            .collect::<String>()
    );
    for (name, text) in [
        ("deep flow list", deep_list),
        ("deep block map", deep_map),
        ("alias expansion (billion laughs)", laughs),
        ("8 MiB scalar", huge_scalar),
        ("50,000 unknown keys", many_keys),
        ("70,000 masters", many_masters),
    ] {
        // A thread with the default 2 MiB stack, like the binary's main thread
        // gets 8 MiB: a recursion bug shows up here first. The bound is on the
        // parsing thread's CPU time, not the wall clock: the other property
        // tests run in parallel on the same cores.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let r = config::parse(Path::new(CONFIG_PATH), &text);
                let r = r.map(|c| c.masters().len()).map_err(|e| e.to_string());
                (r, thread_cpu_time())
            })
            .expect("spawn");
        let (result, took) = handle
            .join()
            .unwrap_or_else(|_| panic!("{name}: parse panicked"));
        eprintln!(
            "{name}: {took:?}: {:?}",
            result.as_ref().map_err(|e| &e[..e.len().min(160)])
        );
        assert!(
            took < Duration::from_secs(20),
            "{name}: took {took:?} of CPU"
        );
        if let Err(e) = &result {
            assert!(e.starts_with(CONFIG_PATH), "{name}: {e:?}");
        }
    }
}

/// A config error is one log line of bounded size: a value quoted in it is
/// truncated and escaped (as `zmtp` does for peer text), so a pasted blob or
/// a quoted newline cannot flood or forge log lines.
#[test]
fn config_errors_quote_values_bounded_and_escaped() {
    let mut bad = Vec::new();
    for (name, text) in [
        ("8 MiB host", format!("master: {}\n", "x".repeat(8 << 20))),
        (
            "8 MiB duration",
            format!(
                "master: a\nsidecar:\n  connect_timeout: \"{}\"\n",
                "9".repeat(8 << 20)
            ),
        ),
        (
            "newline in a host",
            "master: \"bad\\nWARN forged log line\"\n".to_string(),
        ),
        (
            "newline in master_type",
            "master: a\nmaster_type: \"x\\ny\"\n".to_string(),
        ),
        (
            "newline in probe",
            "master: a\nsidecar:\n  probe: \"x\\ny\"\n".to_string(),
        ),
    ] {
        let e = config::parse(Path::new(CONFIG_PATH), &text)
            .expect_err(name)
            .to_string();
        if e.contains('\n') {
            bad.push(format!("{name}: not one line: {e:?}"));
        }
        if e.len() >= 1024 {
            bad.push(format!(
                "{name}: error of {} bytes: {:?}...",
                e.len(),
                &e[..120]
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// === ZMTP codec ===

fn socket_type() -> impl Strategy<Value = SocketType> {
    prop::sample::select(SocketType::ALL.to_vec())
}

/// A valid greeting from a NULL-mechanism ZMTP 3 peer.
fn greeting_bytes(as_server: bool) -> Vec<u8> {
    zmtp::greeting_null(as_server).to_vec()
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn zmtp_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        let _ = zmtp::check_signature(&bytes);
        let _ = zmtp::decode_greeting(&bytes);
        let _ = zmtp::parse_greeting(&bytes);
        let _ = zmtp::ready_socket_type(&bytes);
        let _ = zmtp::error_reason(&bytes);
        if let Ok(Some((frame, used))) = zmtp::decode_frame(&bytes, max) {
            prop_assert!(used <= bytes.len() && used >= 2);
            let body_len = match frame {
                Frame::Command { name, data } => 1 + name.len() + data.len(),
                Frame::Message { body, .. } => body.len(),
            };
            prop_assert!(body_len <= max, "frame body {} above max {}", body_len, max);
            let _ = zmtp::peer_socket_type(&frame);
            for t in SocketType::ALL {
                let _ = zmtp::expect_socket_type(&frame, t);
            }
        }
    }

    /// Feeding a frame byte by byte: every proper prefix asks for more, or
    /// fails with the same error as the whole; the whole decodes to what a
    /// one-shot decode gives.
    #[test]
    fn zmtp_frame_decoding_is_incremental(bytes in prop::collection::vec(any::<u8>(), 0..120), max in 0usize..100) {
        let whole = zmtp::decode_frame(&bytes, max);
        match &whole {
            Ok(Some((frame, used))) => {
                for k in 0..*used {
                    prop_assert_eq!(zmtp::decode_frame(&bytes[..k], max), Ok(None), "prefix {} of a good frame", k);
                }
                prop_assert_eq!(zmtp::decode_frame(&bytes[..*used], max), Ok(Some((*frame, *used))));
            }
            Ok(None) => {
                for k in 0..bytes.len() {
                    prop_assert_eq!(zmtp::decode_frame(&bytes[..k], max), Ok(None));
                }
            }
            Err(e) => {
                // Once an error shows, more bytes never make it valid.
                let first_bad = (0..=bytes.len()).find(|k| zmtp::decode_frame(&bytes[..*k], max).is_err());
                let k = first_bad.expect("the whole fails, so some prefix does");
                for j in k..=bytes.len() {
                    prop_assert_eq!(&zmtp::decode_frame(&bytes[..j], max), &Err(e.clone()));
                }
            }
        }
    }

    /// A declared size above the bound is refused as soon as the size field
    /// is complete, before any body byte: a peer cannot make us buffer it.
    #[test]
    fn zmtp_oversized_frames_are_refused_from_the_header(size in 65u64..u64::MAX, command in any::<bool>()) {
        let mut buf = vec![0x02 | if command { 0x04 } else { 0 }];
        buf.extend_from_slice(&size.to_be_bytes());
        prop_assert_eq!(zmtp::decode_frame(&buf, 64), Err(zmtp::ZmtpError::FrameTooLarge(size)));
    }

    #[test]
    fn zmtp_messages_round_trip(parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 1..5)) {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let wire = zmtp::encode_message(&refs);
        let mut at = 0;
        for (i, part) in parts.iter().enumerate() {
            let (frame, used) = zmtp::decode_frame(&wire[at..], 1 << 20).expect("valid").expect("complete");
            prop_assert_eq!(frame, Frame::Message { more: i + 1 < parts.len(), body: part.as_slice() });
            at += used;
        }
        prop_assert_eq!(at, wire.len());
    }

    #[test]
    fn zmtp_ready_round_trips_for_every_socket_type(t in socket_type(), other in socket_type()) {
        let wire = zmtp::encode_ready(t);
        let (frame, used) = zmtp::decode_frame(&wire, 1024).expect("valid").expect("complete");
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(zmtp::peer_socket_type(&frame), Ok(t));
        prop_assert_eq!(zmtp::expect_socket_type(&frame, other).is_ok(), t == other);
    }

    /// Greeting decoding: every prefix of a valid greeting asks for more; a
    /// garbled byte in the signature or version is refused as soon as it
    /// arrives.
    #[test]
    fn zmtp_greeting_is_decoded_incrementally(as_server in any::<bool>(), at in 0usize..12, byte in any::<u8>()) {
        let good = greeting_bytes(as_server);
        for k in 0..zmtp::GREETING_LEN {
            prop_assert_eq!(zmtp::decode_greeting(&good[..k]), Ok(None));
        }
        let g = zmtp::parse_greeting(&good).expect("our own greeting");
        prop_assert_eq!(g.as_server, as_server);
        prop_assert!(g.require_null().is_ok());
        let mut bad = good.clone();
        bad[at] = byte;
        let breaks = match at {
            0 => byte != 0xff,
            9 => byte != 0x7f,
            10 => byte < 3,
            _ => false,
        };
        if breaks {
            prop_assert!(zmtp::decode_greeting(&bad[..=at]).is_err(), "refused at byte {}", at);
            prop_assert!(zmtp::parse_greeting(&bad).is_err());
        } else {
            prop_assert!(zmtp::parse_greeting(&bad).is_ok());
        }
    }
}

// === the probe against hostile servers ===

/// Runs `f` on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// What a hostile "master" does after accepting the probe.
#[derive(Clone, Debug)]
enum Script {
    /// Sends these bytes, then keeps the connection open and silent.
    SendThenStall(Vec<u8>),
    /// Sends these bytes one at a time, 10 ms apart, then repeats them forever.
    Trickle(Vec<u8>),
    /// A valid greeting, then a frame header declaring `len` bytes, then a
    /// slow drip of body bytes (never completes within the timeout).
    EndlessFrame(u64),
    /// Sends these bytes and closes.
    SendThenClose(Vec<u8>),
}

fn script() -> impl Strategy<Value = Script> {
    let bytes = prop::collection::vec(any::<u8>(), 0..300);
    let greeting_then = prop::collection::vec(any::<u8>(), 0..100).prop_map(|tail| {
        let mut v = greeting_bytes(true);
        v.extend(tail);
        v
    });
    prop_oneof![
        bytes.clone().prop_map(Script::SendThenStall),
        greeting_then.clone().prop_map(Script::SendThenStall),
        prop::collection::vec(any::<u8>(), 1..20).prop_map(Script::Trickle),
        (0u64..u64::MAX).prop_map(Script::EndlessFrame),
        bytes.prop_map(Script::SendThenClose),
        greeting_then.prop_map(Script::SendThenClose),
    ]
}

async fn hostile_server(script: Script) -> std::io::Result<(u16, tokio::task::JoinHandle<()>)> {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.95.2:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = match script {
            Script::SendThenStall(b) => {
                let _ = s.write_all(&b).await;
                std::future::pending::<()>().await;
                Ok(())
            }
            Script::Trickle(b) => loop {
                for byte in &b {
                    if s.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Script::EndlessFrame(len) => {
                let mut head = greeting_bytes(true);
                head.push(0x02);
                head.extend_from_slice(&len.to_be_bytes());
                let _ = s.write_all(&head).await;
                loop {
                    if s.write_all(&[0u8; 7]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Script::SendThenClose(b) => s.write_all(&b).await,
        };
    });
    Ok((port, task))
}

/// Whether `sent` is a full PUB handshake the probe should accept.
fn is_valid_pub_handshake(sent: &[u8]) -> bool {
    let Ok(g) = zmtp::parse_greeting(sent) else {
        return false;
    };
    if g.require_null().is_err() {
        return false;
    }
    matches!(
        zmtp::decode_frame(&sent[zmtp::GREETING_LEN..], 64 * 1024),
        Ok(Some((frame, _))) if zmtp::expect_socket_type(&frame, SocketType::Pub).is_ok()
    )
}

proptest! {
    #![proptest_config(cases(48))]

    /// Whatever a "master" sends, the probe returns within its timeout (plus
    /// scheduling slack), and succeeds only for a real PUB handshake.
    #[test]
    fn probe_never_hangs_past_its_timeout(script in script()) {
        let limit = Duration::from_millis(150);
        let (elapsed, result) = block_on(async {
            let (port, server) = hostile_server(script.clone()).await.expect("bind 127.0.95.2");
            let ip: IpAddr = "127.0.95.2".parse().expect("ip");
            let started = std::time::Instant::now();
            let result = probe::probe(ProbeKind::Zmtp, &[ip], port, Port::Publish, limit).await;
            let elapsed = started.elapsed();
            server.abort();
            (elapsed, result)
        });
        prop_assert!(elapsed < limit + Duration::from_millis(250), "probe took {:?} against {:?}", elapsed, script);
        let valid = match &script {
            Script::SendThenStall(b) | Script::SendThenClose(b) => is_valid_pub_handshake(b),
            _ => false,
        };
        if result.is_ok() {
            prop_assert!(valid, "probe accepted {:?}", script);
        }
    }
}

/// The probe's happy path still works against a well-behaved peer (so the
/// property above is not vacuously "always fails").
#[test]
fn probe_accepts_a_real_pub_handshake() {
    block_on(async {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.95.3:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut wire = greeting_bytes(true);
            wire.extend(zmtp::encode_ready(SocketType::Pub));
            s.write_all(&wire).await.expect("write");
            std::future::pending::<()>().await;
        });
        let ip: IpAddr = "127.0.95.3".parse().expect("ip");
        probe::probe(
            ProbeKind::Zmtp,
            &[ip],
            port,
            Port::Publish,
            Duration::from_secs(2),
        )
        .await
        .expect("a real PUB handshake passes");
    });
}

// === rise/fall hysteresis ===

proptest! {
    #![proptest_config(cases(256))]

    /// The first observation decides; afterwards a flip needs exactly `rise`
    /// consecutive successes (or `fall` failures) against the current state.
    #[test]
    fn hysteresis_flips_exactly_per_rise_and_fall(rise in 1u32..5, fall in 1u32..5, results in prop::collection::vec(any::<bool>(), 1..80)) {
        let mut h = Hysteresis::new(rise, fall);
        let mut state: Option<bool> = None;
        let mut streak = 0u32;
        for ok in results {
            let expected = match state {
                None => { state = Some(ok); streak = 0; Some(ok) }
                Some(s) if s == ok => { streak = 0; None }
                Some(_) => {
                    streak += 1;
                    if streak >= if ok { rise } else { fall } { state = Some(ok); streak = 0; Some(ok) } else { None }
                }
            };
            prop_assert_eq!(h.observe(ok), expected);
            prop_assert_eq!(h.is_up(), state);
        }
    }
}

// === selection state machine ===

/// One step of a random scenario.
#[derive(Clone, Debug)]
enum Step {
    Up(u16),
    Down(u16),
    Pin(u16),
    Unpin,
    Drain(u16),
    Undrain(u16),
    Tick,
    /// Advance exactly to `next_deadline()` and tick (what the supervisor does).
    TickAtDeadline,
}

fn step(n: u16) -> impl Strategy<Value = Step> {
    // Ids up to n (inclusive) so an unknown id shows up now and then.
    let id = 0..=n;
    prop_oneof![
        6 => id.clone().prop_map(Step::Up),
        6 => id.clone().prop_map(Step::Down),
        1 => id.clone().prop_map(Step::Pin),
        1 => Just(Step::Unpin),
        1 => id.clone().prop_map(Step::Drain),
        1 => id.prop_map(Step::Undrain),
        2 => Just(Step::Tick),
        3 => Just(Step::TickAtDeadline),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        any::<bool>(),
        0u64..60_000,
        0u64..10_000,
        50u64..2_000,
        0u64..30_000,
        0u64..5_000,
    )
        .prop_map(|(failback, fi, reauth, base, cap_extra, grace)| Policy {
            failback,
            failback_interval: Duration::from_millis(fi),
            reauth_delay: Duration::from_millis(reauth),
            recycle_base: Duration::from_millis(base),
            recycle_cap: Duration::from_millis(base + cap_extra),
            startup_grace: Duration::from_millis(grace),
        })
}

/// A scenario: masters, preference order, policy, seed, steps with the time
/// that passes before each.
fn scenario() -> impl Strategy<Value = (u16, Vec<MasterId>, Policy, u64, Vec<(u64, Step)>)> {
    (1u16..=4).prop_flat_map(|n| {
        let order = Just((0..n).map(MasterId).collect::<Vec<_>>()).prop_shuffle();
        let dt = prop_oneof![3 => 0u64..2_000, 2 => 0u64..40_000, 1 => Just(0u64)];
        (
            Just(n),
            order,
            policy(),
            any::<u64>(),
            prop::collection::vec((dt, step(n)), 1..120),
        )
    })
}

/// What the test knows independently of the selector.
struct Model {
    n: u16,
    order: Vec<MasterId>,
    policy: Policy,
    t0: Instant,
    health: Vec<Health>,
    drained: Vec<bool>,
    pinned: Option<MasterId>,
    active: Option<MasterId>,
}

impl Model {
    fn valid(&self, m: u16) -> bool {
        m < self.n
    }

    fn usable(&self, m: MasterId) -> bool {
        matches!(self.health[m.index()], Health::Up { .. }) && !self.drained[m.index()]
    }

    fn rank(&self, m: MasterId) -> usize {
        self.order.iter().position(|x| *x == m).expect("in order")
    }

    /// At start-up the selector may wait while a better master has not reported.
    fn may_wait_for_startup(&self, now: Instant) -> bool {
        if now >= self.t0 + self.policy.startup_grace {
            return false;
        }
        for m in &self.order {
            if self.drained[m.index()] {
                continue;
            }
            match self.health[m.index()] {
                Health::Up { .. } => return false,
                Health::Unknown => return true,
                Health::Down => {}
            }
        }
        false
    }
}

/// Every invariant, after every event.
fn check_invariants(
    sel: &Selector,
    model: &Model,
    before: Option<MasterId>,
    actions: &[Action],
    now: Instant,
) -> Result<(), TestCaseError> {
    let p = model.policy;
    // The selector's view of health, drain and pin is what it was told.
    for m in (0..model.n).map(MasterId) {
        prop_assert_eq!(sel.health(m), model.health[m.index()], "health of {}", m);
        prop_assert_eq!(
            sel.is_drained(m),
            model.drained[m.index()],
            "drain of {}",
            m
        );
    }
    prop_assert_eq!(sel.pinned(), model.pinned);
    let active = sel.active();

    // Switch actions chain from the previous active master to the current one.
    let mut cur = before;
    for a in actions {
        match *a {
            Action::Switch {
                from,
                to,
                reason,
                old_sessions,
                connect_after,
            } => {
                prop_assert_eq!(from, cur, "switch from a master that was not active");
                prop_assert!(from != to, "a switch to the same master");
                prop_assert_eq!(old_sessions.is_some(), from.is_some());
                if reason == Reason::Initial {
                    prop_assert!(from.is_none());
                    prop_assert_eq!(
                        connect_after,
                        now,
                        "the first choice has no reconnect delay"
                    );
                }
                if to.is_some() && reason != Reason::Initial {
                    prop_assert!(
                        connect_after >= now && connect_after <= now + p.reauth_delay,
                        "reconnect delay outside [0, random_reauth_delay]"
                    );
                }
                match reason {
                    // Failback only after the interval, to a better master, gracefully.
                    Reason::Failback => {
                        let (f, t) = (
                            from.expect("failback from a master"),
                            to.expect("failback to a master"),
                        );
                        prop_assert!(p.failback, "failback while master_failback is false");
                        prop_assert!(model.pinned.is_none(), "failback while pinned");
                        prop_assert!(model.rank(t) < model.rank(f), "failback to a worse master");
                        match model.health[t.index()] {
                            Health::Up { since } => prop_assert!(
                                now >= since + p.failback_interval,
                                "failback to {} after {:?} up, interval {:?}",
                                t,
                                now - since,
                                p.failback_interval
                            ),
                            h => prop_assert!(false, "failback to a master that is {:?}", h),
                        }
                        prop_assert_eq!(old_sessions, Some(SessionFate::Drain));
                    }
                    // Failover: away from a master that is down (reset) or to none.
                    Reason::Failover => {
                        if let Some(f) = from {
                            prop_assert!(
                                !matches!(model.health[f.index()], Health::Up { .. }),
                                "failover away from {} which is up",
                                f
                            );
                            prop_assert_eq!(old_sessions, Some(SessionFate::Reset));
                        }
                    }
                    Reason::Admin | Reason::Initial => {}
                    Reason::Reload => prop_assert!(false, "reload reason without a reload"),
                }
                cur = to;
            }
            Action::ProbeAll => {}
        }
    }
    prop_assert_eq!(cur, active, "actions do not end at the active master");
    if actions.contains(&Action::ProbeAll) {
        prop_assert!(active.is_none(), "recycle probes while a master is active");
    }

    match model.pinned {
        // Pinned: the pinned master whatever its health; no fallbacks.
        Some(pin) => {
            prop_assert_eq!(active, Some(pin));
            prop_assert!(sel.fallbacks().is_empty());
        }
        None => {
            // Never a master that is down or drained.
            if let Some(a) = active {
                prop_assert!(
                    model.usable(a),
                    "active {} is {:?}, drained {}",
                    a,
                    model.health[a.index()],
                    model.drained[a.index()]
                );
            }
            // Exactly one active master when any is up (start-up grace aside).
            let any_usable = (0..model.n).map(MasterId).any(|m| model.usable(m));
            if any_usable && !model.may_wait_for_startup(now) {
                prop_assert!(active.is_some(), "a master is up but none is active");
            }
            if !any_usable {
                prop_assert!(active.is_none());
            }
            // Fallbacks: usable, not the active one, in preference order.
            let fb = sel.fallbacks();
            for m in &fb {
                prop_assert!(Some(*m) != active && model.usable(*m));
            }
            let ranks: Vec<usize> = fb.iter().map(|m| model.rank(*m)).collect();
            prop_assert!(
                ranks.windows(2).all(|w| w[0] < w[1]),
                "fallbacks out of order"
            );
            prop_assert_eq!(
                fb.len(),
                (0..model.n)
                    .map(MasterId)
                    .filter(|m| Some(*m) != active && model.usable(*m))
                    .count()
            );
            // A due failback has happened; a pending one has a deadline.
            if let (Some(a), true) = (active, p.failback) {
                for m in model.order.iter().take(model.rank(a)) {
                    if let (Health::Up { since }, false) =
                        (model.health[m.index()], model.drained[m.index()])
                    {
                        let due = since + p.failback_interval;
                        prop_assert!(
                            now < due,
                            "failback to {} was due at +{:?}, now +{:?}, still on {}",
                            m,
                            due - model.t0,
                            now - model.t0,
                            a
                        );
                        prop_assert!(
                            sel.next_deadline().is_some_and(|d| d <= due),
                            "no wake-up for the failback due at +{:?}",
                            due - model.t0
                        );
                    }
                }
            }
            // All down after start-up: the recycle timer runs.
            if active.is_none() && now >= model.t0 + p.startup_grace {
                prop_assert!(
                    sel.next_deadline().is_some(),
                    "all down and no recycle deadline"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn selection_keeps_its_invariants((n, order, policy, seed, steps) in scenario()) {
        let t0 = Instant::now();
        let mut sel = Selector::new(order.clone(), policy, seed, t0);
        let mut model = Model {
            n,
            order,
            policy,
            t0,
            health: vec![Health::Unknown; n as usize],
            drained: vec![false; n as usize],
            pinned: None,
            active: None,
        };
        let mut now = t0;
        for (dt, st) in steps {
            now += Duration::from_millis(dt);
            let event = match st {
                Step::Up(m) => Event::Up(MasterId(m)),
                Step::Down(m) => Event::Down(MasterId(m)),
                Step::Pin(m) => Event::Pin(MasterId(m)),
                Step::Unpin => Event::Unpin,
                Step::Drain(m) => Event::Drain(MasterId(m)),
                Step::Undrain(m) => Event::Undrain(MasterId(m)),
                Step::Tick => Event::Tick,
                Step::TickAtDeadline => {
                    if let Some(d) = sel.next_deadline() {
                        now = now.max(d);
                    }
                    Event::Tick
                }
            };
            // The model applies the event as documented.
            match event {
                Event::Up(m)
                    if model.valid(m.0)
                        && !matches!(model.health[m.index()], Health::Up { .. }) =>
                {
                    model.health[m.index()] = Health::Up { since: now };
                }
                Event::Down(m) if model.valid(m.0) => model.health[m.index()] = Health::Down,
                Event::Pin(m) if model.valid(m.0) => model.pinned = Some(m),
                Event::Unpin => model.pinned = None,
                Event::Drain(m) if model.valid(m.0) => model.drained[m.index()] = true,
                Event::Undrain(m) if model.valid(m.0) => model.drained[m.index()] = false,
                _ => {}
            }
            let before = model.active;
            let actions = sel.on_event(event, now);
            check_invariants(&sel, &model, before, &actions, now)
                .map_err(|e| TestCaseError::fail(format!("after {event:?} at +{:?}: {e}", now - t0)))?;
            model.active = sel.active();
        }
    }
}

/// CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // is always supported on Linux for the calling thread.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
