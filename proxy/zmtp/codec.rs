//! ZMTP 3.x wire codec: greetings, frames, and the READY/ERROR commands.
//!
//! Owns the byte layout of RFC 23 (ZMTP 3.0) and RFC 37 (ZMTP 3.1) as far as
//! the NULL security mechanism needs it: building our greeting, READY command
//! and data messages, and decoding a peer's, incrementally, so that a health
//! probe can tell a real ZeroMQ PUB or ROUTER socket from anything else.
//!
//! It never does I/O, never knows about time or Salt, never allocates based on
//! a size the peer declared (every declared size is checked against a caller
//! bound first), and never panics, whatever bytes it is given. Text taken from
//! the peer (mechanism names, socket types, error reasons) is escaped and
//! truncated before it goes into a [`ZmtpError`], so it is safe to log.

use std::fmt;

use crate::config::master::Port;

/// Length of the signature that opens every ZMTP 3.x greeting.
pub const SIGNATURE_LEN: usize = 10;
/// Length of a whole ZMTP 3.x greeting.
pub const GREETING_LEN: usize = 64;

/// Offset of the version-major octet in a greeting.
const MAJOR_AT: usize = 10;
/// Offset of the version-minor octet in a greeting.
const MINOR_AT: usize = 11;
/// Offset and length of the NUL-padded mechanism name in a greeting.
const MECHANISM_AT: usize = 12;
const MECHANISM_LEN: usize = 20;
/// Offset of the as-server octet in a greeting.
const AS_SERVER_AT: usize = 32;

/// Frame flag bits (RFC 23 §"Framing").
pub(crate) const FLAG_MORE: u8 = 0x01;
pub(crate) const FLAG_LONG: u8 = 0x02;
pub(crate) const FLAG_COMMAND: u8 = 0x04;

/// Command names we build or recognise (case-sensitive on the wire, as libzmq).
const READY: &[u8] = b"READY";
const ERROR: &[u8] = b"ERROR";
/// The READY property we care about (matched case-insensitively).
const SOCKET_TYPE_PROPERTY: &[u8] = b"Socket-Type";

/// Longest piece of peer-supplied text copied into an error.
const MAX_QUOTED: usize = 64;

/// The ZeroMQ socket types of RFC 23/28 (draft types are not recognised).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketType {
    Pair,
    Pub,
    Sub,
    Req,
    Rep,
    Dealer,
    Router,
    Pull,
    Push,
    XPub,
    XSub,
    Stream,
}

impl SocketType {
    /// The socket a Salt master has on `port` (ZeroMQ transport).
    pub fn of_master(port: Port) -> SocketType {
        match port {
            Port::Publish => SocketType::Pub,
            Port::Ret => SocketType::Router,
        }
    }

    /// The socket a minion connects to `port` with.
    pub fn of_minion(port: Port) -> SocketType {
        match port {
            Port::Publish => SocketType::Sub,
            Port::Ret => SocketType::Dealer,
        }
    }

    /// Every socket type, in RFC order.
    pub const ALL: [SocketType; 12] = [
        SocketType::Pair,
        SocketType::Pub,
        SocketType::Sub,
        SocketType::Req,
        SocketType::Rep,
        SocketType::Dealer,
        SocketType::Router,
        SocketType::Pull,
        SocketType::Push,
        SocketType::XPub,
        SocketType::XSub,
        SocketType::Stream,
    ];

    /// The name as sent in the `Socket-Type` READY property, e.g. `"PUB"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Pair => "PAIR",
            SocketType::Pub => "PUB",
            SocketType::Sub => "SUB",
            SocketType::Req => "REQ",
            SocketType::Rep => "REP",
            SocketType::Dealer => "DEALER",
            SocketType::Router => "ROUTER",
            SocketType::Pull => "PULL",
            SocketType::Push => "PUSH",
            SocketType::XPub => "XPUB",
            SocketType::XSub => "XSUB",
            SocketType::Stream => "STREAM",
        }
    }

    /// Parses a `Socket-Type` property value. Exact, upper-case match, as
    /// libzmq does; `None` for anything else (including draft types).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes() == bytes)
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The security mechanism a peer announced in its greeting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Null,
    Plain,
    Curve,
    /// Any other name, escaped for logging.
    Other(String),
}

impl Mechanism {
    fn from_wire(field: &[u8]) -> Self {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        let name = field.get(..end).unwrap_or_default();
        match name {
            b"NULL" => Mechanism::Null,
            b"PLAIN" => Mechanism::Plain,
            b"CURVE" => Mechanism::Curve,
            other => Mechanism::Other(quote(other)),
        }
    }

