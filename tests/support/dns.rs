//! A tiny authoritative DNS server for tests (tests/dns.rs, tests/srv.rs):
//! answers on 127.0.0.53:53, UDP and TCP, in the network namespace of the
//! thread that starts it, with whatever the zone says; and the one fake
//! [`Zone`] they serve: one name whose answer the test changes (an A or an
//! SRV record, or a failure), fixed A records beside it, and when each
//! query for the name arrived.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// A zone: the wire-format answer to a wire-format query, or `None` for
/// silence (a timeout, as seen by the resolver).
pub trait Respond: Send + Sync + 'static {
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>>;
}

/// Serves `zone` on 127.0.0.53:53 until the runtime ends.
pub async fn serve<Z: Respond>(zone: Arc<Z>) {
    let addr = SocketAddr::from(([127, 0, 0, 53], 53));
    let udp = UdpSocket::bind(addr).await.expect("bind dns udp");
    let tcp = TcpListener::bind(addr).await.expect("bind dns tcp");
    let z = zone.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            if let Some(resp) = z.answer(&buf[..n]) {
                let _ = udp.send_to(&resp, peer).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let z = zone.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut msg).await.is_err() {
                        return;
                    }
                    match z.answer(&msg) {
                        Some(resp) => {
                            let mut out = (resp.len() as u16).to_be_bytes().to_vec();
                            out.extend(resp);
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        // Silence: hold the connection, answer nothing.
                        None => std::future::pending::<()>().await,
                    }
                }
            });
        }
    });
}

// === the fake zone ===

/// One SRV record: (priority, weight, port, target).
pub type Srv = (u16, u16, u16, &'static str);

/// How the zone answers for its changing name right now.
#[derive(Clone, Debug)]
pub enum Answer {
    /// An A record (a query of another type: the name exists, no record).
    A {
        ip: Ipv4Addr,
        ttl: u32,
    },
    /// SRV records, maybe none (another type: the name exists, no record).
    Srv {
        records: Vec<Srv>,
        ttl: u32,
    },
    NxDomain,
    ServFail,
    /// No answer at all (a timeout for the resolver).
    Silence,
}

/// An authoritative zone for tests.
pub struct Zone {
    /// The zone's apex (its SOA), e.g. `lab.test`.
    origin: &'static str,
    /// The name whose answer the test changes.
    name: &'static str,
    /// The query type of `name` that is timed in `queries`.
    counted: RecordType,
    answer: Mutex<Answer>,
    /// Fixed A records (TTL 5); any other name does not exist.
    hosts: Vec<(&'static str, Ipv4Addr)>,
    /// When each `counted` query for `name` arrived.
    queries: Mutex<Vec<Instant>>,
}

impl Zone {
    /// A zone whose `name` is a host (the A queries are timed).
    pub fn a(origin: &'static str, name: &'static str, answer: Answer) -> Arc<Zone> {
        Zone::new(origin, name, RecordType::A, answer, Vec::new())
    }

    /// A zone whose `name` is an SRV record (the SRV queries are timed),
    /// its targets' addresses in `hosts`.
    pub fn srv(
        origin: &'static str,
        name: &'static str,
        answer: Answer,
        hosts: Vec<(&'static str, Ipv4Addr)>,
    ) -> Arc<Zone> {
        Zone::new(origin, name, RecordType::SRV, answer, hosts)
    }

    fn new(
        origin: &'static str,
        name: &'static str,
        counted: RecordType,
        answer: Answer,
        hosts: Vec<(&'static str, Ipv4Addr)>,
    ) -> Arc<Zone> {
        Arc::new(Zone {
            origin,
            name,
            counted,
            answer: Mutex::new(answer),
            hosts,
            queries: Mutex::new(Vec::new()),
        })
    }

    /// Changes the answer for the zone's name.
    pub fn set(&self, a: Answer) {
        *self.answer.lock().expect("zone") = a;
    }

    /// When each timed query for the zone's name arrived.
    pub fn queries(&self) -> Vec<Instant> {
        self.queries.lock().expect("zone").clone()
    }
}

impl Respond for Zone {
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(query).ok()?;
        let q = req.queries().first()?.clone();
        let name = |n: &str| Name::from_str(&format!("{n}.")).expect("name");
        let mut resp = Message::new();
        resp.set_id(req.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_recursion_desired(req.recursion_desired())
            .add_queries(vec![q.clone()]);
        let soa = Record::from_rdata(
            name(self.origin),
            1,
            RData::SOA(SOA::new(
                name(&format!("ns.{}", self.origin)),
                name(&format!("admin.{}", self.origin)),
                1,
                60,
                60,
                60,
                1,
            )),
        );
        if q.name().eq_case(&name(self.name)) {
            if q.query_type() == self.counted {
                self.queries.lock().expect("zone").push(Instant::now());
            }
            let answer = self.answer.lock().expect("zone").clone();
            match answer {
                Answer::Silence => return None,
                Answer::NxDomain => {
                    resp.set_response_code(ResponseCode::NXDomain)
                        .add_name_server(soa);
                }
                Answer::ServFail => {
                    resp.set_response_code(ResponseCode::ServFail);
                }
                Answer::A { ip, ttl } if q.query_type() == RecordType::A => {
                    resp.add_answer(Record::from_rdata(name(self.name), ttl, RData::A(A(ip))));
                }
                Answer::Srv { records, ttl } if q.query_type() == RecordType::SRV => {
                    for (priority, weight, port, target) in records {
                        resp.add_answer(Record::from_rdata(
                            name(self.name),
                            ttl,
                            RData::SRV(SRV::new(priority, weight, port, name(target))),
                        ));
                    }
                }
                // The name exists, with no record of that type.
                Answer::A { .. } | Answer::Srv { .. } => {
                    resp.add_name_server(soa);
                }
            }
            return resp.to_vec().ok();
        }
        match self.hosts.iter().find(|(h, _)| q.name().eq_case(&name(h))) {
            Some((h, addr)) if q.query_type() == RecordType::A => {
                resp.add_answer(Record::from_rdata(name(h), 5, RData::A(A(*addr))));
            }
            Some(_) => {
                resp.add_name_server(soa);
            }
            None => {
                resp.set_response_code(ResponseCode::NXDomain)
                    .add_name_server(soa);
            }
        }
        resp.to_vec().ok()
    }
}
