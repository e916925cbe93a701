//! Where the messages of a relayed ZMTP 3 stream begin and end, so that a
//! session can be moved to another master at a message boundary.
//!
//! A [`Track`] follows the bytes of one direction as they pass (the caller
//! feeds it every slice it has written on): the 64-byte greeting, then frame
//! headers — a flags octet and a 1- or 8-octet size — whose bodies it skips
//! by counting, never copying. It never allocates per message and never
//! does I/O. The minion's side ([`Track::minion`]) also keeps the few bytes a
//! new master needs to hear the same session: the minion's greeting, the
//! body of its READY command (Socket-Type, Identity), and, for a SUB or XSUB,
//! its current subscriptions ([`Subscriptions`], bounded; ZMTP 3.0 messages
//! `0x01 topic` / `0x00 topic` and ZMTP 3.1 SUBSCRIBE / CANCEL commands).
//!
//! A stream the tracker cannot follow — not ZMTP 3, a mechanism other than
//! NULL, reserved flags, a READY or subscription over the bounds — is marked
//! [`Track::unmovable`] for the rest of its life: such sessions are reset on
//! a switch, as before.

use crate::zmtp::{
    decode_greeting, ready_socket_type, Mechanism, SocketType, FLAG_COMMAND, FLAG_LONG, FLAG_MORE,
    GREETING_LEN,
};

/// Largest READY body (minion side) kept for the replay. libzmq's READY is
/// Socket-Type plus an Identity of at most 255 bytes, well under this.
pub const MAX_READY: usize = 1024;
/// Longest subscription topic kept.
pub const MAX_TOPIC: usize = 1024;

const CANCEL: &[u8] = b"CANCEL";
const READY: &[u8] = b"READY";

mod subscriptions;

use subscriptions::SUBSCRIBE;
pub use subscriptions::{SubForm, Subscriptions};

/// Which peer's bytes a [`Track`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The minion's bytes: capture READY and subscriptions.
    Minion,
    /// A master's bytes: boundaries and its greeting only.
    Master,
}

/// Where in the stream the next byte falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Greeting,
    Flags,
    Size,
    Body,
}

/// What to do with the body of the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Skip,
    /// Into `scratch`, then interpreted at the frame's end.
    Capture,
}

/// Follows one direction of a ZMTP 3 stream. See the module doc.
#[derive(Debug)]
pub struct Track {
    role: Role,
    at: At,
    greeting: [u8; GREETING_LEN],
    greeting_seen: usize,
    flags: u8,
    size: [u8; 8],
    size_need: usize,
    size_seen: usize,
    /// Body bytes of the current frame still to come.
    remaining: u64,
    /// The last complete frame had MORE: inside a multi-frame message.
    in_message: bool,
    keep: Keep,
    /// The captured body of the current frame (bounded; reused).
    scratch: Vec<u8>,
    /// The peer's READY has passed.
    ready: bool,
    /// The minion's READY body (Minion role).
    ready_body: Vec<u8>,
    socket_type: Option<SocketType>,
    subs: Subscriptions,
    /// Why this stream can no longer be followed; `None` while it can.
    unmovable: Option<&'static str>,
    /// Grows with every data frame started and every data body byte:
    /// activity that is not ZMTP's own (PING/PONG heartbeats are commands).
    data: u64,
    /// Data messages passed whole (their last frame's end).
    messages: u64,
}

// === impl Track ===

impl Track {
    /// The minion → master direction.
    pub fn minion() -> Self {
        Self::new(Role::Minion)
    }

    /// The master → minion direction.
    pub fn master() -> Self {
        Self::new(Role::Master)
    }

    fn new(role: Role) -> Self {
        Track {
            role,
            at: At::Greeting,
            greeting: [0; GREETING_LEN],
            greeting_seen: 0,
            flags: 0,
            size: [0; 8],
            size_need: 0,
            size_seen: 0,
            remaining: 0,
            in_message: false,
            keep: Keep::Skip,
            scratch: Vec::new(),
            ready: false,
            ready_body: Vec::new(),
            socket_type: None,
            subs: Subscriptions::default(),
            unmovable: None,
            data: 0,
            messages: 0,
        }
    }