    /// The mechanism name as it appears on the wire (escaped for `Other`).
    pub fn as_str(&self) -> &str {
        match self {
            Mechanism::Null => "NULL",
            Mechanism::Plain => "PLAIN",
            Mechanism::Curve => "CURVE",
            Mechanism::Other(name) => name,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's decoded greeting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub major: u8,
    pub minor: u8,
    pub mechanism: Mechanism,
    pub as_server: bool,
}

impl Greeting {
    /// Ok when the peer uses the NULL mechanism, the only one we speak.
    pub fn require_null(&self) -> Result<(), ZmtpError> {
        match self.mechanism {
            Mechanism::Null => Ok(()),
            ref other => Err(ZmtpError::UnsupportedMechanism(other.as_str().to_owned())),
        }
    }
}

/// Everything that can be wrong with what a peer sent.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ZmtpError {
    #[error("peer did not send a ZMTP 3 signature (not a ZeroMQ socket)")]
    BadSignature,
    #[error("peer speaks ZMTP {major}.x; 3.0 or later is required")]
    UnsupportedVersion { major: u8 },
    #[error("peer uses security mechanism \"{0}\"; only NULL is supported")]
    UnsupportedMechanism(String),
    #[error("malformed ZMTP data: {0}")]
    Malformed(&'static str),
    #[error("peer declared a {0}-byte frame, above the limit")]
    FrameTooLarge(u64),
    #[error("peer sent {0} instead of READY")]
    NotReady(String),
    #[error("peer's READY has no Socket-Type property")]
    MissingSocketType,
    #[error("peer announced unknown socket type \"{0}\"")]
    UnknownSocketType(String),
    #[error("expected a {expected} socket, peer is {got}")]
    WrongSocketType {
        expected: SocketType,
        got: SocketType,
    },
}

/// Our greeting: ZMTP 3.0, NULL mechanism, the signature libzmq sends.
pub fn greeting_null(as_server: bool) -> [u8; GREETING_LEN] {
    let mut greeting = [0u8; GREETING_LEN];
    // Signature: 0xFF, eight padding octets (libzmq ends them with 0x01 so a
    // ZMTP 1.0 peer reads a length of 1), 0x7F.
    greeting[0] = 0xff;
    greeting[8] = 0x01;
    greeting[9] = 0x7f;
    greeting[MAJOR_AT] = 3;
    greeting[MINOR_AT] = 0;
    greeting[MECHANISM_AT..MECHANISM_AT + 4].copy_from_slice(b"NULL");
    greeting[AS_SERVER_AT] = u8::from(as_server);
    greeting
}

/// Checks the first [`SIGNATURE_LEN`] bytes a peer sent: `0xFF`, any eight
/// padding octets, `0x7F`. Extra bytes after the signature are ignored.
pub fn check_signature(first10: &[u8]) -> Result<(), ZmtpError> {
    match first10.get(..SIGNATURE_LEN) {
        None => Err(ZmtpError::Malformed("signature shorter than 10 bytes")),
        Some(sig) if sig.first() == Some(&0xff) && sig.last() == Some(&0x7f) => Ok(()),
        Some(_) => Err(ZmtpError::BadSignature),
    }
}

/// Incremental greeting decoder: `Ok(None)` while fewer than
/// [`GREETING_LEN`] bytes are available and what is there could still be a
/// valid greeting; an error as soon as a received byte rules it out (so a
/// probe fails fast on a non-ZeroMQ service). Bytes past the greeting are
/// ignored; the greeting is always exactly [`GREETING_LEN`] bytes long.
pub fn decode_greeting(buf: &[u8]) -> Result<Option<Greeting>, ZmtpError> {
    if buf.first().is_some_and(|&b| b != 0xff) {
        return Err(ZmtpError::BadSignature);
    }
    if buf.get(SIGNATURE_LEN - 1).is_some_and(|&b| b != 0x7f) {
        return Err(ZmtpError::BadSignature);
    }
    if let Some(&major) = buf.get(MAJOR_AT) {
        if major < 3 {
            return Err(ZmtpError::UnsupportedVersion { major });
        }
    }
    let Some(greeting) = buf.get(..GREETING_LEN) else {
        return Ok(None);
    };
    let byte = |at: usize| greeting.get(at).copied().unwrap_or_default();
    let mechanism = greeting
        .get(MECHANISM_AT..MECHANISM_AT + MECHANISM_LEN)
        .map(Mechanism::from_wire)
        .unwrap_or(Mechanism::Null);
    Ok(Some(Greeting {
        major: byte(MAJOR_AT),
        minor: byte(MINOR_AT),
        mechanism,
        as_server: byte(AS_SERVER_AT) != 0,
    }))
}

/// Decodes a complete greeting (at least [`GREETING_LEN`] bytes; only the
/// first [`GREETING_LEN`] are read). Requires major version 3 or later; the
/// mechanism is reported, not checked (see [`Greeting::require_null`]).
pub fn parse_greeting(buf: &[u8]) -> Result<Greeting, ZmtpError> {
    decode_greeting(buf)?.ok_or(ZmtpError::Malformed("greeting shorter than 64 bytes"))
}

/// One decoded frame, borrowing from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A command: `name` is never empty.
    Command { name: &'a [u8], data: &'a [u8] },
    /// One part of a data message; `more` means further parts follow.
    Message { more: bool, body: &'a [u8] },
}

/// Incremental frame decoder: `Ok(None)` when more bytes are needed;
/// `Ok(Some((frame, consumed)))` otherwise, where `consumed` is how many
/// bytes of `buf` the frame used.
///
/// A declared body size above `max_body` is [`ZmtpError::FrameTooLarge`] as
/// soon as the size field is complete, before any body byte arrives, so a
/// caller buffering until `Some` never holds more than one bounded frame.
/// Reserved flag bits, a command with the MORE flag, and a command without a
/// name are [`ZmtpError::Malformed`].
pub fn decode_frame(buf: &[u8], max_body: usize) -> Result<Option<(Frame<'_>, usize)>, ZmtpError> {
    let Some((&flags, rest)) = buf.split_first() else {
        return Ok(None);
    };
    if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
        return Err(ZmtpError::Malformed("reserved frame flag bits set"));
    }
    let more = flags & FLAG_MORE != 0;
    let command = flags & FLAG_COMMAND != 0;
    if command && more {
        return Err(ZmtpError::Malformed("command frame with MORE flag"));
    }
    let (declared, rest) = if flags & FLAG_LONG != 0 {
        let Some((size, rest)) = rest.split_first_chunk::<8>() else {
            return Ok(None);
        };
        (u64::from_be_bytes(*size), rest)
    } else {
        let Some((&size, rest)) = rest.split_first() else {
            return Ok(None);
        };
        (u64::from(size), rest)
    };
    let size = match usize::try_from(declared) {
        Ok(size) if size <= max_body => size,
        _ => return Err(ZmtpError::FrameTooLarge(declared)),
    };
    let Some(body) = rest.get(..size) else {
        return Ok(None);
    };
    let consumed = buf.len() - rest.len() + size;
    let frame = if command {
        let (&name_len, named) = body
            .split_first()
            .ok_or(ZmtpError::Malformed("empty command frame"))?;
        let (name, data) = named
            .split_at_checked(usize::from(name_len))
            .ok_or(ZmtpError::Malformed("command name overruns its frame"))?;
        if name.is_empty() {
            return Err(ZmtpError::Malformed("empty command name"));
        }
        Frame::Command { name, data }
    } else {
        Frame::Message { more, body }
    };
    Ok(Some((frame, consumed)))
}

/// Parses READY metadata (the data of a READY command) and returns its
/// `Socket-Type` (property name matched case-insensitively; the first one
/// wins). Every property is walked, so an overrunning length anywhere is
/// [`ZmtpError::Malformed`].
pub fn ready_socket_type(data: &[u8]) -> Result<SocketType, ZmtpError> {
    let mut rest = data;
    let mut socket_type = None;
    while let Some((&name_len, after_len)) = rest.split_first() {
        let (name, after_name) = after_len
            .split_at_checked(usize::from(name_len))
            .ok_or(ZmtpError::Malformed("property name overruns READY"))?;
        if name.is_empty() {
            return Err(ZmtpError::Malformed("empty property name in READY"));
        }
        let (value_len, after_value_len) = after_name
            .split_first_chunk::<4>()
            .ok_or(ZmtpError::Malformed("property value length overruns READY"))?;
        let value_len = usize::try_from(u32::from_be_bytes(*value_len))
            .map_err(|_| ZmtpError::Malformed("property value overruns READY"))?;
        let (value, after_value) = after_value_len
            .split_at_checked(value_len)
            .ok_or(ZmtpError::Malformed("property value overruns READY"))?;
        if socket_type.is_none() && name.eq_ignore_ascii_case(SOCKET_TYPE_PROPERTY) {
            socket_type = Some(value);
        }
        rest = after_value;
    }
    let value = socket_type.ok_or(ZmtpError::MissingSocketType)?;
    SocketType::parse(value).ok_or_else(|| ZmtpError::UnknownSocketType(quote(value)))
}

/// Parses ERROR command data (one length octet, then the reason) and returns
/// the reason, escaped for logging.
pub fn error_reason(data: &[u8]) -> Result<String, ZmtpError> {
    let (&len, rest) = data
        .split_first()
        .ok_or(ZmtpError::Malformed("ERROR without a reason length"))?;
    let reason = rest
        .get(..usize::from(len))
        .ok_or(ZmtpError::Malformed("ERROR reason overruns its frame"))?;
    Ok(quote(reason))
}

/// The peer's socket type, if `frame` is its READY command. An ERROR command,
/// any other command or a data message is [`ZmtpError::NotReady`] (with the
/// ERROR reason, or what was sent instead).
pub fn peer_socket_type(frame: &Frame<'_>) -> Result<SocketType, ZmtpError> {
    match *frame {
        Frame::Command { name, data } if name == READY => ready_socket_type(data),
        Frame::Command { name, data } if name == ERROR => {
            Err(ZmtpError::NotReady(match error_reason(data) {
                Ok(reason) => format!("ERROR \"{reason}\""),
                Err(_) => "a malformed ERROR command".to_owned(),
            }))
        }
        Frame::Command { name, .. } => {
            Err(ZmtpError::NotReady(format!("command \"{}\"", quote(name))))
        }
        Frame::Message { .. } => Err(ZmtpError::NotReady("a data message".to_owned())),
    }
}

/// What a health probe needs: checks a READY frame's socket type against the
/// expected one.
pub fn expect_socket_type(frame: &Frame<'_>, expected: SocketType) -> Result<(), ZmtpError> {
    let got = peer_socket_type(frame)?;
    if got == expected {
        Ok(())
    } else {
        Err(ZmtpError::WrongSocketType { expected, got })
    }
}

/// Our READY command as a complete frame (flags and size included), with the
/// single property `Socket-Type`.
pub fn encode_ready(socket_type: SocketType) -> Vec<u8> {
    let value = socket_type.as_str().as_bytes();
    let mut body = Vec::with_capacity(1 + READY.len() + 1 + SOCKET_TYPE_PROPERTY.len() + 4 + 6);
    // All lengths below are of our own constants (at most 11 bytes), so the
    // narrowing casts are exact.
    body.push(READY.len() as u8);
    body.extend_from_slice(READY);
    body.push(SOCKET_TYPE_PROPERTY.len() as u8);
    body.extend_from_slice(SOCKET_TYPE_PROPERTY);
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value);
    let mut out = Vec::with_capacity(2 + body.len());
    push_frame(&mut out, FLAG_COMMAND, &body);
    out
}

