//! The session policy against real loopback sockets: half-close, reset,
//! drain, moves at boundaries, graceful switches.

use super::buffer::CHUNK;
use super::*;
use crate::control::evidence::Evidence;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The sessions' half-close bound: short, so the tests that wait for it are.
const HALF_CLOSE: Duration = Duration::from_millis(800);

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}

struct Session {
    /// The minion's end and the master's end of the proxied session.
    minion: TcpStream,
    master: TcpStream,
    tokens: SessionTokens,
    shutdown: CancellationToken,
    up: IntCounter,
    down: IntCounter,
    end: tokio::task::JoinHandle<End>,
}

fn counter() -> IntCounter {
    IntCounter::new("bytes", "test").expect("counter")
}

async fn session(port: Port) -> Session {
    let (minion, mut proxy_minion) = pair().await;
    let (mut proxy_master, master) = pair().await;
    let shutdown = CancellationToken::new();
    let tokens = SessionTokens {
        drain: shutdown.child_token(),
        ..SessionTokens::default()
    };
    let (up, down) = (counter(), counter());
    let end = tokio::spawn({
        let (tokens, shutdown, up, down) =
            (tokens.clone(), shutdown.clone(), up.clone(), down.clone());
        async move {
            let ctl = Control {
                port,
                tokens: &tokens,
                answers: None,
                shutdown: &shutdown,
                drain_timeout: Duration::from_secs(10),
                half_close_timeout: HALF_CLOSE,
                to_master: &up,
                to_minion: &down,
                newcomer: None,
                evidence: None,
            };
            run(&mut proxy_minion, &mut proxy_master, ctl, None).await
        }
    });
    Session {
        minion,
        master,
        tokens,
        shutdown,
        up,
        down,
        end,
    }
}

#[tokio::test]
async fn bytes_pass_both_ways_with_half_close_and_are_counted() {
    let mut s = session(Port::Ret).await;
    // More than one buffer's worth, to cross chunk boundaries.
    let big: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
    s.minion.write_all(&big).await.expect("write");
    s.minion.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    s.master.read_to_end(&mut got).await.expect("read to EOF");
    assert!(got == big, "minion → master byte-exact, then EOF");
    // The other direction still works after the minion's half-close.
    s.master.write_all(b"reply").await.expect("reply");
    s.master.shutdown().await.expect("master half-close");
    let mut reply = Vec::new();
    s.minion
        .read_to_end(&mut reply)
        .await
        .expect("reply to EOF");
    assert_eq!(reply, b"reply");
    assert!(matches!(s.end.await.expect("join"), End::Closed));
    assert_eq!(s.up.get(), big.len() as u64);
    assert_eq!(s.down.get(), 5);
}

/// A master that never reads never sees the minion's FIN and never closes
/// its half: the session ends `half_close_timeout` after the last bytes,
/// and the master's side is closed too (its slot is free).
#[tokio::test]
async fn a_peer_that_never_closes_after_a_fin_is_closed_after_the_bound() {
    let mut s = session(Port::Ret).await;
    s.minion.write_all(b"request").await.expect("write");
    s.minion.shutdown().await.expect("half-close");
    let fin = std::time::Instant::now();
    // The master reads nothing and closes nothing.
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("the session ends by itself")
        .expect("join");
    let took = fin.elapsed();
    assert!(matches!(end, End::HalfOpen), "{end:?}");
    assert!(
        took >= HALF_CLOSE - Duration::from_millis(100) && took < HALF_CLOSE * 3,
        "ended {took:?} after the FIN (bound {HALF_CLOSE:?})"
    );
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.master.read_to_end(&mut got))
        .await
        .expect("the master's side is closed");
    assert!(read.is_ok() || got.is_empty(), "{read:?}");
    assert!(got.starts_with(b"request"));
}

/// The bound counts from the last bytes: a master still answering after the
/// minion's FIN is not cut, however long the whole answer takes.
#[tokio::test]
async fn a_half_closed_session_still_moving_is_not_cut() {
    let mut s = session(Port::Ret).await;
    s.minion.shutdown().await.expect("half-close");
    for i in 0..6u8 {
        tokio::time::sleep(HALF_CLOSE / 3).await;
        s.master
            .write_all(&[i])
            .await
            .expect("the session is still open");
    }
    let mut got = [0u8; 6];
    s.minion.read_exact(&mut got).await.expect("all six bytes");
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    s.master.shutdown().await.expect("master half-close");
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("ends")
        .expect("join");
    assert!(matches!(end, End::Closed), "{end:?}");
}

