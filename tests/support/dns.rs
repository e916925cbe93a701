//! A tiny authoritative DNS server for tests (tests/dns.rs, tests/srv.rs):
//! answers on 127.0.0.53:53, UDP and TCP, in the network namespace of the
//! thread that starts it, with whatever the zone says.

use std::net::SocketAddr;
use std::sync::Arc;

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
