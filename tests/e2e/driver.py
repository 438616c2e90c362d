#!/usr/bin/env python3
"""Drives one real XMPP server with p2 as its component, through real client sessions.

User A plays the phone (Conversations): it registers with p2 through the ad-hoc command,
enables push on its own server and goes offline. User B sends it messages. The FCM
stand-in records what p2 sends; the server's log and p2's log say what happened to each
publish in between.

Prints one line per check, `PASS SERVER: CHECK` or `FAIL SERVER: CHECK: reason`, and
exits 1 if any check failed. Every wait is bounded.
"""

import argparse
import asyncio
import hashlib
import json
import logging
import re
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"

DOMAIN = "localhost"
ANDROID_ID = "e2e0a1b2c3d4e5f6"
TOKEN = "fcm-token-e2e-" + "x" * 40
IQ_TIMEOUT = 10
# How long a push takes at most to reach the stand-in (p2's deadline is 3 s).
PUSH_WAIT = 10

# What each server logs about the reply to its publish (debug level). {node} is the node.
SERVER_LOG = {
    "prosody": {
        # mod_cloud_notify says nothing of a result while the error count is zero; the
        # component session logs the result arriving, with the publish's 64-hex id.
        # Prosody writes the attributes in no fixed order.
        "result": r"Sending \w+ push notification for alice@localhost to push\.localhost \({node}\)\n"
                  r"(?:.*\n)*?.*Received\[component\]: <iq(?=[^>]*type='result')"
                  r"(?=[^>]*from='push\.localhost')(?=[^>]*to='localhost')(?=[^>]*id='[0-9a-f]{{64}}')",
        "wait": r"Got error <wait:internal-server-error:[^>]*> for identifier "
                r"'push\.localhost<{node}': NOT increasing",
        "error": r"Got error <{type}:{condition}:[^>]*> for identifier 'push\.localhost<{node}'",
        "disabled": r"Disabling push notifications for identifier 'push\.localhost<{node}'",
        "policy": r"Got error <wait:policy-violation:[^>]*> for identifier "
                  r"'push\.localhost<{node}': NOT increasing",
    },
    "ejabberd": {
        "result": r"push\.localhost accepted notification for alice@localhost \({node}\)",
        "wait": r"push\.localhost rejected notification for alice@localhost \({node}\) temporarily",
        "error": r"push\.localhost rejected notification for alice@localhost \({node}\), "
                 r"disabling push: .*\({condition}\) \({type}\)",
        "disabled": r"push\.localhost rejected notification for alice@localhost \({node}\), "
                    r"disabling push",
        "policy": r"push\.localhost rejected notification for alice@localhost \({node}\) temporarily",
    },
}


def sha1hex(text):
    return hashlib.sha1(text.encode()).hexdigest()


class CheckFailed(Exception):
    pass


def expect(cond, reason):
    if not cond:
        raise CheckFailed(reason)