/// A data message: one frame per element, MORE on all but the last, short or
/// long size as each body needs. No frames encode to no bytes.
pub fn encode_message(frames: &[&[u8]]) -> Vec<u8> {
    let total = frames.iter().fold(0usize, |sum, f| {
        sum.saturating_add(f.len()).saturating_add(9)
    });
    let mut out = Vec::with_capacity(total);
    let mut parts = frames.iter().peekable();
    while let Some(body) = parts.next() {
        let flags = if parts.peek().is_some() { FLAG_MORE } else { 0 };
        push_frame(&mut out, flags, body);
    }
    out
}

/// Appends one frame (flags, short or long size, body) to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, flags: u8, body: &[u8]) {
    match u8::try_from(body.len()) {
        Ok(short) => {
            out.push(flags);
            out.push(short);
        }
        Err(_) => {
            out.push(flags | FLAG_LONG);
            // usize is at most 64 bits on every supported target.
            out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(body);
}

/// Peer-supplied bytes made safe to log: ASCII-escaped, at most
/// [`MAX_QUOTED`] input bytes, an ellipsis when cut.
fn quote(bytes: &[u8]) -> String {
    let shown = bytes.get(..MAX_QUOTED).unwrap_or(bytes);
    let mut text = shown.escape_ascii().to_string();
    if shown.len() < bytes.len() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    /// The greeting libzmq 4.3.5 (pyzmq 27.3.0) sent, identical for a bound
    /// PUB and a bound ROUTER, to a client whose greeting was
    /// `greeting_null(false)`. libzmq sent the 10-byte signature first and the
    /// other 54 bytes only after it had read ours. Note ZMTP 3.1 and
    /// as-server 0 (libzmq sets it only for PLAIN/CURVE servers).
    const LIBZMQ_GREETING: [u8; GREETING_LEN] = [
        0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x7f, // signature
        0x03, 0x01, // version 3.1
        b'N', b'U', b'L', b'L', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    // mechanism
        0x00, // as-server
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, // filler
    ];

    /// The READY libzmq 4.3.5's PUB sent after that greeting.
    const LIBZMQ_PUB_READY: &[u8] = &[
        0x04, 0x19, 0x05, b'R', b'E', b'A', b'D', b'Y', 0x0b, b'S', b'o', b'c', b'k', b'e', b't',
        b'-', b'T', b'y', b'p', b'e', 0x00, 0x00, 0x00, 0x03, b'P', b'U', b'B',
    ];

    /// The READY libzmq 4.3.5's ROUTER sent: Socket-Type, then an empty Identity.
    const LIBZMQ_ROUTER_READY: &[u8] = &[
        0x04, 0x29, 0x05, b'R', b'E', b'A', b'D', b'Y', 0x0b, b'S', b'o', b'c', b'k', b'e', b't',
        b'-', b'T', b'y', b'p', b'e', 0x00, 0x00, 0x00, 0x06, b'R', b'O', b'U', b'T', b'E', b'R',
        0x08, b'I', b'd', b'e', b'n', b't', b'i', b't', b'y', 0x00, 0x00, 0x00, 0x00,
    ];

    /// xorshift64: deterministic pseudo-random bytes without extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn valid_stream(socket_type: SocketType) -> Vec<u8> {
        let mut stream = greeting_null(true).to_vec();
        stream.extend(encode_ready(socket_type));
        stream
    }

    /// Decodes every frame in `buf`, panicking on errors or leftovers (tests only).
    fn decode_all(mut buf: &[u8]) -> Vec<Frame<'_>> {
        let mut frames = Vec::new();
        while !buf.is_empty() {
            let (frame, used) = decode_frame(buf, LIMIT).unwrap().unwrap();
            frames.push(frame);
            buf = &buf[used..];
        }
        frames
    }

    #[test]
    fn greeting_round_trip() {
        for as_server in [false, true] {
            let bytes = greeting_null(as_server);
            assert_eq!(check_signature(&bytes), Ok(()));
            let greeting = parse_greeting(&bytes).unwrap();
            assert_eq!(
                greeting,
                Greeting {
                    major: 3,
                    minor: 0,
                    mechanism: Mechanism::Null,
                    as_server
                }
            );
            assert_eq!(greeting.require_null(), Ok(()));
        }
        assert_eq!(
            &greeting_null(false)[..SIGNATURE_LEN],
            &[0xff, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x7f]
        );
    }

    #[test]
    fn signature_padding_is_free_but_ends_are_not() {
        let mut sig = [0xffu8, 1, 2, 3, 4, 5, 6, 7, 8, 0x7f];
        assert_eq!(check_signature(&sig), Ok(()));
        sig[0] = 0xfe;
        assert_eq!(check_signature(&sig), Err(ZmtpError::BadSignature));
        sig[0] = 0xff;
        sig[9] = 0x7e;
        assert_eq!(check_signature(&sig), Err(ZmtpError::BadSignature));
        assert!(matches!(
            check_signature(&[0xff, 0, 0]),
            Err(ZmtpError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_rejected_early() {
        assert_eq!(decode_greeting(b"H"), Err(ZmtpError::BadSignature));
        assert_eq!(
            decode_greeting(b"HTTP/1.1 400 Bad Request\r\n"),
            Err(ZmtpError::BadSignature)
        );
        assert_eq!(check_signature(b"SSH-2.0-Op"), Err(ZmtpError::BadSignature));
        let mut stream = valid_stream(SocketType::Pub);
        stream[9] = 0x00;
        assert_eq!(parse_greeting(&stream), Err(ZmtpError::BadSignature));
    }

    #[test]
    fn old_versions_and_other_mechanisms() {
        let mut bytes = greeting_null(false);
        bytes[MAJOR_AT] = 2;
        assert_eq!(
            decode_greeting(&bytes[..11]),
            Err(ZmtpError::UnsupportedVersion { major: 2 })
        );
        bytes[MAJOR_AT] = 3;
        bytes[MINOR_AT] = 1;
        bytes[MECHANISM_AT..MECHANISM_AT + MECHANISM_LEN].fill(0);
        bytes[MECHANISM_AT..MECHANISM_AT + 5].copy_from_slice(b"CURVE");
        let greeting = parse_greeting(&bytes).unwrap();
        assert_eq!((greeting.major, greeting.minor), (3, 1));
        assert_eq!(greeting.mechanism, Mechanism::Curve);
        assert_eq!(
            greeting.require_null(),
            Err(ZmtpError::UnsupportedMechanism("CURVE".into()))
        );
        bytes[MECHANISM_AT..MECHANISM_AT + 5].copy_from_slice(b"X\x01\xffYZ");
        let greeting = parse_greeting(&bytes).unwrap();
        assert_eq!(greeting.mechanism, Mechanism::Other("X\\x01\\xffYZ".into()));
        assert_eq!(
            parse_greeting(&bytes[..63]),
            Err(ZmtpError::Malformed("greeting shorter than 64 bytes"))
        );
    }

    #[test]
    fn ready_round_trip_for_every_socket_type() {
        for socket_type in SocketType::ALL {
            assert_eq!(
                SocketType::parse(socket_type.as_str().as_bytes()),
                Some(socket_type)
            );
            let bytes = encode_ready(socket_type);
            let (frame, used) = decode_frame(&bytes, LIMIT).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            let Frame::Command { name, data } = frame else {
                panic!("READY decoded as {frame:?}");
            };
            assert_eq!(name, b"READY");
            assert_eq!(ready_socket_type(data), Ok(socket_type));
            assert_eq!(expect_socket_type(&frame, socket_type), Ok(()));
        }
        assert_eq!(SocketType::parse(b"pub"), None);
        assert_eq!(SocketType::parse(b"RADIO"), None);
    }

    #[test]
    fn wrong_socket_type() {
        let bytes = encode_ready(SocketType::Router);
        let (frame, _) = decode_frame(&bytes, LIMIT).unwrap().unwrap();
        let err = expect_socket_type(&frame, SocketType::Pub).unwrap_err();
        assert_eq!(
            err,
            ZmtpError::WrongSocketType {
                expected: SocketType::Pub,
                got: SocketType::Router
            }
        );
        assert_eq!(err.to_string(), "expected a PUB socket, peer is ROUTER");
    }

    fn property(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![name.len() as u8];
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn ready_metadata_parsing() {
        let properties = [
            property(b"Identity", b""),
            property(b"socket-TYPE", b"PUB"),
            property(b"X-Extra", &[7; 300]),
        ];
        let data = properties.concat();
        assert_eq!(ready_socket_type(&data), Ok(SocketType::Pub));
        let first = properties[0].len();
        let boundaries = [0, first, first + properties[1].len()];
        assert_eq!(
            ready_socket_type(&data[..first]),
            Err(ZmtpError::MissingSocketType)
        );
        assert_eq!(
            ready_socket_type(&data[..boundaries[2]]),
            Ok(SocketType::Pub)
        );

        assert_eq!(
            ready_socket_type(&property(b"Identity", b"x")),
            Err(ZmtpError::MissingSocketType)
        );
        assert_eq!(ready_socket_type(b""), Err(ZmtpError::MissingSocketType));
        assert_eq!(
            ready_socket_type(&property(b"Socket-Type", b"RADIO\n")),
            Err(ZmtpError::UnknownSocketType("RADIO\\n".into()))
        );
        let long = ready_socket_type(&property(b"Socket-Type", &[b'A'; 1000])).unwrap_err();
        assert!(matches!(&long, ZmtpError::UnknownSocketType(s) if s.len() < 100));

        // Every strict prefix that cuts into a property is malformed, never a panic.
        for cut in 1..data.len() {
            if !boundaries.contains(&cut) {
                assert!(
                    matches!(
                        ready_socket_type(&data[..cut]),
                        Err(ZmtpError::Malformed(_))
                    ),
                    "cut at {cut}"
                );
            }
        }
        // A value length far beyond the data.
        let mut huge = vec![11];
        huge.extend_from_slice(b"Socket-Type");
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(b"PUB");
        assert!(matches!(
            ready_socket_type(&huge),
            Err(ZmtpError::Malformed(_))
        ));
        assert!(matches!(
            ready_socket_type(&[0, 0, 0, 0, 0]),
            Err(ZmtpError::Malformed(_))
        ));
    }

    #[test]
    fn error_command_is_reported() {
        let reason = b"Invalid handshake";
        let mut body = vec![5];
        body.extend_from_slice(b"ERROR");
        body.push(reason.len() as u8);
        body.extend_from_slice(reason);
        let mut bytes = vec![FLAG_COMMAND, body.len() as u8];
        bytes.extend_from_slice(&body);

        let (frame, used) = decode_frame(&bytes, LIMIT).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Frame::Command { data, .. } = frame else {
            panic!("not a command: {frame:?}");
        };
        assert_eq!(error_reason(data).as_deref(), Ok("Invalid handshake"));
        let err = expect_socket_type(&frame, SocketType::Pub).unwrap_err();
        assert_eq!(
            err,
            ZmtpError::NotReady("ERROR \"Invalid handshake\"".into())
        );
        assert_eq!(
            err.to_string(),
            "peer sent ERROR \"Invalid handshake\" instead of READY"
        );

        let short = Frame::Command {
            name: b"ERROR",
            data: &[9, b'x'],
        };
        assert_eq!(
            peer_socket_type(&short),
            Err(ZmtpError::NotReady("a malformed ERROR command".into()))
        );
        let ping = Frame::Command {
            name: b"PING",
            data: &[],
        };
        assert_eq!(
            peer_socket_type(&ping),
            Err(ZmtpError::NotReady("command \"PING\"".into()))
        );
        let message = Frame::Message {
            more: false,
            body: b"hi",
        };
        assert_eq!(
            peer_socket_type(&message),
            Err(ZmtpError::NotReady("a data message".into()))
        );
    }

    #[test]
    fn message_round_trip() {
        let parts: [&[u8]; 3] = [b"", b"ping 7", b"tail"];
        let bytes = encode_message(&parts);
        assert_eq!(&bytes[..2], &[FLAG_MORE, 0]);
        let frames = decode_all(&bytes);
        assert_eq!(
            frames,
            vec![
                Frame::Message {
                    more: true,
                    body: b""
                },
                Frame::Message {
                    more: true,
                    body: b"ping 7"
                },
                Frame::Message {
                    more: false,
                    body: b"tail"
                },
            ]
        );
        assert!(encode_message(&[]).is_empty());
    }

    #[test]
    fn long_frames() {
        let medium = vec![0xabu8; 256];
        let big = vec![0xcdu8; 70_000];
        let short = vec![1u8; 255];
        let bytes = encode_message(&[&short, &medium, &big]);
        assert_eq!(bytes[0], FLAG_MORE);
        assert_eq!(bytes[1], 255);
        let second = 2 + 255;
        assert_eq!(bytes[second], FLAG_MORE | FLAG_LONG);
        assert_eq!(&bytes[second + 1..second + 9], &256u64.to_be_bytes());
        let frames = decode_all(&bytes);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[2],
            Frame::Message {
                more: false,
                body: &big
            }
        );

        // A long frame with a small size is still legal on the wire.
        let mut tiny_long = vec![FLAG_LONG];
        tiny_long.extend_from_slice(&3u64.to_be_bytes());
        tiny_long.extend_from_slice(b"abc");
        assert_eq!(
            decode_frame(&tiny_long, LIMIT),
            Ok(Some((
                Frame::Message {
                    more: false,
                    body: b"abc"
                },
                12
            )))
        );
    }

    #[test]
    fn oversized_frames_fail_before_the_body_arrives() {
        let mut header = vec![FLAG_LONG];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode_frame(&header, LIMIT),
            Err(ZmtpError::FrameTooLarge(u64::MAX))
        );
        let mut header = vec![FLAG_LONG | FLAG_COMMAND];
        header.extend_from_slice(&(LIMIT as u64 + 1).to_be_bytes());
        assert_eq!(
            decode_frame(&header, LIMIT),
            Err(ZmtpError::FrameTooLarge(LIMIT as u64 + 1))
        );
        assert_eq!(
            decode_frame(&[0, 200], 100),
            Err(ZmtpError::FrameTooLarge(200))
        );
        assert_eq!(decode_frame(&[0, 100], 100), Ok(None));
    }

    #[test]
    fn malformed_frames() {
        assert!(matches!(
            decode_frame(&[0x08, 0], LIMIT),
            Err(ZmtpError::Malformed(_))
        ));
        assert!(matches!(
            decode_frame(&[FLAG_COMMAND | FLAG_MORE, 0], LIMIT),
            Err(ZmtpError::Malformed(_))
        ));
        assert!(matches!(
            decode_frame(&[FLAG_COMMAND, 0], LIMIT),
            Err(ZmtpError::Malformed(_))
        ));
        assert!(matches!(
            decode_frame(&[FLAG_COMMAND, 1, 0], LIMIT),
            Err(ZmtpError::Malformed(_))
        ));
        assert!(matches!(
            decode_frame(&[FLAG_COMMAND, 2, 5, b'R'], LIMIT),
            Err(ZmtpError::Malformed(_))
        ));
    }

    #[test]
    fn every_truncation_needs_more() {
        for socket_type in [SocketType::Pub, SocketType::Router] {
            let stream = valid_stream(socket_type);
            for cut in 0..stream.len() {
                let prefix = &stream[..cut];
                match decode_greeting(prefix) {
                    Ok(None) => assert!(cut < GREETING_LEN),
                    Ok(Some(_)) => {
                        assert!(cut >= GREETING_LEN);
                        assert_eq!(decode_frame(&prefix[GREETING_LEN..], LIMIT), Ok(None));
                    }
                    Err(e) => panic!("prefix of {cut} bytes: {e}"),
                }
                if cut >= SIGNATURE_LEN {
                    assert_eq!(check_signature(prefix), Ok(()));
                }
            }
            let (frame, used) = decode_frame(&stream[GREETING_LEN..], LIMIT)
                .unwrap()
                .unwrap();
            assert_eq!(used, stream.len() - GREETING_LEN);
            assert_eq!(expect_socket_type(&frame, socket_type), Ok(()));
        }
        // Long-size header cut short.
        let bytes = encode_message(&[&[0u8; 300]]);
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut], LIMIT), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn real_libzmq_bytes() {
        assert_eq!(check_signature(&LIBZMQ_GREETING), Ok(()));
        let greeting = parse_greeting(&LIBZMQ_GREETING).unwrap();
        assert_eq!(
            greeting,
            Greeting {
                major: 3,
                minor: 1,
                mechanism: Mechanism::Null,
                as_server: false
            }
        );
        for (ready, socket_type, other) in [
            (LIBZMQ_PUB_READY, SocketType::Pub, SocketType::Router),
            (LIBZMQ_ROUTER_READY, SocketType::Router, SocketType::Pub),
        ] {
            let (frame, used) = decode_frame(ready, LIMIT).unwrap().unwrap();
            assert_eq!(used, ready.len());
            assert_eq!(expect_socket_type(&frame, socket_type), Ok(()));
            assert_eq!(
                expect_socket_type(&frame, other),
                Err(ZmtpError::WrongSocketType {
                    expected: other,
                    got: socket_type
                })
            );
        }
        // Our PUB READY is byte-for-byte libzmq's.
        assert_eq!(encode_ready(SocketType::Pub), LIBZMQ_PUB_READY);
    }

    /// Runs every parser over `input`; only a panic fails.
    fn exercise(input: &[u8]) {
        let _ = check_signature(input);
        let _ = decode_greeting(input);
        let _ = parse_greeting(input);
        let _ = ready_socket_type(input);
        let _ = error_reason(input);
        let _ = SocketType::parse(input);
        for limit in [0, 7, 300, LIMIT] {
            let mut rest = input;
            while let Ok(Some((frame, used))) = decode_frame(rest, limit) {
                let _ = peer_socket_type(&frame);
                let _ = expect_socket_type(&frame, SocketType::Pub);
                assert!(used > 0 && used <= rest.len());
                rest = &rest[used..];
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = vec![
            valid_stream(SocketType::Pub),
            encode_ready(SocketType::Router),
            encode_message(&[b"", b"ping", &[0u8; 300]]),
            [&LIBZMQ_GREETING[..], LIBZMQ_ROUTER_READY].concat(),
        ];
        for round in 0..4000 {
            let input = if round % 2 == 0 {
                let len = rng.below(400);
                rng.bytes(len)
            } else {
                // Mutate a valid stream so the parsers get past their first checks.
                let mut input = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(input.len());
                    input[at] = rng.next() as u8;
                }
                input.truncate(rng.below(input.len() + 1));
                input
            };
            exercise(&input);
            exercise(input.get(GREETING_LEN..).unwrap_or_default());
            exercise(input.get(2..).unwrap_or_default());
            exercise(input.get(7..).unwrap_or_default());
        }
    }
}
