//! PROTOCOL.md §3: disco#info, disco#items (the commands usable now), version.

use super::{reply, App, Reply, Service};
use crate::xmpp::stanza::StanzaError;
use crate::xmpp::{disco, ns};

/// `jabber:iq:version`: name and version.
pub(super) fn version() -> Reply {
    Reply::Now(Some(disco::version("p2", env!("CARGO_PKG_VERSION"))))
}

impl App {
    /// The commands usable now: `(node, name)`, two per configured service.
    fn commands(&self) -> Vec<(String, String)> {
        let mut list = Vec::new();
        for s in &self.services {
            let name = Service::display_name(*s);
            list.push((
                format!("register-push-{}", s.as_str()),
                format!("Register a device for {name} push"),
            ));
            list.push((
                format!("unregister-push-{}", s.as_str()),
                format!("Unregister a device from {name} push"),
            ));
        }
        list
    }

    /// disco#info: the component, or one of its command nodes.
    pub(super) fn disco_info(&self, node: Option<&str>) -> Result<Reply, StanzaError> {
        match node {
            None => Ok(Reply::Now(Some(disco::component_info()))),
            Some(node) => match self.commands().into_iter().find(|(n, _)| n == node) {
                Some((node, name)) => Ok(Reply::Now(Some(disco::command_info(&node, &name)))),
                None => Err(reply::no_such_node()),
            },
        }
    }

    /// disco#items: nothing at the top, the commands under the commands node.
    pub(super) fn disco_items(&self, node: Option<&str>) -> Result<Reply, StanzaError> {
        match node {
            None => Ok(Reply::Now(Some(disco::no_items(None)))),
            Some(ns::COMMANDS) => {
                let commands = self.commands();
                let list: Vec<(&str, &str)> = commands
                    .iter()
                    .map(|(n, name)| (n.as_str(), name.as_str()))
                    .collect();
                Ok(Reply::Now(Some(disco::command_items(&self.jid, &list))))
            }
            Some(_) => Err(reply::no_such_node()),
        }
    }
}
