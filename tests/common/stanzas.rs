//! The real stanzas of PROTOCOL.md (`tests/fixtures/stanzas/`), and the few changes a
//! test makes to them: another sender, id, node, secret, token or device.

pub const CONVERSATIONS_REGISTER: &str =
    include_str!("../fixtures/stanzas/conversations-register.xml");
pub const CONVERSATIONS_UNREGISTER: &str =
    include_str!("../fixtures/stanzas/conversations-unregister.xml");
pub const REGISTRATION_RESULT: &str = include_str!("../fixtures/stanzas/registration-result.xml");
pub const PROSODY_PUBLISH: &str = include_str!("../fixtures/stanzas/prosody-publish.xml");
pub const EJABBERD_PUBLISH: &str = include_str!("../fixtures/stanzas/ejabberd-publish.xml");
pub const EJABBERD_PUBLISH_EMPTY: &str =
    include_str!("../fixtures/stanzas/ejabberd-publish-empty.xml");
pub const DISCO_INFO: &str = include_str!("../fixtures/stanzas/disco-info.xml");
pub const DISCO_ITEMS: &str = include_str!("../fixtures/stanzas/disco-items-commands.xml");
pub const PING: &str = include_str!("../fixtures/stanzas/ping.xml");
pub const VERSION: &str = include_str!("../fixtures/stanzas/version.xml");

/// The registrations the publishes of PROTOCOL.md §5 go to: (domain, node, secret).
pub const PROSODY_NODE: (&str, &str, &str) =
    ("localhost", "4VS_xOP4xeyO", "G4yJr4P6XSecKI6H4Jt8AxUm");
pub const EJABBERD_NODE: (&str, &str, &str) =
    ("localhost", "0uPKy41C8ea0", "krZM6bbFugBicqBPV2fq5ZAc");

/// `stanza` with its `from` replaced.
pub fn with_from(stanza: &str, from: &str) -> String {
    replace_attr(stanza, "from", from)
}

/// `stanza` with its first `name='…'` attribute replaced.
pub fn replace_attr(stanza: &str, name: &str, value: &str) -> String {
    let start = stanza.find(&format!(" {name}='")).expect("attribute") + name.len() + 3;
    let end = start + stanza[start..].find('\'').unwrap();
    format!("{}{}{}", &stanza[..start], value, &stanza[end..])
}

/// `stanza` with its `id` replaced.
pub fn with_id(stanza: &str, id: &str) -> String {
    replace_attr(stanza, "id", id)
}

/// A publish of PROTOCOL.md (`template`) sent by `domain` to `node` with `secret`.
pub fn publish_to(template: &str, domain: &str, node: &str, secret: &str) -> String {
    let (_, old_node, old_secret) = if template.contains(PROSODY_NODE.1) {
        PROSODY_NODE
    } else {
        EJABBERD_NODE
    };
    with_from(template, domain)
        .replace(&format!("node='{old_node}'"), &format!("node='{node}'"))
        .replace(
            &format!("<value>{old_secret}</value>"),
            &format!("<value>{secret}</value>"),
        )
}

/// The Conversations registration from `from` for `device` with `token`.
pub fn register_as(from: &str, device: &str, token: &str) -> String {
    with_from(CONVERSATIONS_REGISTER, from)
        .replace(
            "<value>FCM-TOKEN</value>",
            &format!("<value>{token}</value>"),
        )
        .replace(
            "<value>92afd7a91cdba9a0</value>",
            &format!("<value>{device}</value>"),
        )
}

/// The Conversations unregistration from `from` for `device`.
pub fn unregister_as(from: &str, device: &str) -> String {
    with_from(CONVERSATIONS_UNREGISTER, from).replace(
        "<value>92afd7a91cdba9a0</value>",
        &format!("<value>{device}</value>"),
    )
}

/// A data-form field with one value, as clients send it.
pub fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// The Conversations command of PROTOCOL.md §4 with another command `node` and form
/// `fields` (any of `field`), from `from` to `to`, with `id`.
pub fn command(from: &str, to: &str, id: &str, node: &str, fields: &str) -> String {
    format!(
        "<iq type='set' from='{from}' to='{to}' id='{id}'><command \
         xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></command></iq>"
    )
}
