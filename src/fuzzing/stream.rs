//! The incremental stream parser on arbitrary bytes, cut into arbitrary chunks.
//!
//! Input: byte 0 chooses the chunking, byte 1 the stanza size limit, the rest is the
//! stream as it would arrive from the socket. Checks:
//! - `feed` never panics, however the bytes are cut;
//! - the cut does not matter: the events (and whether the stream fails) are the same as
//!   when everything arrives in one call;
//! - after an error, every later call returns the same error;
//! - every stanza renders, and the rendering parses back to the same element, so what
//!   p2 logs or echoes of a peer's stanza is well-formed XML;
//! - the publish fast path (`StreamParser::read_publishes`), in the same chunks, gives
//!   the same events and the same error, but for each publish it reads, which is what
//!   `PublishIq::from_element` reads from the stanza the full parser gives; an error in
//!   a child it holds until its end arrives may come only later (here: not before the
//!   input ends).

use crate::xmpp::publish::PublishIq;
use crate::xmpp::stanza::{escape, render};
use crate::xmpp::stream::{StreamError, StreamEvent, StreamParser, DEFAULT_MAX_STANZA_BYTES};

fn limit(selector: u8) -> usize {
    match selector % 8 {
        0 => DEFAULT_MAX_STANZA_BYTES,
        1 => 0,
        2 => 1,
        3 => 64,
        4 => 200,
        5 => 1000,
        6 => 4096,
        _ => usize::MAX,
    }
}

/// Chunk sizes from a small xorshift seeded by `seed`: 0 is everything at once, 1 is
/// one byte at a time, anything else is random sizes from 1 to `seed`.
fn chunks(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut state = u32::from(seed) | 0x5a00;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + (state % u32::from(seed)) as usize;
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

fn feed_all(limit: usize, parts: &[&[u8]]) -> (Vec<StreamEvent>, Option<StreamError>) {
    feed_parser(&mut StreamParser::new(limit), parts)
}

fn feed_parser(
    parser: &mut StreamParser,
    parts: &[&[u8]],
) -> (Vec<StreamEvent>, Option<StreamError>) {
    let mut events = Vec::new();
    for part in parts {
        match parser.feed(part) {
            Ok(more) => events.extend(more),
            Err(error) => {
                assert_eq!(parser.feed(b"").unwrap_err(), error, "the error sticks");
                assert_eq!(parser.feed(b"<a/>").unwrap_err(), error, "the error sticks");
                return (events, Some(error));
            }
        }
    }
    (events, None)
}

/// Renders a stanza and parses the rendering again inside a stream whose default
/// namespace is the stanza's own, as the peer's was.
fn round_trip(stanza: &minidom::Element) {
    let text = render(stanza);
    let mut parser = StreamParser::new(usize::MAX);
    let header = format!(
        "<stream:stream xmlns='{}' xmlns:stream='http://etherx.jabber.org/streams'>",
        escape(&stanza.ns())
    );
    let mut events = parser.feed(header.as_bytes()).expect("the header parses");
    match parser.feed(text.as_bytes()) {
        Ok(more) => events.extend(more),
        Err(e) => panic!("the rendering of a stanza does not parse ({e}): {text}"),
    }
    assert_eq!(events.len(), 2, "one header and one stanza from {text}");
    match &events[1] {
        StreamEvent::Stanza(again) => {
            assert_eq!(again, stanza, "the rendering changes the stanza: {text}")
        }
        other => panic!("the rendering parses to {other:?}: {text}"),
    }
}

/// Checks one input (see the module's documentation).
pub fn stream(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let limit = limit(data[1]);
    let stream = &data[2..];

    let (events, error) = feed_all(limit, &chunks(data[0], stream));
    for event in &events {
        if let StreamEvent::Stanza(stanza) = event {
            round_trip(stanza);
        }
    }

    // The fast path: the same, publishes aside.
    let mut fast = StreamParser::new(limit);
    fast.read_publishes();
    let (fast_events, fast_error) = feed_parser(&mut fast, &chunks(data[0], stream));
    if fast_error.is_some() || error.is_none() || fast.held_bytes() == 0 {
        assert_eq!(fast_error, error, "the fast path changes the outcome");
    }
    assert_eq!(
        fast_events.len(),
        events.len(),
        "the fast path changes the events"
    );
    for (fast, full) in fast_events.iter().zip(&events) {
        match (fast, full) {
            (StreamEvent::Publish(publish), StreamEvent::Stanza(stanza)) => assert_eq!(
                PublishIq::from_element(stanza).as_ref(),
                Some(publish),
                "the fast path reads another publish"
            ),
            _ => assert_eq!(fast, full, "the fast path changes an event"),
        }
    }

    // The same bytes in one piece: the same events, the same failure.
    let (whole, whole_error) = feed_all(limit, &[stream]);
    assert_eq!(error, whole_error, "the cut changes the outcome");
    match error {
        None => assert_eq!(events, whole, "the cut changes the events"),
        // One call loses the events completed in the failing call; the cut stream keeps
        // those of its earlier calls.
        Some(_) => assert!(whole.is_empty()),
    }
}