    /// A tracker for a stream that is already past its handshake, at a
    /// message boundary: a master's stream after the sidecar has read (and
    /// discarded) its greeting and READY.
    pub fn master_after_handshake(greeting: [u8; GREETING_LEN]) -> Self {
        let mut t = Self::master();
        t.greeting = greeting;
        t.greeting_seen = GREETING_LEN;
        t.at = At::Flags;
        t.ready = true;
        t
    }

    /// Why the stream cannot be followed (or moved); `None` while it can.
    pub fn unmovable(&self) -> Option<&'static str> {
        self.unmovable
    }

    /// A followed minion stream has introduced itself: its ZMTP greeting
    /// and READY have passed, or it is no ZMTP stream at all (Salt's tcp
    /// transport), whose first bytes are its first request. Until then, at
    /// the session cap, it may give its slot to a newcomer (`data::admit`).
    pub fn introduced(&self) -> bool {
        self.handshaken() || self.unmovable().is_some()
    }

    /// Greeting and READY have passed and the stream can be followed.
    pub fn handshaken(&self) -> bool {
        self.ready && self.unmovable.is_none()
    }

    /// Between two messages, past the handshake: a new master may take over
    /// the stream from here.
    pub fn at_boundary(&self) -> bool {
        self.handshaken() && self.at == At::Flags && !self.in_message
    }

    /// How many bytes may be read next without passing the next message
    /// boundary: 0 at a boundary (and once unmovable: stop, the session is
    /// reset). Header octets are asked for one field at a time, bodies whole.
    pub fn to_boundary(&self) -> usize {
        if self.unmovable.is_some() || self.at_boundary() {
            return 0;
        }
        match self.at {
            At::Greeting => GREETING_LEN - self.greeting_seen,
            At::Flags => 1,
            At::Size => self.size_need - self.size_seen,
            At::Body => usize::try_from(self.remaining).unwrap_or(usize::MAX),
        }
    }

    /// The peer's 64-byte greeting, once it has passed.
    pub fn greeting(&self) -> Option<&[u8; GREETING_LEN]> {
        (self.greeting_seen == GREETING_LEN).then_some(&self.greeting)
    }

    /// ZMTP minor version the peer announced (0 for 3.0, 1 for 3.1).
    pub fn minor(&self) -> Option<u8> {
        self.greeting().map(|g| g[11])
    }

    /// The minion's READY command body (Minion role, once it has passed).
    pub fn ready_body(&self) -> Option<&[u8]> {
        (self.ready && self.role == Role::Minion).then_some(self.ready_body.as_slice())
    }

    /// The socket type the peer announced in its READY.
    #[cfg(test)]
    pub fn socket_type(&self) -> Option<SocketType> {
        self.socket_type
    }

    /// The minion's current subscriptions (SUB/XSUB only; empty otherwise).
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subs
    }

    /// A counter that grows when data (not a command such as a ZMTP
    /// heartbeat) passes: compare two readings to tell whether a stretch of
    /// bytes carried any. Frozen once the stream is unmovable.
    pub fn data_seen(&self) -> u64 {
        self.data
    }

    /// A counter of the data messages that passed whole (heartbeats and
    /// other commands are not counted): a minion's request has been sent
    /// once it grows on the ret port. Frozen once the stream is unmovable.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Follows `bytes`, the next bytes of the stream. Stops looking once the
    /// stream is unmovable.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() && self.unmovable.is_none() {
            rest = match self.at {
                At::Greeting => self.feed_greeting(rest),
                At::Flags => self.feed_flags(rest),
                At::Size => self.feed_size(rest),
                At::Body => self.feed_body(rest),
            };
        }
    }

    fn feed_greeting<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let take = (GREETING_LEN - self.greeting_seen).min(bytes.len());
        let (now, rest) = bytes.split_at(take);
        if let Some(slot) = self
            .greeting
            .get_mut(self.greeting_seen..self.greeting_seen + take)
        {
            slot.copy_from_slice(now);
        }
        self.greeting_seen += take;
        // Fail fast: a stream that is not ZMTP 3 shows it in its first byte
        // (Salt's tcp transport, garbage) or by its version octet.
        let seen = self.greeting.get(..self.greeting_seen).unwrap_or_default();
        if self.greeting_seen < GREETING_LEN && decode_greeting(seen).is_err() {
            self.give_up("not a ZMTP 3 greeting");
        } else if self.greeting_seen == GREETING_LEN {
            match decode_greeting(&self.greeting) {
                Ok(Some(g)) if g.major == 3 && g.mechanism == Mechanism::Null => {
                    self.at = At::Flags;
                }
                Ok(Some(g)) if g.major != 3 => self.give_up("not ZMTP 3"),
                Ok(_) => self.give_up("security mechanism is not NULL"),
                Err(_) => self.give_up("not a ZMTP 3 greeting"),
            }
        }
        rest
    }

    fn feed_flags<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let Some((&flags, rest)) = bytes.split_first() else {
            return bytes;
        };
        if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
            self.give_up("reserved frame flag bits");
            return rest;
        }
        self.flags = flags;
        self.size_need = if flags & FLAG_LONG != 0 { 8 } else { 1 };
        self.size_seen = 0;
        self.at = At::Size;
        rest
    }

    fn feed_size<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let take = (self.size_need - self.size_seen).min(bytes.len());
        let (now, rest) = bytes.split_at(take);
        if let Some(slot) = self.size.get_mut(self.size_seen..self.size_seen + take) {
            slot.copy_from_slice(now);
        }
        self.size_seen += take;
        if self.size_seen == self.size_need {
            self.remaining = if self.size_need == 8 {
                u64::from_be_bytes(self.size)
            } else {
                u64::from(self.size[0])
            };
            self.start_frame();
            if self.remaining == 0 {
                self.end_frame();
            } else {
                self.at = At::Body;
            }
        }
        rest
    }

    fn feed_body<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let take = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (now, rest) = bytes.split_at(take);
        if !self.is_command() {
            self.data += take as u64;
        }
        if self.keep == Keep::Capture {
            self.scratch.extend_from_slice(now);
        }
        self.remaining -= take as u64;
        if self.remaining == 0 {
            self.end_frame();
        }
        rest
    }

    fn is_command(&self) -> bool {
        self.flags & FLAG_COMMAND != 0
    }

    /// Decides, from the header, whether the body is needed.
    fn start_frame(&mut self) {
        self.keep = Keep::Skip;
        self.scratch.clear();
        let command = self.is_command();
        if !command {
            self.data += 1;
        }
        if command && self.flags & FLAG_MORE != 0 {
            return self.give_up("command frame with MORE");
        }
        if !self.ready {
            // NULL mechanism: the first frame must be the READY command.
            if !command {
                return self.give_up("data before READY");
            }
            if self.remaining > MAX_READY as u64 {
                return self.give_up("READY too large");
            }
            self.keep = Keep::Capture;
            return;
        }
        if self.role != Role::Minion || !self.is_subscriber() {
            return;
        }
        // A subscriber's single-frame messages and its commands may be
        // subscriptions; anything else it sends is passed on unread.
        let candidate = command || (self.flags & FLAG_MORE == 0 && !self.in_message);
        if candidate {
            if self.remaining > (MAX_TOPIC + 1 + SUBSCRIBE.len()) as u64 {
                return self.give_up("subscription too long");
            }
            self.keep = Keep::Capture;
        }
    }

    fn end_frame(&mut self) {
        self.at = At::Flags;
        let command = self.is_command();
        if !command {
            self.in_message = self.flags & FLAG_MORE != 0;
            if !self.in_message {
                self.messages += 1;
            }
        }
        if self.keep == Keep::Capture {
            self.keep = Keep::Skip;
            let body = std::mem::take(&mut self.scratch);
            self.interpret(command, &body);
            self.scratch = body;
            self.scratch.clear();
        }
    }

    /// A captured frame: READY, or a subscription change.
    fn interpret(&mut self, command: bool, body: &[u8]) {
        if !self.ready {
            let Some((name, data)) = command_parts(body) else {
                return self.give_up("malformed command");
            };
            if name != READY {
                return self.give_up("first command is not READY");
            }
            match ready_socket_type(data) {
                Ok(t) => self.socket_type = Some(t),
                Err(_) => return self.give_up("READY without a valid Socket-Type"),
            }
            if self.role == Role::Minion {
                self.ready_body.clear();
                self.ready_body.extend_from_slice(body);
            }
            self.ready = true;
            return;
        }
        let change = if command {
            match command_parts(body) {
                Some((SUBSCRIBE, topic)) => Some((true, topic, SubForm::Command)),
                Some((CANCEL, topic)) => Some((false, topic, SubForm::Command)),
                _ => None, // PING, PONG, ...
            }
        } else {
            match body.split_first() {
                Some((1, topic)) => Some((true, topic, SubForm::Message)),
                Some((0, topic)) => Some((false, topic, SubForm::Message)),
                _ => None,
            }
        };
        if let Some((add, topic, form)) = change {
            if !self.subs.apply(add, topic, form) {
                self.give_up("too many subscriptions");
            }
        }
    }

    fn is_subscriber(&self) -> bool {
        matches!(self.socket_type, Some(SocketType::Sub | SocketType::XSub))
    }

    fn give_up(&mut self, why: &'static str) {
        self.unmovable = Some(why);
        self.scratch = Vec::new();
    }
}

