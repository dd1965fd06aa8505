//! The call engine over Janus (see [`JanusTransport`]).

use std::time::Instant;

use bytes::{BufMut, BytesMut};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::transport::{Inbound, Transport, TransportError};
use crate::media::ChannelToken;

/// Framing of the engine's datagrams over Janus.
const AUDIO: u8 = 0x01;
const TEXT: u8 = 0x02;
const CHANNEL_MESSAGE: u8 = 0x03;
const MAILBOX_MESSAGE: u8 = 0x04;
const STORED: u8 = 0x05;

/// Messages a channel room keeps for late joiners, and Welcomes a mailbox room keeps.
const CHANNEL_HISTORY: u32 = 64;
const MAILBOX_HISTORY: u32 = 8;
/// Channels and mailboxes tracked at once.
const MAX_ROOMS: usize = 256;

/// One part of what the engine sends over Janus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// An RTP payload for the VideoRoom publisher ([`crate::webrtc::WebRtcPeer::send_audio`]).
    Audio(&'a [u8]),
    /// TextRoom requests, each one data-channel text message.
    Text(Vec<&'a str>),
}

#[derive(Clone, Debug)]
struct Room {
    id: u64,
    /// The channel, or `None` for a mailbox.
    token: Option<ChannelToken>,
    joined: bool,
    /// Messages received since joining: the next one's number.
    count: u64,
}

/// The call engine's [`Transport`] over an unmodified Janus (feature `webrtc`).
///
/// Audio travels as RTP through a VideoRoom (see [`crate::webrtc`]); handshake messages
/// and Welcomes travel on a data channel to Janus's **TextRoom** plugin, which gives what
/// sotto's relay gives and the engine relies on:
///
/// - **One order for everyone.** TextRoom relays a room's messages to every participant
///   under the room's lock, each on an ordered, reliable data channel, so all participants
///   (the sender included: its own message is its echo) see one order. Each epoch's channel
///   is a TextRoom room; the transport numbers its messages as they arrive.
/// - **History.** A room keeps its latest messages and sends them to whoever joins, before
///   anything newer: a member that subscribes late still gets the commit it needs.
/// - **Mailboxes.** A Welcome is an announcement in a room of its own (named by the
///   KeyPackage reference), kept in that room's history until the invitee joins it.
///
/// Room ids are 52 bits of SHA-256 over a label and the channel token (or KeyPackage
/// reference): opaque, new every epoch like the token. Each room is created with a secret
/// and a PIN derived the same way, so only who knows the token (or reference) can join,
/// post announcements, edit or destroy it — what sotto's relay allows, and no more.
///
/// The engine's datagrams, in and out, are this transport's own framing; the app moves
/// them with three functions: [`outbound`](Self::outbound) splits what
/// [`Call::poll_transmit`](super::Call::poll_transmit) gives into RTP payloads (for the
/// VideoRoom publisher) and TextRoom requests (text, for the TextRoom data channel);
/// [`audio`](Self::audio) and [`inbound`](Self::inbound) turn a received RTP payload or
/// a TextRoom message into a datagram for
/// [`Call::handle_datagram`](super::Call::handle_datagram).
#[derive(Debug)]
pub struct JanusTransport {
    user: String,
    ready: bool,
    rooms: Vec<Room>,
    next_tx: u64,
}

fn room_id(label: &[u8], bytes: &[u8]) -> u64 {
    let digest = Sha256::new()
        .chain_update(label)
        .chain_update(bytes)
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    // 52 bits: a JSON number any Janus client reads exactly.
    (u64::from_be_bytes(id) >> 12).max(1)
}

fn derived_hex(label: &[u8], bytes: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(label)
        .chain_update(bytes)
        .finalize();
    hex(digest.get(..16).unwrap_or_default())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (TextRoom carries text only).
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let digit = B64
                    .get(((n >> shift) & 63) as usize)
                    .copied()
                    .unwrap_or(b'=');
                out.push(char::from(digit));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = B64.iter().position(|b| *b == c)?;
        acc = (acc << 6) | u32::try_from(v).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

impl Default for JanusTransport {
    fn default() -> Self {
        JanusTransport::new()
    }
}

impl JanusTransport {
    /// A transport with a random TextRoom username of its own.
    pub fn new() -> JanusTransport {
        let mut name = [0u8; 8];
        // The username only has to differ from other participants'.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut name);
        JanusTransport {
            user: hex(&name),
            ready: false,
            rooms: Vec::new(),
            next_tx: 0,
        }
    }

    /// Splits one datagram of [`Call::poll_transmit`](super::Call::poll_transmit).
    pub fn outbound(datagram: &[u8]) -> Option<Outbound<'_>> {
        let (kind, rest) = datagram.split_first()?;
        match *kind {
            AUDIO => Some(Outbound::Audio(rest)),
            TEXT => {
                let mut texts = Vec::new();
                let mut rest = rest;
                while rest.len() >= 4 {
                    let (len, tail) = rest.split_at(4);
                    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
                    let text = tail.get(..len)?;
                    texts.push(std::str::from_utf8(text).ok()?);
                    rest = tail.get(len..)?;
                }
                Some(Outbound::Text(texts))
            }
            _ => None,
        }
    }

    /// A received RTP payload (from a VideoRoom subscription), as a datagram for the engine.
    pub fn audio(payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(payload.len() + 1);
        d.push(AUDIO);
        d.extend_from_slice(payload);
        d
    }

    /// A message received on the TextRoom data channel, as a datagram for the engine.
    pub fn inbound(text: &str) -> Vec<u8> {
        let convert = || -> Option<Vec<u8>> {
            let v: Value = serde_json::from_str(text).ok()?;
            let kind = v.get("textroom")?.as_str()?;
            let room = v.get("room").and_then(Value::as_u64);
            match (kind, room) {
                ("message", Some(room)) => {
                    let bytes = unbase64(v.get("text")?.as_str()?)?;
                    let mut d = vec![CHANNEL_MESSAGE];
                    d.extend_from_slice(&room.to_be_bytes());
                    d.extend_from_slice(&bytes);
                    Some(d)
                }
                ("announcement", Some(room)) => {
                    let bytes = unbase64(v.get("text")?.as_str()?)?;
                    let mut d = vec![MAILBOX_MESSAGE];
                    d.extend_from_slice(&room.to_be_bytes());
                    d.extend_from_slice(&bytes);
                    Some(d)
                }
                ("success", _) => {
                    let tx = v.get("transaction")?.as_str()?;
                    let mailbox = unhex(tx.strip_prefix("a:")?)?;
                    let mut d = vec![STORED];
                    d.extend_from_slice(&mailbox);
                    Some(d)
                }
                _ => None,
            }
        };
        convert().unwrap_or_else(|| {
            let mut d = vec![TEXT];
            d.extend_from_slice(text.as_bytes());
            d
        })
    }

    fn transaction(&mut self, kind: &str, room: u64) -> String {
        self.next_tx += 1;
        format!("{kind}:{room}:{}", self.next_tx)
    }

    fn write(out: &mut BytesMut, requests: &[Value]) {
        out.put_u8(TEXT);
        for r in requests {
            let text = r.to_string();
            out.put_u32(u32::try_from(text.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(text.as_bytes());
        }
    }

    fn room_of(&self, token: &ChannelToken) -> Option<&Room> {
        self.rooms.iter().find(|r| r.token.as_ref() == Some(token))
    }

    fn track(&mut self, id: u64, token: Option<ChannelToken>) -> Result<(), TransportError> {
        if !self.rooms.iter().any(|r| r.id == id) {
            if self.rooms.len() >= MAX_ROOMS {
                return Err(TransportError::TooLarge);
            }
            self.rooms.push(Room {
                id,
                token,
                joined: false,
                count: 0,
            });
        }
        Ok(())
    }

    /// Create (ignored if it exists) and join requests for a room keeping `history`.
    fn create_and_join(&mut self, id: u64, key: &[u8], history: u32) -> [Value; 2] {
        let secret = derived_hex(b"sotto janus secret", key);
        let pin = derived_hex(b"sotto janus pin", key);
        let tc = self.transaction("k", id);
        let tj = self.transaction("j", id);
        [
            json!({"textroom": "create", "transaction": tc, "room": id, "secret": secret,
                   "pin": pin, "is_private": true, "permanent": false, "history": history}),
            json!({"textroom": "join", "transaction": tj, "room": id, "pin": pin,
                   "username": self.user, "history": true}),
        ]
    }

    /// The TextRoom room id of the channel `token` (opaque; new every epoch).
    pub fn channel_id(token: &ChannelToken) -> u64 {
        room_id(b"sotto janus channel", &token.0)
    }

    fn mailbox_id(mailbox: &[u8]) -> u64 {
        room_id(b"sotto janus mailbox", mailbox)
    }
}

impl Transport for JanusTransport {
    fn is_ready(&self) -> bool {
        self.ready
    }

    fn is_subscribed(&self, token: &ChannelToken) -> bool {
        self.room_of(token).is_some_and(|r| r.joined)
    }

    fn subscriptions(&self, into: &mut Vec<ChannelToken>) {
        into.extend(
            self.rooms
                .iter()
                .filter(|r| r.joined)
                .filter_map(|r| r.token),
        );
    }

    fn reset(&mut self) {
        self.ready = false;
        self.rooms.clear();
    }

    fn connect(&mut self, out: &mut BytesMut) -> Result<(), TransportError> {
        self.reset();
        let t = self.transaction("c", 0);
        JanusTransport::write(out, &[json!({"textroom": "list", "transaction": t})]);
        Ok(())
    }

    fn subscribe(&mut self, token: ChannelToken, out: &mut BytesMut) -> Result<(), TransportError> {
        if !self.ready {
            return Err(TransportError::NotReady);
        }
        // Joined: a reliable, ordered channel has no gaps to ask for.
        if self.is_subscribed(&token) {
            return Ok(());
        }
        let id = JanusTransport::channel_id(&token);
        self.track(id, Some(token))?;
        let requests = self.create_and_join(id, &token.0, CHANNEL_HISTORY);
        JanusTransport::write(out, &requests);
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        token: &ChannelToken,
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        let id = JanusTransport::channel_id(token);
        let t = self.transaction("l", id);
        JanusTransport::write(
            out,
            &[json!({"textroom": "leave", "transaction": t, "room": id})],
        );
        Ok(())
    }

    fn media(
        &mut self,
        _token: &ChannelToken,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        out.put_u8(AUDIO);
        out.extend_from_slice(frame);
        Ok(())
    }

    fn handshake(
        &mut self,
        token: &ChannelToken,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if !self.is_subscribed(token) {
            return Err(TransportError::NotSubscribed);
        }
        let id = JanusTransport::channel_id(token);
        let t = self.transaction("m", id);
        JanusTransport::write(
            out,
            &[json!({"textroom": "message", "transaction": t, "room": id,
                     "text": base64(message), "ack": false})],
        );
        Ok(())
    }

    fn deliver_welcome(
        &mut self,
        mailbox: &[u8],
        welcome: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if !self.ready {
            return Err(TransportError::NotReady);
        }
        let id = JanusTransport::mailbox_id(mailbox);
        let [create, _] = self.create_and_join(id, mailbox, MAILBOX_HISTORY);
        let mut body = Vec::with_capacity(2 + mailbox.len() + welcome.len());
        let len = u16::try_from(mailbox.len()).map_err(|_| TransportError::TooLarge)?;
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(mailbox);
        body.extend_from_slice(welcome);
        let secret = derived_hex(b"sotto janus secret", mailbox);
        JanusTransport::write(
            out,
            &[
                create,
                json!({"textroom": "announcement", "transaction": format!("a:{}", hex(mailbox)),
                       "room": id, "secret": secret, "text": base64(&body)}),
            ],
        );
        Ok(())
    }

    fn fetch_welcomes(&mut self, mailbox: &[u8], out: &mut BytesMut) -> Result<(), TransportError> {
        if !self.ready {
            return Err(TransportError::NotReady);
        }
        let id = JanusTransport::mailbox_id(mailbox);
        if self.rooms.iter().any(|r| r.id == id && r.joined) {
            // Joined: Welcomes arrive as they are announced.
            return Ok(());
        }
        self.track(id, None)?;
        let requests = self.create_and_join(id, mailbox, MAILBOX_HISTORY);
        JanusTransport::write(out, &requests);
        Ok(())
    }

    fn receive<'a>(
        &mut self,
        datagram: &'a [u8],
        _now: Instant,
        _out: &mut BytesMut,
    ) -> Result<Inbound<'a>, TransportError> {
        let (kind, rest) = datagram.split_first().ok_or(TransportError::Malformed)?;
        let room_and_body = |rest: &'a [u8]| -> Result<(u64, &'a [u8]), TransportError> {
            let (id, body) = rest.split_at_checked(8).ok_or(TransportError::Malformed)?;
            let id = u64::from_be_bytes(id.try_into().map_err(|_| TransportError::Malformed)?);
            Ok((id, body))
        };
        match *kind {
            AUDIO => {
                // The VideoRoom carries every epoch's frames; the KID says which.
                let token = self
                    .rooms
                    .iter()
                    .find_map(|r| r.token)
                    .unwrap_or(ChannelToken([0; 16]));
                Ok(Inbound::Media { token, frame: rest })
            }
            CHANNEL_MESSAGE => {
                let (id, message) = room_and_body(rest)?;
                let Some(room) = self.rooms.iter_mut().find(|r| r.id == id) else {
                    return Ok(Inbound::Ignored);
                };
                let Some(token) = room.token else {
                    return Ok(Inbound::Ignored);
                };
                let seq = room.count;
                room.count += 1;
                Ok(Inbound::Handshake {
                    token,
                    seq,
                    message,
                })
            }
            MAILBOX_MESSAGE => {
                let (id, body) = room_and_body(rest)?;
                let (len, body) = body.split_at_checked(2).ok_or(TransportError::Malformed)?;
                let len = usize::from(u16::from_be_bytes(
                    len.try_into().map_err(|_| TransportError::Malformed)?,
                ));
                let (mailbox, welcome) = body
                    .split_at_checked(len)
                    .ok_or(TransportError::Malformed)?;
                // Only for a mailbox this client asked about, in the room of that mailbox.
                let asked = self.rooms.iter().any(|r| r.id == id && r.token.is_none());
                if !asked || JanusTransport::mailbox_id(mailbox) != id {
                    return Ok(Inbound::Ignored);
                }
                Ok(Inbound::Welcome { mailbox, welcome })
            }
            STORED => Ok(Inbound::Stored { mailbox: rest }),
            TEXT => {
                let v: Value =
                    serde_json::from_slice(rest).map_err(|_| TransportError::Malformed)?;
                let tx = v
                    .get("transaction")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ok = v.get("textroom").and_then(Value::as_str) == Some("success");
                let mut parts = tx.split(':');
                let (Some(kind), Some(id)) = (parts.next(), parts.next()) else {
                    return Ok(Inbound::Ignored);
                };
                let id: u64 = id.parse().unwrap_or_default();
                // TextRoom error codes 420 and 421: this username is in the room already.
                let code = v.get("error_code").and_then(Value::as_u64);
                match kind {
                    "c" if ok => {
                        self.ready = true;
                        Ok(Inbound::Ready)
                    }
                    "j" if ok || matches!(code, Some(420 | 421)) => {
                        let Some(room) = self.rooms.iter_mut().find(|r| r.id == id) else {
                            return Ok(Inbound::Ignored);
                        };
                        room.joined = true;
                        match room.token {
                            Some(token) => Ok(Inbound::Subscribed {
                                token,
                                next_seq: room.count,
                            }),
                            None => Ok(Inbound::MailboxEmpty),
                        }
                    }
                    "l" => {
                        let Some(i) = self.rooms.iter().position(|r| r.id == id) else {
                            return Ok(Inbound::Ignored);
                        };
                        let room = self.rooms.swap_remove(i);
                        Ok(room.token.map_or(Inbound::Ignored, Inbound::Unsubscribed))
                    }
                    "k" | "m" => Ok(Inbound::Ignored),
                    _ if !ok => Ok(Inbound::Refused),
                    _ => Ok(Inbound::Ignored),
                }
            }
            _ => Err(TransportError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..70u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(151)).collect();
            assert_eq!(unbase64(&base64(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64(b"sotto"), "c290dG8=");
        assert!(unbase64("c2*0").is_none());
    }

    #[test]
    fn requests_and_answers_map_to_the_engine() {
        let now = Instant::now();
        let mut t = JanusTransport::new();
        let mut out = BytesMut::new();
        t.connect(&mut out).unwrap();
        let Some(Outbound::Text(texts)) = JanusTransport::outbound(&out) else {
            panic!()
        };
        let list: Value = serde_json::from_str(texts[0]).unwrap();
        let answer = json!({"textroom": "success", "transaction": list["transaction"]});
        let d = JanusTransport::inbound(&answer.to_string());
        assert_eq!(t.receive(&d, now, &mut out).unwrap(), Inbound::Ready);
        // Subscribe: create + join; history first, then the join's success.
        let token = ChannelToken([7; 16]);
        out.clear();
        t.subscribe(token, &mut out).unwrap();
        let Some(Outbound::Text(texts)) = JanusTransport::outbound(&out) else {
            panic!()
        };
        assert_eq!(texts.len(), 2);
        let join: Value = serde_json::from_str(texts[1]).unwrap();
        let room = join["room"].as_u64().unwrap();
        assert!(room < 1 << 52);
        assert!(
            !texts.concat().contains("0707070707"),
            "no token on the wire"
        );
        let m =
            json!({"textroom": "message", "room": room, "from": "x", "text": base64(b"commit")});
        let d = JanusTransport::inbound(&m.to_string());
        assert_eq!(
            t.receive(&d, now, &mut out).unwrap(),
            Inbound::Handshake {
                token,
                seq: 0,
                message: b"commit"
            }
        );
        let ok = json!({"textroom": "success", "transaction": join["transaction"]});
        let d = JanusTransport::inbound(&ok.to_string());
        assert_eq!(
            t.receive(&d, now, &mut out).unwrap(),
            Inbound::Subscribed { token, next_seq: 1 }
        );
        assert!(t.is_subscribed(&token));
        // A Welcome announced in a mailbox room this client did not ask about is ignored;
        // one in the room of the mailbox it fetches is delivered.
        let mailbox = b"kp-ref";
        out.clear();
        t.deliver_welcome(mailbox, b"welcome", &mut out).unwrap();
        let Some(Outbound::Text(texts)) = JanusTransport::outbound(&out) else {
            panic!()
        };
        let ann: Value = serde_json::from_str(texts[1]).unwrap();
        let forwarded =
            json!({"textroom": "announcement", "room": ann["room"], "text": ann["text"]});
        let d = JanusTransport::inbound(&forwarded.to_string());
        assert_eq!(t.receive(&d, now, &mut out).unwrap(), Inbound::Ignored);
        out.clear();
        t.fetch_welcomes(mailbox, &mut out).unwrap();
        assert_eq!(
            t.receive(&d, now, &mut out).unwrap(),
            Inbound::Welcome {
                mailbox,
                welcome: b"welcome"
            }
        );
        let stored = json!({"textroom": "success", "transaction": ann["transaction"]});
        let d = JanusTransport::inbound(&stored.to_string());
        assert_eq!(
            t.receive(&d, now, &mut out).unwrap(),
            Inbound::Stored { mailbox }
        );
        // Junk is an error or ignored, never a panic.
        for junk in [
            &b""[..],
            b"\x03\x00",
            b"\x04\x00\x00\x00\x00\x00\x00\x00\x01\xff",
            b"\x02{",
        ] {
            let _ = t.receive(junk, now, &mut out);
        }
    }
}
