//! The subscriptions a SUB sent, kept bounded so that a moved session can
//! subscribe the new master to the same topics ([`Track::minion`](super::Track::minion)
//! records them; the move replays [`Subscriptions::encode`]).

use crate::zmtp::FLAG_COMMAND;

/// Most distinct subscriptions kept (a Salt minion has one to three).
pub const MAX_TOPICS: usize = 64;

pub(super) const SUBSCRIBE: &[u8] = b"SUBSCRIBE";

/// The form in which a SUB sent its subscriptions (and in which they are
/// replayed): ZMTP 3.0 messages or ZMTP 3.1 commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubForm {
    Message,
    Command,
}

/// The distinct topics a SUB is subscribed to. libzmq's XSUB sends a CANCEL
/// only when its own count of a topic drops to zero, and on reconnect sends
/// each topic once: this set is what it would send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscriptions {
    topics: Vec<Vec<u8>>,
    form: Option<SubForm>,
}

// === impl Subscriptions ===

impl Subscriptions {
    /// Adds or cancels `topic`; false if the set is full.
    pub(super) fn apply(&mut self, add: bool, topic: &[u8], form: SubForm) -> bool {
        self.form = Some(form);
        let at = self.topics.iter().position(|t| t.as_slice() == topic);
        match (add, at) {
            (true, Some(_)) => true,
            (true, None) if self.topics.len() >= MAX_TOPICS => false,
            (true, None) => {
                self.topics.push(topic.to_vec());
                true
            }
            (false, Some(i)) => {
                self.topics.swap_remove(i);
                true
            }
            (false, None) => true,
        }
    }

    /// The topics, in no particular order.
    #[cfg(test)]
    pub fn topics(&self) -> impl Iterator<Item = &[u8]> {
        self.topics.iter().map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The frames that subscribe a new peer to every topic, in the form the
    /// minion used (ZMTP 3.0 messages unless it sent commands).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut body = Vec::new();
        for topic in &self.topics {
            body.clear();
            let flags = match self.form {
                Some(SubForm::Command) => {
                    body.push(SUBSCRIBE.len() as u8);
                    body.extend_from_slice(SUBSCRIBE);
                    FLAG_COMMAND
                }
                _ => {
                    body.push(1);
                    0
                }
            };
            body.extend_from_slice(topic);
            crate::zmtp::push_frame(&mut out, flags, &body);
        }
        out
    }
}