#[tokio::test]
async fn reset_ends_an_idle_session_at_once() {
    let s = session(Port::Publish).await;
    s.tokens.reset.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("ends")
        .expect("join");
    assert!(matches!(end, End::Reset));
}

#[tokio::test]
async fn drain_waits_for_the_answer_then_ends_when_quiet() {
    let mut s = session(Port::Ret).await;
    s.minion.write_all(b"request").await.expect("request");
    let mut req = [0u8; 7];
    s.master
        .read_exact(&mut req)
        .await
        .expect("request through");
    s.shutdown.cancel();
    // Unanswered request: not idle, however quiet.
    tokio::time::sleep(IDLE_QUIET * 2).await;
    assert!(!s.end.is_finished(), "drained before the answer");
    s.master.write_all(b"answer").await.expect("answer");
    let mut ans = [0u8; 6];
    s.minion.read_exact(&mut ans).await.expect("answer through");
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("ends")
        .expect("join");
    assert!(matches!(end, End::Drained));
}

#[tokio::test]
async fn drain_keeps_a_publish_session_that_just_carried_a_job() {
    // A job published just before a failback: the minion must get to run it
    // and send its return before its publish session closes (a Salt minion
    // drops the returns it forwards while it reconnects after that close).
    let mut s = session(Port::Publish).await;
    s.master.write_all(b"job").await.expect("publish");
    let mut job = [0u8; 3];
    s.minion.read_exact(&mut job).await.expect("job through");
    let asked = Instant::now();
    s.tokens.drain.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!s.end.is_finished(), "closed 1 s after a job was published");
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("ends")
        .expect("join");
    assert!(matches!(end, End::Drained), "{end:?}");
    assert!(asked.elapsed() >= IDLE_QUIET - Duration::from_millis(200));
}

#[tokio::test]
async fn a_side_that_fails_is_named() {
    let s = session(Port::Ret).await;
    socket2::SockRef::from(&s.master)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(s.master); // RST towards the sidecar's master side
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("ends")
        .expect("join");
    assert!(matches!(end, End::MasterError(_)), "{end:?}");
}

#[tokio::test]
async fn a_master_reset_after_the_minion_left_is_a_close_not_a_cut() {
    let mut s = session(Port::Ret).await;
    s.minion.shutdown().await.expect("the minion leaves");
    let mut rest = Vec::new();
    s.master
        .read_to_end(&mut rest)
        .await
        .expect("EOF reaches the master");
    socket2::SockRef::from(&s.master)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(s.master); // and it answers with RST
    let end = tokio::time::timeout(Duration::from_secs(5), s.end)
        .await
        .expect("ends")
        .expect("join");
    assert!(matches!(end, End::Closed), "{end:?}");
}

/// A followed (ZeroMQ) session whose handshakes have passed through.
struct Followed {
    minion: TcpStream,
    master: TcpStream,
    tokens: SessionTokens,
    /// The session's end, and the sidecar's minion-side socket (kept
    /// open, as `forward` keeps it for a move).
    end: tokio::task::JoinHandle<(End, TcpStream)>,
}

async fn followed(port: Port) -> Followed {
    followed_with(port, SessionTokens::default()).await
}

/// A followed session watching `tokens` (clones share one switch's gate).
async fn followed_with(port: Port, tokens: SessionTokens) -> Followed {
    followed_draining_in(port, tokens, Duration::from_secs(10)).await
}

/// [`followed_with`] with its drain timeout.
async fn followed_draining_in(
    port: Port,
    tokens: SessionTokens,
    drain_timeout: Duration,
) -> Followed {
    followed_full(port, tokens, drain_timeout, None, 0).await
}