/// Both directions of one minion session, kept across the masters it is
/// moved between.
#[derive(Debug)]
pub struct Tracks {
    /// Minion → master: the minion's greeting, READY and subscriptions.
    pub up: Track,
    /// Master → minion: the current master's stream.
    pub down: Track,
}

impl Default for Tracks {
    fn default() -> Self {
        Tracks {
            up: Track::minion(),
            down: Track::master(),
        }
    }
}

/// A command body split into name and data.
fn command_parts(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = body.split_first()?;
    rest.split_at_checked(usize::from(len))
}

#[cfg(test)]
mod tests {
    use super::subscriptions::MAX_TOPICS;
    use super::*;
    use crate::zmtp::{encode_message, encode_ready, greeting_null};

    fn greeting(minor: u8) -> Vec<u8> {
        let mut g = greeting_null(false).to_vec();
        g[11] = minor;
        g
    }

    fn command(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(data);
        let mut out = Vec::new();
        crate::zmtp::push_frame(&mut out, FLAG_COMMAND, &body);
        out
    }

    /// Feeds `stream` in chunks of the given sizes (cycled), asserting the
    /// boundary state after each chunk against `boundaries` (offsets at which
    /// the stream is between messages).
    fn feed_chunked(t: &mut Track, stream: &[u8], sizes: &[usize], boundaries: &[usize]) {
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = sizes[i % sizes.len()].max(1).min(stream.len() - at);
            i += 1;
            // Never read past the next boundary when asked not to.
            t.feed(&stream[at..at + n]);
            at += n;
            assert_eq!(
                t.at_boundary(),
                boundaries.contains(&at),
                "at offset {at} of {}",
                stream.len()
            );
        }
    }

    /// A DEALER's handshake and a few messages, short and long, multi-part,
    /// with commands between them; returns the stream and its boundaries.
    fn dealer_stream() -> (Vec<u8>, Vec<usize>) {
        let mut s = greeting(1);
        let mut ready = encode_ready(SocketType::Dealer);
        // Turn it into a READY with an Identity too.
        let mut body = ready[2..].to_vec();
        body.extend_from_slice(b"\x08Identity\x00\x00\x00\x04abcd");
        ready.clear();
        crate::zmtp::push_frame(&mut ready, FLAG_COMMAND, &body);
        s.extend_from_slice(&ready);
        let mut b = vec![s.len()];
        let big = vec![7u8; 300];
        let huge = vec![9u8; 70_000];
        for msg in [
            encode_message(&[b"", b"ping 1"]),
            command(b"PING", b"\x00\x0a"),
            encode_message(&[b"", &big, b"x"]),
            encode_message(&[&huge]),
            encode_message(&[b""]),
        ] {
            s.extend_from_slice(&msg);
            b.push(s.len());
        }
        (s, b)
    }

    #[test]
    fn boundaries_are_found_whatever_the_chunking() {
        let (stream, boundaries) = dealer_stream();
        for sizes in [
            &[1][..],
            &[2],
            &[3, 1, 7],
            &[64],
            &[65, 9, 1000],
            &[100_000],
            &[13, 8191, 2, 1],
        ] {
            let mut t = Track::minion();
            feed_chunked(&mut t, &stream, sizes, &boundaries);
            assert!(t.at_boundary(), "{sizes:?}");
            assert_eq!(t.socket_type(), Some(SocketType::Dealer));
            let ready = t.ready_body().expect("READY captured");
            assert!(ready.starts_with(b"\x05READY"));
            assert!(ready.ends_with(b"Identity\x00\x00\x00\x04abcd"));
            assert!(t.subscriptions().is_empty(), "a DEALER has none");
        }
    }

    #[test]
    fn heartbeats_are_not_data() {
        let (stream, boundaries) = dealer_stream();
        let mut t = Track::minion();
        // Up to the end of the handshake (greeting and READY: commands).
        t.feed(&stream[..boundaries[0]]);
        let start = t.data_seen();
        t.feed(&command(b"PING", b"\x00\x0a"));
        t.feed(&command(b"PONG", b""));
        assert_eq!(t.data_seen(), start, "PING/PONG moved the data counter");
        t.feed(&encode_message(&[b""]));
        let empty = t.data_seen();
        assert!(empty > start, "an empty data frame is data");
        t.feed(&encode_message(&[b"", b"return"]));
        assert!(t.data_seen() > empty);
    }

    #[test]
    fn whole_data_messages_are_counted_and_commands_are_not() {
        let (stream, boundaries) = dealer_stream();
        let mut t = Track::minion();
        t.feed(&stream[..boundaries[0]]);
        assert_eq!(t.messages(), 0, "greeting and READY are no message");
        // A two-frame message counts once, at its last frame's last byte.
        let msg = encode_message(&[b"", b"a request"]);
        t.feed(&msg[..msg.len() - 1]);
        assert_eq!(t.messages(), 0, "not whole yet");
        t.feed(&msg[msg.len() - 1..]);
        assert_eq!(t.messages(), 1);
        t.feed(&command(b"PING", b"\x00\x0a"));
        assert_eq!(t.messages(), 1, "a heartbeat is no message");
        t.feed(&stream[boundaries[0]..]);
        assert_eq!(t.messages(), 1 + 4, "the stream's four messages");
    }

    #[test]
    fn reading_to_boundary_never_passes_one() {
        let (stream, boundaries) = dealer_stream();
        let mut t = Track::minion();
        let mut at = 0;
        // Stop at every boundary in turn: read only what to_boundary allows.
        while at < stream.len() {
            let n = t.to_boundary();
            if n == 0 {
                assert!(boundaries.contains(&at), "stopped at {at}, not a boundary");
                t.feed(&stream[at..at + 1]); // move on past it
                at += 1;
                continue;
            }
            let n = n.min(stream.len() - at);
            t.feed(&stream[at..at + n]);
            at += n;
            if t.at_boundary() {
                assert!(boundaries.contains(&at), "boundary claimed at {at}");
            }
        }
        for b in &boundaries {
            assert!(*b <= stream.len());
        }
    }

    #[test]
    fn the_handshake_is_not_a_boundary_and_a_partial_frame_is_not() {
        let (stream, boundaries) = dealer_stream();
        let mut t = Track::minion();
        t.feed(&stream[..64]);
        assert!(!t.at_boundary(), "after the greeting only");
        assert_eq!(t.to_boundary(), 1);
        t.feed(&stream[64..boundaries[0]]);
        assert!(t.at_boundary());
        t.feed(&stream[boundaries[0]..boundaries[0] + 3]);
        assert!(!t.at_boundary(), "inside the first message");
        assert_eq!(t.unmovable(), None);
    }

    #[test]
    fn a_long_size_is_read_in_full_before_the_body() {
        let mut t = Track::master_after_handshake(greeting_null(false));
        let frame = encode_message(&[&[5u8; 256]]);
        assert_eq!(frame[0], FLAG_LONG);
        t.feed(&frame[..1]);
        assert_eq!(t.to_boundary(), 8, "the eight size octets");
        t.feed(&frame[1..5]);
        assert_eq!(t.to_boundary(), 4);
        t.feed(&frame[5..9]);
        assert_eq!(t.to_boundary(), 256, "then the whole body");
        t.feed(&frame[9..]);
        assert!(t.at_boundary());
    }

    #[test]
    fn subscriptions_of_zmtp_3_0_messages_are_kept_as_a_set() {
        let mut s = greeting(0);
        s.extend_from_slice(&encode_ready(SocketType::Sub));
        for m in [
            &b"\x01"[..],
            b"\x01broadcast",
            b"\x01broadcast",
            b"\x01abc",
            b"\x00abc",
            b"\x00never",
        ] {
            s.extend_from_slice(&encode_message(&[m]));
        }
        let mut t = Track::minion();
        for chunk in s.chunks(5) {
            t.feed(chunk);
        }
        assert!(t.at_boundary());
        let mut topics: Vec<&[u8]> = t.subscriptions().topics().collect();
        topics.sort();
        assert_eq!(topics, vec![&b""[..], b"broadcast"]);
        // Replayed as ZMTP 3.0 messages, each topic once.
        let replay = t.subscriptions().encode();
        let mut again = Track::minion();
        again.feed(&greeting(0));
        again.feed(&encode_ready(SocketType::Sub));
        again.feed(&replay);
        assert_eq!(again.subscriptions(), t.subscriptions());
        assert_eq!(replay.len(), 2 + 1 + 2 + 10);
    }

    #[test]
    fn subscriptions_of_zmtp_3_1_commands_are_kept_and_replayed_as_commands() {
        let mut s = greeting(1);
        s.extend_from_slice(&encode_ready(SocketType::Sub));
        s.extend_from_slice(&command(b"SUBSCRIBE", b""));
        s.extend_from_slice(&command(b"PING", b"\x00\x00"));
        s.extend_from_slice(&command(b"SUBSCRIBE", b"t1"));
        s.extend_from_slice(&command(b"CANCEL", b""));
        let mut t = Track::minion();
        t.feed(&s);
        let topics: Vec<&[u8]> = t.subscriptions().topics().collect();
        assert_eq!(topics, vec![&b"t1"[..]]);
        assert_eq!(t.subscriptions().encode(), command(b"SUBSCRIBE", b"t1"));
    }

    #[test]
    fn a_dealer_message_that_looks_like_a_subscription_is_not_one() {
        let mut s = greeting(0);
        s.extend_from_slice(&encode_ready(SocketType::Dealer));
        s.extend_from_slice(&encode_message(&[b"\x01topic"]));
        let mut t = Track::minion();
        t.feed(&s);
        assert!(t.subscriptions().is_empty());
        assert!(t.at_boundary());
    }

    #[test]
    fn what_cannot_be_followed_is_unmovable() {
        let mut curve = greeting_null(false);
        curve[12..17].copy_from_slice(b"CURVE");
        let mut t = Track::minion();
        t.feed(&curve);
        assert_eq!(t.unmovable(), Some("security mechanism is not NULL"));
        assert!(!t.at_boundary());
        assert_eq!(t.to_boundary(), 0);

        let mut t = Track::minion();
        t.feed(b"\x00\x00\x00\x00{\"salt tcp transport\"}");
        assert!(t.unmovable().is_some(), "Salt's tcp transport");

        let mut t = Track::minion();
        t.feed(&greeting(1));
        t.feed(&encode_message(&[b"data first"]));
        assert_eq!(t.unmovable(), Some("data before READY"));

        let mut t = Track::minion();
        t.feed(&greeting(1));
        t.feed(&encode_ready(SocketType::Sub));
        t.feed(&[0x80, 0x00]);
        assert_eq!(t.unmovable(), Some("reserved frame flag bits"));

        let mut t = Track::minion();
        t.feed(&greeting(1));
        t.feed(&encode_ready(SocketType::Sub));
        for i in 0..=MAX_TOPICS {
            t.feed(&encode_message(&[format!("\x01topic{i}").as_bytes()]));
        }
        assert_eq!(t.unmovable(), Some("too many subscriptions"));
    }
}
