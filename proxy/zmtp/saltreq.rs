//! Salt's `transport: tcp` on the wire, as far as the health check needs it.
//!
//! Each message is one msgpack map `{"head": {...}, "body": ...}`, with no
//! length prefix: a reader finds the end of a message by decoding it. A
//! request's head carries `mid`, which the reply's head echoes. The ret
//! port answers a clear `ping` request (`{"enc": "clear", "load": {"cmd":
//! "ping"}, "version": 3}`, handled by the master's `ClearFuncs.ping`, which
//! echoes the load and logs nothing) at once, even while its workers take
//! their time over a job: a hung master answers nothing. `version` 3: Salt
//! 3006.x and later reject (and log a warning for) requests below their
//! `minimum_auth_version` (3 by default); for a clear request it checks
//! nothing else. Pure: no I/O.

/// The clear `ping` request with `mid` 1, msgpack-encoded: `{"head":
/// {"mid": 1}, "body": {"enc": "clear", "load": {"cmd": "ping"}, "version": 3}}`.
pub const PING: &[u8] = b"\x82\xa4head\x81\xa3mid\x01\xa4body\x83\xa3enc\xa5clear\xa4load\x81\xa3cmd\xa4ping\xa7version\x03";

/// The same clear `ping` as a ZeroMQ request's payload (the body alone: a
/// ZMTP message is its own frame): `{"enc": "clear", "load": {"cmd":
/// "ping"}, "version": 3}`. Salt's ROUTER hands it to a worker like any
/// minion request, so only a master whose workers answer replies.
pub const PING_BODY: &[u8] = b"\x83\xa3enc\xa5clear\xa4load\x81\xa3cmd\xa4ping\xa7version\x03";

/// Why bytes from a master are not a Salt tcp-transport reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is not a msgpack map (first byte {0:#04x})")]
    NotAMap(u8),
    #[error("the reply is not valid msgpack (byte {0:#04x})")]
    Invalid(u8),
}

/// The length of the first complete message in `buf` if it holds one
/// (`Ok(None)`: not complete yet, read more). A message must be a map.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, ReplyError> {
    match buf.first() {
        None => return Ok(None),
        Some(&b) if !matches!(b, 0x80..=0x8f | 0xde | 0xdf) => return Err(ReplyError::NotAMap(b)),
        Some(_) => {}
    }
    // Values still to skip (a map's entries count twice); iterative, so a
    // deeply nested reply cannot exhaust the stack.
    let mut pending: u64 = 1;
    let mut pos = 0usize;
    while pending > 0 {
        pending -= 1;
        let Some(&b) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(head) = Head::of(b, &buf[pos + 1..])? else {
            return Ok(None);
        };
        pos = match pos
            .checked_add(1 + head.size)
            .and_then(|p| p.checked_add(head.data))
        {
            Some(p) => p,
            None => return Err(ReplyError::Invalid(b)),
        };
        pending = pending.saturating_add(head.children);
    }
    Ok((pos <= buf.len()).then_some(pos))
}

/// One msgpack value's header after its marker byte: the header's own
/// size, the bytes of data that follow it, and how many values it contains.
struct Head {
    size: usize,
    data: usize,
    children: u64,
}

impl Head {
    /// `Ok(None)`: the header's length field is not complete in `rest`.
    fn of(marker: u8, rest: &[u8]) -> Result<Option<Head>, ReplyError> {
        let fixed = |data| {
            Ok(Some(Head {
                size: 0,
                data,
                children: 0,
            }))
        };
        let counted = |n: usize, per: u64| -> Result<Option<Head>, ReplyError> {
            Ok(be(rest, n).map(|count| Head {
                size: n,
                data: 0,
                children: count * per,
            }))
        };
        let sized = |n: usize, extra: usize| -> Result<Option<Head>, ReplyError> {
            Ok(be(rest, n).map(|len| Head {
                size: n,
                data: usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .saturating_add(extra),
                children: 0,
            }))
        };
        match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => fixed(0),
            0x80..=0x8f => Ok(Some(Head {
                size: 0,
                data: 0,
                children: u64::from(marker & 0x0f) * 2,
            })),
            0x90..=0x9f => Ok(Some(Head {
                size: 0,
                data: 0,
                children: u64::from(marker & 0x0f),
            })),
            0xa0..=0xbf => fixed(usize::from(marker & 0x1f)),
            0xc4 | 0xd9 => sized(1, 0),
            0xc5 | 0xda => sized(2, 0),
            0xc6 | 0xdb => sized(4, 0),
            0xc7 => sized(1, 1),
            0xc8 => sized(2, 1),
            0xc9 => sized(4, 1),
            0xca => fixed(4),
            0xcb => fixed(8),
            0xcc | 0xd0 => fixed(1),
            0xcd | 0xd1 => fixed(2),
            0xce | 0xd2 => fixed(4),
            0xcf | 0xd3 => fixed(8),
            0xd4 => fixed(2),
            0xd5 => fixed(3),
            0xd6 => fixed(5),
            0xd7 => fixed(9),
            0xd8 => fixed(17),
            0xdc => counted(2, 1),
            0xdd => counted(4, 1),
            0xde => counted(2, 2),
            0xdf => counted(4, 2),
            _ => Err(ReplyError::Invalid(marker)),
        }
    }
}

/// A big-endian unsigned integer of `n` bytes at the start of `rest`.
fn be(rest: &[u8], n: usize) -> Option<u64> {
    let bytes = rest.get(..n)?;
    Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_request_is_one_complete_message() {
        assert_eq!(message_len(PING), Ok(Some(PING.len())));
        for cut in 0..PING.len() {
            assert_eq!(message_len(&PING[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn the_zeromq_ping_is_the_tcp_requests_body() {
        assert_eq!(message_len(PING_BODY), Ok(Some(PING_BODY.len())));
        assert!(PING.ends_with(PING_BODY));
    }

    #[test]
    fn a_reply_followed_by_more_bytes_ends_where_it_ends() {
        // {"head": {"mid": 1}, "body": {"cmd": "ping"}} then the next message's first byte.
        let reply = b"\x82\xa4head\x81\xa3mid\x01\xa4body\x81\xa3cmd\xa4ping";
        let mut buf = reply.to_vec();
        buf.push(0x82);
        assert_eq!(message_len(&buf), Ok(Some(reply.len())));
    }

    #[test]
    fn wide_lengths_and_nesting_are_followed() {
        // map16 of one entry: str8 key "k" -> bin16 of 300 bytes.
        let mut m = vec![0xde, 0x00, 0x01, 0xd9, 0x01, b'k', 0xc5, 0x01, 0x2c];
        m.extend(std::iter::repeat_n(7u8, 300));
        assert_eq!(message_len(&m[..m.len() - 1]), Ok(None));
        assert_eq!(message_len(&m), Ok(Some(m.len())));
        // Nested deeper than any stack: 100 000 one-element arrays.
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        deep.push(0xc0);
        assert_eq!(message_len(&deep), Ok(Some(deep.len())));
    }

    #[test]
    fn what_is_not_a_reply_is_told_apart() {
        assert_eq!(message_len(b"\xff\x00"), Err(ReplyError::NotAMap(0xff)));
        assert_eq!(message_len(b"HTTP/1.1"), Err(ReplyError::NotAMap(b'H')));
        assert_eq!(message_len(b"\x81\xc1"), Err(ReplyError::Invalid(0xc1)));
        // A huge declared length is incomplete, never an overflow.
        assert_eq!(message_len(b"\x81\xa1k\xc6\xff\xff\xff\xff"), Ok(None));
    }
}
