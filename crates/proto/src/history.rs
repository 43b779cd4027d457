//! Conversions between topic history's wire messages and the engine's types (see
//! `lockstep_core::history`).

use lockstep_core::history::{Gap, Keep, Replay, TopicView};
use lockstep_core::io::Request;

use crate::v1;

/// The session requests of topic history; `None` for any other message.
pub fn request(kind: v1::client_message::Kind) -> Option<Request> {
    use v1::client_message::Kind;
    use v1::subscribe::Replay as R;
    Some(match kind {
        Kind::Subscribe(s) => Request::Subscribe {
            pattern: s.pattern,
            replay: match s.replay {
                None => Replay::None,
                Some(R::Last(n)) => Replay::Last(n),
                Some(R::SinceSeq(s)) => Replay::SinceSeq(s),
                Some(R::SinceTimeMs(t)) => Replay::SinceTime(t),
            },
        },
        Kind::Unsubscribe(u) => Request::Unsubscribe { pattern: u.pattern },
        _ => return None,
    })
}

/// A replay as the wire's `Subscribe.replay`.
pub fn replay(r: Replay) -> Option<v1::subscribe::Replay> {
    use v1::subscribe::Replay as R;
    match r {
        Replay::None => None,
        Replay::Last(n) => Some(R::Last(n)),
        Replay::SinceSeq(s) => Some(R::SinceSeq(s)),
        Replay::SinceTime(t) => Some(R::SinceTimeMs(t)),
    }
}

/// A gap notice on the wire.
pub fn gap(g: &Gap) -> v1::HistoryGap {
    v1::HistoryGap { topic: g.topic.to_string(), first_seq: g.first, last_seq: g.last }
}

/// A retained topic on the wire.
pub fn topic_info(t: &TopicView) -> v1::TopicInfo {
    v1::TopicInfo {
        topic: t.topic.clone(),
        messages: t.messages,
        bytes: t.bytes,
        first_seq: t.first_seq,
        last_seq: t.last_seq,
        rule: t.rule.clone(),
        stored: t.keep == Keep::Store,
    }
}