class LogWatch:
    """Reads what a log file gained since a mark."""

    def __init__(self, path):
        self.path = path

    def size(self):
        try:
            with open(self.path, "rb") as f:
                return f.seek(0, 2)
        except FileNotFoundError:
            return 0

    def since(self, mark):
        try:
            with open(self.path, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for(self, mark, pattern, timeout):
        """The first match of `pattern` written after `mark`, or None after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.since(mark))
            if m or time.monotonic() > deadline:
                return m
            await asyncio.sleep(0.1)


class StandIn:
    def __init__(self, url):
        self.url = url

    def _call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    async def mode(self, mode):
        await asyncio.to_thread(self._call, "PUT", "/_e2e/mode", mode.encode())

    async def sends(self):
        return await asyncio.to_thread(self._call, "GET", "/_e2e/sends")

    async def wait_sends(self, count, timeout):
        """The sends once there are at least `count`, or all of them after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            sends = await self.sends()
            if len(sends) >= count or time.monotonic() > deadline:
                return sends
            await asyncio.sleep(0.1)


class Client(slixmpp.ClientXMPP):
    """A client session on plaintext loopback that sends hand-written stanzas."""

    def __init__(self, jid, password):
        # Loopback only, no TLS: let SCRAM run on the plaintext stream.
        super().__init__(jid, password,
                         plugin_config={"feature_mechanisms": {"unencrypted_scram": True}})
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        # Answers pings while online, so that an error proves the session gone.
        self.register_plugin("xep_0199")

    async def start(self, port):
        failed = asyncio.get_running_loop().create_future()

        def on_fail(*_):
            if not failed.done():
                failed.set_result(True)

        self.add_event_handler("failed_auth", on_fail)
        self.add_event_handler("connection_failed", on_fail)
        self.connect("127.0.0.1", port)
        started = asyncio.ensure_future(self.wait_until("session_start", IQ_TIMEOUT))
        done, _ = await asyncio.wait({started, failed}, timeout=IQ_TIMEOUT + 1,
                                     return_when=asyncio.FIRST_COMPLETED)
        if started not in done or started.exception():
            started.cancel()
            self.abort()
            raise CheckFailed(f"{self.boundjid.bare} could not log in")

    async def stop(self):
        try:
            await asyncio.wait_for(self.disconnect(wait=3), 5)
        except asyncio.TimeoutError:
            self.abort()

    async def iq(self, kind, to, payload):
        """Sends an IQ with the raw `payload`; returns the reply's XML or raises IqError."""
        iq = self.make_iq_set(ito=to) if kind == "set" else self.make_iq_get(ito=to)
        iq.append(ET.fromstring(payload))
        try:
            reply = await iq.send(timeout=IQ_TIMEOUT)
        except IqTimeout:
            raise CheckFailed(f"no reply from {to or 'own server'} within {IQ_TIMEOUT} s")
        return reply.xml


def error_of(exc):
    """(type, condition, text) of an IqError."""
    err = exc.iq["error"]
    return err["type"], err["condition"], err["text"]


def form_values(command):
    values = {}
    x = command.find(f"{{{NS_DATA}}}x")
    if x is None:
        return values
    for field in x.findall(f"{{{NS_DATA}}}field"):
        value = field.find(f"{{{NS_DATA}}}value")
        values[field.get("var")] = value.text if value is not None else None
    return values


def device_command(node, token=None, android_id=ANDROID_ID):
    """The command Conversations sends (PROTOCOL.md §4): execute, a submit form, no FORM_TYPE."""
    fields = ""
    if token is not None:
        fields += f"<field var='token'><value>{escape(token)}</value></field>"
    fields += f"<field var='android-id'><value>{escape(android_id)}</value></field>"
    return (
        f"<command xmlns='{NS_COMMANDS}' node='{node}' action='execute'>"
        f"<x xmlns='{NS_DATA}' type='submit'>{fields}</x></command>"
    )


def enable_payload(push_jid, node, secret):
    return (
        f"<enable xmlns='{NS_PUSH}' jid={quoteattr(push_jid)} node={quoteattr(node)}>"
        f"<x xmlns='{NS_DATA}' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
        f"<field var='secret'><value>{escape(secret)}</value></field>"
        "</x></enable>"
    )


class Scenario:
    def __init__(self, args):
        self.server = args.server
        self.port = args.c2s_port
        self.push_jid = args.push_jid
        self.coalesce = args.coalesce_ms / 1000
        self.standin = StandIn(args.standin)
        self.server_log = LogWatch(args.server_log)
        self.daemon_log = LogWatch(args.daemon_log)
        self.patterns = SERVER_LOG[args.server]
        self.alice = f"alice@{DOMAIN}"
        self.bob = f"bob@{DOMAIN}"
        self.passwords = {"alice": args.alice_password, "bob": args.bob_password}
        self.device = sha1hex(self.alice + "\0" + ANDROID_ID)
        self.node = None
        self.secret = None
        self.secrets_seen = set()
        self.sender = None
        self.message_no = 0
        self.failed = 0
        self.passed = 0
        self.done = []
        # Every session of the run, kept until the end: a client collected while its
        # tasks are pending makes asyncio complain in the middle of the output.
        self.clients = []

    def report(self, name, error=None):
        if error is None:
            self.passed += 1
            print(f"PASS {self.server}: {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {self.server}: {name}: {error}", flush=True)

    def pattern(self, key, **kw):
        return self.patterns[key].format(**{k: re.escape(v) for k, v in kw.items()})

    # --- sessions -------------------------------------------------------------------

    async def phone(self):
        """A fresh session of user A (the phone)."""
        a = Client(self.alice + "/phone", self.passwords["alice"])
        self.clients.append(a)
        await a.start(self.port)
        return a

    async def offline(self, a):
        """Ends A's session and waits until the server no longer routes to it."""
        full = str(a.boundjid)
        await a.stop()
        deadline = time.monotonic() + IQ_TIMEOUT
        while time.monotonic() < deadline:
            try:
                await self.sender.iq("get", full, "<ping xmlns='urn:xmpp:ping'/>")
            except IqError:
                return
            await asyncio.sleep(0.2)
        raise CheckFailed("the server still routes to A's session after it closed")

    async def send_message(self, padding=0):
        self.message_no += 1
        body = f"e2e message {self.message_no}" + " long" * (padding // 5)
        self.sender.send_message(mto=self.alice, mbody=body, mtype="chat")

    async def register(self, a):
        try:
            reply = await a.iq("set", self.push_jid, device_command("register-push-fcm", TOKEN))
        except IqError as e:
            raise CheckFailed("register-push-fcm refused: %s/%s %s" % error_of(e))
        command = reply.find(f"{{{NS_COMMANDS}}}command")
        expect(command is not None, "the result carries no <command/>")
        expect(command.get("status") == "completed",
               f"status {command.get('status')!r}, not 'completed'")
        values = form_values(command)
        node, secret = values.get("node"), values.get("secret")
        expect(values.get("jid") == self.push_jid, f"form jid {values.get('jid')!r}")
        expect(node and len(node) == 12, f"node {node!r} is not 12 characters")
        expect(secret and len(secret) == 24, "secret is not 24 characters")
        self.secrets_seen.add(secret)
        return node, secret

    async def enable(self, a, node, secret):
        """Replaces A's push registrations on its server by one for (node, secret)."""
        try:
            await a.iq("set", None, f"<disable xmlns='{NS_PUSH}' jid='{self.push_jid}'/>")
        except IqError:
            pass  # ejabberd answers item-not-found when there is nothing to disable
        try:
            await a.iq("set", None, enable_payload(self.push_jid, node, secret))
        except IqError as e:
            raise CheckFailed("the server refused enable: %s/%s %s" % error_of(e))

    async def past_window(self):
        """Waits until p2's coalescing window after the last delivered push is over."""
        sends = [s for s in await self.standin.sends() if s["mode"] == "ok"]
        if sends:
            left = sends[-1]["time"] + self.coalesce + 0.3 - time.time()
            if left > 0:
                await asyncio.sleep(left)

    async def push_once(self):
        """B sends A one message, past p2's coalescing window. Returns the new stand-in sends."""
        await self.past_window()
        before = len(await self.standin.sends())
        await self.send_message()
        sends = await self.standin.wait_sends(before + 1, PUSH_WAIT)
        return sends[before:]

    async def p2_caught_up(self, daemon_mark):
        """B pings p2 through the server, after what B sent before. The server relays
        B's stanzas, and what they make it send, to the component in order, and p2
        handles them in order: once p2 has answered the ping (and logged it), it has
        handled every publish the server sent before. Returns p2's log from
        `daemon_mark` up to the ping."""
        await self.sender.iq("get", self.push_jid, "<ping xmlns='urn:xmpp:ping'/>")
        m = await self.daemon_log.wait_for(daemon_mark, r"iq ping from localhost: result", IQ_TIMEOUT)
        expect(m, "p2's log does not show B's ping")
        return self.daemon_log.since(daemon_mark)[:m.start()]

    def check_send(self, send):
        body = send.get("body") or {}
        message = body.get("message") or {}
        expect(send.get("authorization") == "Bearer ya29.e2e",
               f"Authorization {send.get('authorization')!r}")
        expect(send.get("project") == "p2-e2e", f"project {send.get('project')!r}")
        expect(message.get("token") == TOKEN, "the request does not carry A's token")
        data = message.get("data") or {}
        expect(data == {"account": self.device},
               f"data {data!r}, expected only account={self.device}")
        text = json.dumps(body)
        expect("e2e message" not in text and "alice" not in text,
               "the request carries message content or the account JID")

    # --- checks ---------------------------------------------------------------------

    async def check_disco(self, a):
        deadline = time.monotonic() + 15
        while True:
            try:
                reply = await a.iq("get", self.push_jid, f"<query xmlns='{NS_DISCO_INFO}'/>")
                break
            except IqError as e:
                # The component may not have connected yet.
                if time.monotonic() > deadline:
                    raise CheckFailed("disco#info refused: %s/%s %s" % error_of(e))
                await asyncio.sleep(0.3)
        query = reply.find(f"{{{NS_DISCO_INFO}}}query")
        expect(query is not None, "no <query/> in the result")
        identities = {(i.get("category"), i.get("type"))
                      for i in query.findall(f"{{{NS_DISCO_INFO}}}identity")}
        features = {f.get("var") for f in query.findall(f"{{{NS_DISCO_INFO}}}feature")}
        expect(("pubsub", "push") in identities, f"identities {sorted(identities)}")
        expect(NS_PUSH in features and NS_COMMANDS in features, f"features {sorted(features)}")

    async def check_commands(self, a):
        reply = await a.iq("get", self.push_jid,
                           f"<query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/>")
        items = {i.get("node") for i in reply.iter(f"{{{NS_DISCO_ITEMS}}}item")}
        expect({"register-push-fcm", "unregister-push-fcm"} <= items, f"commands {sorted(items)}")

    async def check_registration(self, a):
        self.node, self.secret = await self.register(a)

    async def check_reregistration(self, a):
        node, secret = await self.register(a)
        expect((node, secret) == (self.node, self.secret),
               "registering the same device again changed its node or secret")

    async def check_full_jid_publish(self, a):
        payload = (
            f"<pubsub xmlns='{NS_PUBSUB}'><publish node={quoteattr(self.node)}><item>"
            f"<notification xmlns='{NS_PUSH}'/></item></publish>"
            f"<publish-options><x xmlns='{NS_DATA}' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            f"<field var='secret'><value>{escape(self.secret)}</value></field></x></publish-options></pubsub>"
        )
        before = len(await self.standin.sends())
        try:
            await a.iq("set", self.push_jid, payload)
            raise CheckFailed("a publish from A's full JID was accepted")
        except IqError as e:
            kind, condition, _ = error_of(e)
            expect((kind, condition) == ("auth", "forbidden"), f"answered {kind}/{condition}")
        expect(len(await self.standin.sends()) == before, "the refused publish reached FCM")

    async def check_enable(self, a):
        await self.enable(a, self.node, self.secret)
        await self.offline(a)

    async def check_push(self):
        mark = self.server_log.size()
        sends = await self.push_once()
        expect(sends, f"nothing reached the FCM stand-in within {PUSH_WAIT} s")
        expect(len(sends) == 1, f"{len(sends)} requests for one message")
        self.check_send(sends[0])
        self.push_mark = mark

    async def check_server_result(self):
        m = await self.server_log.wait_for(self.push_mark, self.pattern("result", node=self.node), PUSH_WAIT)
        expect(m, "the server's log does not show a result for its publish")

    async def check_coalesced(self):
        sends = await self.push_once()
        expect(sends, "nothing reached the FCM stand-in")
        delivered = sends[-1]["time"]
        mark = self.server_log.size()
        before = len(await self.standin.sends())
        await self.send_message()
        sent_after = time.time() - delivered
        expect(sent_after < self.coalesce / 2,
               f"the second message left {sent_after:.1f} s after the push: too slow to test")
        m = await self.server_log.wait_for(mark, self.pattern("result", node=self.node), PUSH_WAIT)
        expect(m, "the server's log does not show a result for the second publish")
        # p2 answers a coalesced publish only once it has decided not to push it.
        expect(len(await self.standin.sends()) == before,
               "the second message within the window reached FCM")

    async def check_outage(self):
        await self.standin.mode("unavailable")
        mark = self.server_log.size()
        sends = await self.push_once()
        expect(sends, "nothing reached the FCM stand-in during the outage")
        m = await self.server_log.wait_for(mark, self.pattern("wait", node=self.node), PUSH_WAIT)
        expect(m, "the server's log does not show a wait error for the publish")
        await self.standin.mode("ok")
        mark = self.server_log.size()
        sends = await self.push_once()
        expect(sends, "after the outage the next message was not pushed: registration lost")
        self.check_send(sends[-1])
        expect(sends[-1]["mode"] == "ok", "the push after the outage was not answered 200")
        m = await self.server_log.wait_for(mark, self.pattern("result", node=self.node), PUSH_WAIT)
        expect(m, "the server's log does not show a result after the outage")

    async def check_oversized(self):
        # A message of 100 KB: the server's publish carries its body and goes over p2's
        # 64 KiB stanza limit. p2 skips it and answers wait policy-violation, so the
        # server keeps A's push registration (ejabberd drops it on any other type), and
        # the next message is pushed.
        await self.past_window()
        mark = self.server_log.size()
        daemon_mark = self.daemon_log.size()
        before = len(await self.standin.sends())
        await self.send_message(padding=100_000)
        m = await self.server_log.wait_for(mark, self.pattern("policy", node=self.node), PUSH_WAIT)
        expect(m, "the server's log does not show a wait reply to its oversized publish")
        m = await self.daemon_log.wait_for(daemon_mark, r"<iq/> larger than 65536 bytes skipped", 2)
        expect(m, "p2's log does not show the oversized publish skipped")
        expect(len(await self.standin.sends()) == before, "the oversized publish reached FCM")
        sends = await self.push_once()
        expect(sends, "after the oversized publish the next message was not pushed: registration lost")
        self.check_send(sends[-1])

    async def refused(self, node, secret, condition):
        """A enables (node, secret); B's message must be refused with `condition`."""
        a = await self.phone()
        await self.enable(a, node, secret)
        await self.offline(a)
        mark = self.server_log.size()
        before = len(await self.standin.sends())
        await self.send_message()
        kind, cond = condition
        m = await self.server_log.wait_for(mark, self.pattern("error", node=node, type=kind, condition=cond), PUSH_WAIT)
        expect(m, f"the server's log does not show a {kind}/{cond} reply to its publish")
        # p2 refuses a publish before any push.
        expect(len(await self.standin.sends()) == before, "the refused publish reached FCM")

    async def check_wrong_secret(self):
        wrong = "W" * 24
        await self.refused(self.node, wrong, ("auth", "forbidden"))

    async def check_unknown_node(self):
        await self.refused("e2eUnknown00", self.secret, ("cancel", "item-not-found"))

    async def check_dead_token(self):
        a = await self.phone()
        await self.enable(a, self.node, self.secret)
        await self.offline(a)
        await self.standin.mode("unregistered")
        mark = self.server_log.size()
        daemon_mark = self.daemon_log.size()
        sends = await self.push_once()
        expect(sends, "nothing reached the FCM stand-in")
        expect(all(s["body"]["message"]["token"] == TOKEN for s in sends), "wrong token")
        m = await self.server_log.wait_for(mark, self.pattern("disabled", node=self.node), PUSH_WAIT)
        expect(m, "the server's log does not show that it disabled the registration")
        m = await self.daemon_log.wait_for(daemon_mark, r"token dead \(UNREGISTERED\).*registration deleted", 2)
        expect(m, "p2's log does not show the registration deleted")
        await self.standin.mode("ok")
        await self.past_window()
        daemon_mark = self.daemon_log.size()
        before = len(await self.standin.sends())
        await self.send_message()
        handled = await self.p2_caught_up(daemon_mark)
        expect(not re.search(r"iq (publish|pubsub) from", handled),
               "the server still published after UNREGISTERED")
        expect(len(await self.standin.sends()) == before,
               "a message after UNREGISTERED still reached FCM")

    async def check_unregister(self):
        a = await self.phone()
        node, secret = await self.register(a)
        expect(node != self.node, "the deleted registration came back with its old node")
        await self.enable(a, node, secret)
        try:
            reply = await a.iq("set", self.push_jid, device_command("unregister-push-fcm"))
        except IqError as e:
            raise CheckFailed("unregister-push-fcm refused: %s/%s %s" % error_of(e))
        command = reply.find(f"{{{NS_COMMANDS}}}command")
        expect(command is not None and command.get("status") == "completed",
               "unregister did not complete")
        await self.offline(a)
        mark = self.server_log.size()
        before = len(await self.standin.sends())
        await self.send_message()
        m = await self.server_log.wait_for(
            mark, self.pattern("error", node=node, type="cancel", condition="item-not-found"), PUSH_WAIT)
        expect(m, "the server's log does not show item-not-found for the unregistered node")
        # p2 answers item-not-found before any push.
        expect(len(await self.standin.sends()) == before, "a message after unregister reached FCM")

    async def check_log_privacy(self):
        text = self.daemon_log.since(0)
        expect(TOKEN not in text, "p2's log holds the FCM token")
        for s in self.secrets_seen:
            expect(s not in text, "p2's log holds a publish secret")
        expect("alice" not in text and "bob" not in text, "p2's log holds a local part")

    # --- the run ----------------------------------------------------------------------

    PLAN = [
        "disco#info shows pubsub/push",
        "commands listed",
        "registration (register-push-fcm)",
        "re-registration keeps node and secret",
        "publish from a full JID refused",
        "enable push on the server, go offline",
        "message to offline user pushed with token and account hash",
        "server logged the result of its publish",
        "second message within p2's coalescing window: result, no FCM request",
        "FCM 503: registration kept, next message pushed",
        "publish over p2's stanza limit: wait, registration kept, next message pushed",
        "wrong secret refused",
        "unknown node refused",
        "FCM UNREGISTERED: server drops the registration",
        "after unregister-push-fcm nothing reaches FCM",
        "p2's log holds no token, secret or local part",
    ]

    def report_unreached(self, why):
        for name in self.PLAN[len(self.done):]:
            self.report(name, why)
        self.done = list(self.PLAN)

    async def run(self):
        try:
            self.sender = Client(self.bob + "/desk", self.passwords["bob"])
            self.clients.append(self.sender)
            await self.sender.start(self.port)
            a = await self.phone()
        except CheckFailed as e:
            self.report_unreached(f"not reached: {e}")
            return
        # (check, whether the ones after it need it to pass), in the order of PLAN.
        steps = [
            (lambda: self.check_disco(a), True),
            (lambda: self.check_commands(a), False),
            (lambda: self.check_registration(a), True),
            (lambda: self.check_reregistration(a), False),
            (lambda: self.check_full_jid_publish(a), False),
            (lambda: self.check_enable(a), True),
            (self.check_push, False),
            (self.check_server_result, False),
            (self.check_coalesced, False),
            (self.check_outage, False),
            (self.check_oversized, False),
            (self.check_wrong_secret, False),
            (self.check_unknown_node, False),
            (self.check_dead_token, False),
            (self.check_unregister, False),
            (self.check_log_privacy, False),
        ]
        assert len(steps) == len(self.PLAN)
        try:
            for name, (check, needed) in zip(self.PLAN, steps):
                try:
                    await check()
                except Exception as e:  # CheckFailed, or a broken step: report, go on
                    why = str(e) if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
                    self.report(name, why)
                    self.done.append(name)
                    if needed:
                        self.report_unreached("not reached: an earlier step failed")
                        return
                    await self.standin.mode("ok")
                    continue
                self.report(name)
                self.done.append(name)
        finally:
            for c in self.clients:
                if c.transport is not None:
                    await c.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, choices=sorted(SERVER_LOG))
    parser.add_argument("--c2s-port", type=int, required=True)
    parser.add_argument("--push-jid", required=True)
    parser.add_argument("--standin", required=True, help="base URL of the FCM stand-in")
    parser.add_argument("--server-log", required=True)
    parser.add_argument("--daemon-log", required=True)
    parser.add_argument("--alice-password", required=True)
    parser.add_argument("--bob-password", required=True)
    parser.add_argument("--coalesce-ms", type=int, required=True,
                        help="p2's limits.coalesceMillis")
    parser.add_argument("--client-log", help="slixmpp debug log")
    args = parser.parse_args()
    if args.client_log:
        logging.basicConfig(filename=args.client_log, level=logging.DEBUG,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
    scenario = Scenario(args)
    try:
        asyncio.run(asyncio.wait_for(scenario.run(), 240))
    except asyncio.TimeoutError:
        scenario.report_unreached("not reached: the scenario ran out of its 240 s")
    sys.exit(1 if scenario.failed else 0)


if __name__ == "__main__":
    main()