/// A followed session whose peers announce ZMTP 3.`minor`, stamping
/// `evidence` (the master's, as `forward` passes it).
async fn followed_full(
    port: Port,
    tokens: SessionTokens,
    drain_timeout: Duration,
    evidence: Option<std::sync::Arc<Evidence>>,
    minor: u8,
) -> Followed {
    use crate::zmtp::{encode_ready, greeting_null, SocketType};
    let greeting = || {
        let mut g = greeting_null(false);
        g[11] = minor;
        g.to_vec()
    };
    let (mut minion, mut proxy_minion) = pair().await;
    let (mut proxy_master, mut master) = pair().await;
    let end = tokio::spawn({
        let tokens = tokens.clone();
        async move {
            let (shutdown, up, down) = (CancellationToken::new(), counter(), counter());
            let mut tracks = Tracks::default();
            let ctl = Control {
                port,
                tokens: &tokens,
                answers: None,
                shutdown: &shutdown,
                drain_timeout,
                half_close_timeout: HALF_CLOSE,
                to_master: &up,
                to_minion: &down,
                newcomer: None,
                evidence: evidence.as_deref(),
            };
            let end = run(&mut proxy_minion, &mut proxy_master, ctl, Some(&mut tracks)).await;
            (end, proxy_minion)
        }
    });
    let mine = [greeting(), encode_ready(SocketType::of_minion(port))].concat();
    let theirs = [greeting(), encode_ready(SocketType::of_master(port))].concat();
    minion.write_all(&mine).await.expect("minion handshake");
    master.write_all(&theirs).await.expect("master handshake");
    let mut got = vec![0u8; mine.len()];
    master
        .read_exact(&mut got)
        .await
        .expect("minion's handshake through");
    let mut got = vec![0u8; theirs.len()];
    minion
        .read_exact(&mut got)
        .await
        .expect("master's handshake through");
    Followed {
        minion,
        master,
        tokens,
        end,
    }
}

async fn ended(end: tokio::task::JoinHandle<(End, TcpStream)>) -> (End, TcpStream) {
    tokio::time::timeout(Duration::from_secs(5), end)
        .await
        .expect("ends")
        .expect("join")
}

/// The minion sends a DEALER request with `payload`; returns it as the
/// master read it (whole, through the session).
async fn ask(s: &mut Followed, payload: &[u8]) -> Vec<u8> {
    let request = crate::zmtp::encode_message(&[b"", payload]);
    s.minion.write_all(&request).await.expect("request");
    let mut got = vec![0u8; request.len()];
    s.master
        .read_exact(&mut got)
        .await
        .expect("request through");
    assert_eq!(got, request);
    got
}

/// One exchange each way, so both streams are past a whole message.
async fn exchange(s: &mut Followed) {
    let request = ask(s, b"ping 1").await;
    let mut got = vec![0u8; request.len()];
    s.master.write_all(&request).await.expect("reply");
    s.minion.read_exact(&mut got).await.expect("reply through");
}

#[tokio::test]
async fn a_followed_session_moves_when_its_master_closes_between_messages() {
    let mut s = followed(Port::Ret).await;
    exchange(&mut s).await;
    drop(s.master);
    let (end, _kept) = ended(s.end).await;
    assert!(
        matches!(&end, End::Move { cause: Cause::Lost, carry } if carry.bytes().is_empty()),
        "{end:?}"
    );
    // The minion saw nothing: no EOF, no reset.
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), s.minion.read(&mut b)).await;
    assert!(
        read.is_err(),
        "the minion's connection was touched: {read:?}"
    );
}

#[tokio::test]
async fn a_master_that_dies_inside_a_message_resets_the_session() {
    let mut s = followed(Port::Publish).await;
    exchange(&mut s).await;
    // A 10-byte frame of which only 3 body bytes arrive.
    s.master
        .write_all(&[0x00, 10, 1, 2, 3])
        .await
        .expect("part");
    let mut part = [0u8; 5];
    s.minion.read_exact(&mut part).await.expect("part through");
    drop(s.master);
    let (end, _kept) = ended(s.end).await;
    assert!(matches!(end, End::MasterError(_)), "{end:?}");
}

