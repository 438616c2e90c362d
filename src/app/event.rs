//! What crosses the core's boundary: the events it reads, the jobs it hands to the
//! workers, and the provider names they share.

use crate::xmpp::publish::PublishIq;
use crate::xmpp::stream::SkipReason;
use minidom::Element;

use crate::push::{Outcome, PushMessage};

/// A connection generation: increases with every successful handshake. The connection
/// thread numbers them from 1, so generation 0 is never a live connection.
pub type Gen = u64;

/// What reaches the core thread.
#[derive(Debug)]
pub enum Event {
    /// A connection completed its handshake; replies may go to it.
    Connected(Gen),
    /// That connection is gone; pending replies for it are dropped.
    Disconnected(Gen),
    /// A top-level element received on that connection.
    Stanza(Gen, Element),
    /// Several, in order (what one read from the socket completed).
    Stanzas(Gen, Vec<Received>),
    /// A top-level element over the size or nesting limit, skipped by the parser.
    Oversized(Gen, Oversized),
    /// A worker finished job `job`.
    PushDone {
        /// The job id given in [`Job::id`].
        job: u64,
        /// What the provider said.
        outcome: Outcome,
    },
    /// Stop: no more events will be handled.
    Shutdown,
}

/// A top-level element as the connection thread hands it on.
#[derive(Debug)]
pub enum Received {
    /// Any element, as minidom built it.
    Element(Element),
    /// A publish, read by the stream parser's fast path: what
    /// [`PublishIq::from_element`] reads from the element the same bytes make.
    Publish(PublishIq),
}

impl Received {
    /// Its `id` attribute (for tests and logs).
    pub fn id(&self) -> Option<&str> {
        match self {
            Received::Element(el) => el.attr("id"),
            Received::Publish(p) => Some(&p.id),
        }
    }
}

/// What is known of a stanza skipped for its size: its start tag's addressing, when
/// the start tag itself fitted within the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// Its local name (`iq`, `message`, …).
    pub name: String,
    /// Its `id`.
    pub id: Option<String>,
    /// Its `from`.
    pub from: Option<String>,
    /// Its `to`.
    pub to: Option<String>,
    /// Its `type`.
    pub kind: Option<String>,
    /// The size limit in force, in bytes.
    pub limit: usize,
    /// Why it was skipped: its size, its depth, or a namespace error.
    pub why: SkipReason,
}

/// A push provider known to p2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Firebase Cloud Messaging (HTTP v1).
    Fcm,
    /// Apple Push Notification service.
    Apns,
}

impl Service {
    /// The name used in command nodes and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Fcm => "fcm",
            Service::Apns => "apns",
        }
    }

    /// The service named in a command node or a stored row.
    pub fn from_name(name: &str) -> Option<Service> {
        match name {
            "fcm" => Some(Service::Fcm),
            "apns" => Some(Service::Apns),
            _ => None,
        }
    }

    /// The name for people: `FCM`, `APNs`.
    pub fn display_name(self) -> &'static str {
        match self {
            Service::Fcm => "FCM",
            Service::Apns => "APNs",
        }
    }
}

/// A push for a worker.
#[derive(Debug, Clone)]
pub struct Job {
    /// Identifies the outcome coming back.
    pub id: u64,
    /// Which provider.
    pub service: Service,
    /// The account domain the push is for (the publishing server's), for sharing the
    /// workers fairly between domains.
    pub domain: String,
    /// What to send.
    pub message: PushMessage,
}

/// Hands a job to the worker pool; gives it back when the queue is full.
pub type Submit = Box<dyn FnMut(Job) -> Result<(), Job> + Send>;