#[tokio::test]
async fn a_failover_between_messages_moves_at_once() {
    let mut s = followed(Port::Ret).await;
    exchange(&mut s).await;
    s.tokens.reset.cancel();
    let (end, _kept) = ended(s.end).await;
    assert!(
        matches!(
            end,
            End::Move {
                cause: Cause::Failover,
                ..
            }
        ),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_graceful_switch_waits_for_the_answer_and_quiet_then_moves() {
    let mut s = followed(Port::Ret).await;
    let request = ask(&mut s, b"ping 2").await;
    let mut got = vec![0u8; request.len()];
    s.tokens.drain.cancel();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!s.end.is_finished(), "moved before the answer");
    s.master.write_all(&request).await.expect("answer");
    s.minion.read_exact(&mut got).await.expect("answer through");
    // The minion may still send a return for a job of the old master.
    tokio::time::sleep(IDLE_QUIET / 2).await;
    assert!(!s.end.is_finished(), "moved before {IDLE_QUIET:?} of quiet");
    let (end, _kept) = ended(s.end).await;
    assert_switch_move(&end);
}

#[tokio::test]
async fn the_sessions_of_one_switch_move_together_once_all_are_idle() {
    let tokens = SessionTokens::default();
    let publish = followed_with(Port::Publish, tokens.clone()).await;
    let mut ret = followed_with(Port::Ret, tokens.clone()).await;
    // A request on the ret session is waiting for its answer.
    let request = ask(&mut ret, b"return 7").await;
    let mut got = vec![0u8; request.len()];
    tokens.drain.cancel();
    // The publish session is idle after IDLE_QUIET, but waits for the
    // ret session.
    tokio::time::sleep(IDLE_QUIET + Duration::from_millis(500)).await;
    assert!(
        !publish.end.is_finished(),
        "publish moved while ret was busy"
    );
    assert!(!ret.end.is_finished(), "ret moved before its answer");
    ret.master.write_all(&request).await.expect("answer");
    ret.minion
        .read_exact(&mut got)
        .await
        .expect("answer through");
    let answered = Instant::now();
    let (p_end, _) = ended(publish.end).await;
    let (r_end, _) = ended(ret.end).await;
    for end in [&p_end, &r_end] {
        assert_switch_move(end);
    }
    let took = answered.elapsed();
    assert!(
        took >= IDLE_QUIET - Duration::from_millis(200)
            && took < IDLE_QUIET + Duration::from_secs(2),
        "both moved {took:?} after the answer"
    );
}

#[tokio::test]
async fn heartbeats_do_not_keep_a_session_from_moving() {
    // ZMTP 3.1 PING (TTL 1 s) and PONG: command frames.
    const PING: [u8; 9] = [0x04, 0x07, 0x04, b'P', b'I', b'N', b'G', 0x00, 0x0a];
    const PONG: [u8; 7] = [0x04, 0x05, 0x04, b'P', b'O', b'N', b'G'];
    let mut s = followed(Port::Ret).await;
    s.tokens.drain.cancel();
    let drained = Instant::now();
    // The master pings, the minion pongs (its bytes last, as a request
    // would be), every 500 ms: data never moves, so the session is
    // idle after IDLE_QUIET and moves.
    let end = loop {
        // The session may move in the middle of a round: its bytes then
        // stop (the reads are bounded), and its end says why.
        let round = tokio::time::timeout(Duration::from_secs(2), async {
            s.master.write_all(&PING).await?;
            let mut got = [0u8; PING.len()];
            s.minion.read_exact(&mut got).await?;
            s.minion.write_all(&PONG).await?;
            let mut got = [0u8; PONG.len()];
            s.master.read_exact(&mut got).await?;
            std::io::Result::Ok(())
        })
        .await;
        if !matches!(round, Ok(Ok(()))) {
            break ended(s.end).await.0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if s.end.is_finished() {
            break ended(s.end).await.0;
        }
        assert!(
            drained.elapsed() < IDLE_QUIET + Duration::from_secs(3),
            "heartbeats kept the session from moving"
        );
    };
    assert_switch_move(&end);
}

/// `end` moves the session for a graceful switch.
fn assert_switch_move(end: &End) {
    assert!(
        matches!(
            end,
            End::Move {
                cause: Cause::Switch,
                ..
            }
        ),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_session_never_idle_moves_after_the_drain_timeout_once_answered() {
    let drain = Duration::from_secs(1);
    let mut s = followed_draining_in(Port::Ret, SessionTokens::default(), drain).await;
    s.tokens.drain.cancel();
    let drained = Instant::now();
    // A request every 200 ms, each answered after 50 ms: never quiet.
    let mut asked = 0u32;
    let end = loop {
        if s.end.is_finished() {
            break ended(s.end).await.0;
        }
        let mut got = ask(&mut s, format!("r{asked}").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.master.write_all(&got).await.expect("answer");
        tokio::time::timeout(Duration::from_secs(2), s.minion.read_exact(&mut got))
            .await
            .expect("answer through: none cut")
            .expect("answer read");
        asked += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(drained.elapsed() < drain + LAST_CALL, "never moved");
    };
    assert_switch_move(&end);
    let took = drained.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_secs(1),
        "moved {took:?} after the drain (timeout {drain:?}), {asked} requests all answered"
    );
}

/// A followed ZMTP 3.1 session stamping a fresh evidence.
async fn watched(port: Port, minor: u8) -> (Followed, std::sync::Arc<Evidence>) {
    let ev = std::sync::Arc::new(Evidence::default());
    let s = followed_full(
        port,
        SessionTokens::default(),
        Duration::from_secs(10),
        Some(ev.clone()),
        minor,
    )
    .await;
    // The session registers when its copy starts.
    while ev.sessions() == 0 {
        tokio::task::yield_now().await;
    }
    (s, ev)
}

const PONG: [u8; 7] = [0x04, 0x05, 0x04, b'P', b'O', b'N', b'G'];

#[tokio::test]
async fn a_quiet_zmtp_3_1_session_carries_a_ping_and_the_pong_reaches_the_minion() {
    use crate::control::evidence::{PingOutcome, PING};
    let (mut s, ev) = watched(Port::Ret, 1).await;
    exchange(&mut s).await;
    let asking = tokio::spawn({
        let ev = ev.clone();
        async move {
            ev.ping(Duration::from_secs(2), Duration::from_millis(200))
                .await
        }
    });
    let mut got = [0u8; PING.len()];
    tokio::time::timeout(Duration::from_secs(2), s.master.read_exact(&mut got))
        .await
        .expect("the PING reaches the master")
        .expect("read");
    assert_eq!(got, PING);
    s.master.write_all(&PONG).await.expect("pong");
    let out = asking.await.expect("join");
    assert_eq!(out, PingOutcome::Answered);
    let mut pong = [0u8; PONG.len()];
    s.minion
        .read_exact(&mut pong)
        .await
        .expect("the PONG passes on");
    assert_eq!(pong, PONG);
    // The session goes on: a request and its answer, then a move.
    exchange(&mut s).await;
    s.tokens.reset.cancel();
    let (end, _kept) = ended(s.end).await;
    assert!(
        matches!(&end, End::Move { cause: Cause::Failover, carry } if carry.bytes().is_empty()),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_silent_master_leaves_the_ping_unanswered() {
    use crate::control::evidence::PingOutcome;
    let (mut s, ev) = watched(Port::Publish, 1).await;
    exchange(&mut s).await;
    let out = ev
        .ping(Duration::from_millis(300), Duration::from_millis(100))
        .await;
    assert_eq!(out, PingOutcome::Unanswered);
    drop(s);
}

#[tokio::test]
async fn a_zmtp_3_0_session_carries_no_ping() {
    use crate::control::evidence::PingOutcome;
    let (mut s, ev) = watched(Port::Ret, 0).await;
    exchange(&mut s).await;
    let out = ev
        .ping(Duration::from_millis(500), Duration::from_millis(50))
        .await;
    assert_eq!(out, PingOutcome::NotSent);
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(100), s.master.read(&mut b)).await;
    assert!(read.is_err(), "the master got bytes: {read:?}");
}

#[tokio::test]
async fn every_read_from_the_master_is_heard() {
    let (mut s, ev) = watched(Port::Publish, 1).await;
    let before = tokio::time::Instant::now();
    exchange(&mut s).await;
    assert!(ev.heard_since(before), "the answer stamped the evidence");
    drop(s);
}
