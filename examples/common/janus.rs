//! Janus for tests and examples: a network sandbox where 127.0.0.1 is the only address, a
//! Janus process with a config of our own, and a small client of its HTTP API (VideoRoom).
//!
//! **The sandbox.** Janus 1.1 gathers ICE candidates only on interfaces that are not
//! loopback (it skips `IFF_LOOPBACK` and libnice falls back to every other address), so on
//! a normal host it would offer its LAN address. The sandbox is a fresh network namespace
//! (`unshare --net --map-root-user`, so no root is needed where user namespaces are
//! allowed) in which `lo` is up without its address and 127.0.0.1/32 sits on a veth whose
//! peer is down-stream of nothing: 127.0.0.1 is the only address there is, nothing routes
//! out, and every packet of Janus and of the peers goes to 127.0.0.1. The process re-runs
//! itself inside (`SOTTO_SANDBOX=1`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Sets the sandbox's network up, then runs `"$0" "$@"`.
const SANDBOX_SETUP: &str = "set -e; ip link set lo up; ip addr del 127.0.0.1/8 dev lo; \
     ip link add v0 type veth peer name v1; ip addr add 127.0.0.1/32 dev v0; \
     ip link set v0 up; ip link set v1 up; exec \"$0\" \"$@\"";

/// Whether this process runs inside the sandbox.
pub fn inside_sandbox() -> bool {
    std::env::var_os("SOTTO_SANDBOX").is_some_and(|v| v == "1")
}

/// Runs this executable again inside the sandbox with `args`; returns whether it
/// succeeded. Panics (loudly) when the sandbox cannot be made.
pub fn rerun_in_sandbox(args: &[&str]) -> bool {
    let exe = std::env::current_exe().expect("own executable");
    let status = Command::new("unshare")
        .args(["--net", "--map-root-user", "sh", "-c", SANDBOX_SETUP])
        .arg(&exe)
        .args(args)
        .env("SOTTO_SANDBOX", "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux) for the sandbox: {e}"));
    status.success()
}

/// The IPv4 addresses of the sandbox's interfaces (from `ip -o -4 addr`).
pub fn addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .expect("ip (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// A Janus process with its own config, ports and recording folder; stopped on drop.
pub struct Janus {
    child: Child,
    stopped: bool,
    pub dir: PathBuf,
    pub port: u16,
}

impl Janus {
    /// Writes the config under a fresh folder, starts `janus`, waits until its HTTP API
    /// answers (10 s at most). Panics when Janus is not installed or does not come up.
    pub fn start(port: u16) -> Janus {
        let dir = std::env::temp_dir().join(format!("sotto-janus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rec")).unwrap();
        std::fs::create_dir_all(dir.join("none")).unwrap();
        write_config(&dir, port);
        let child = Command::new("janus")
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .arg("-o")
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("stdout.log")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start janus ({e}): install it with `apt-get install janus`")
            });
        let mut janus = Janus {
            child,
            stopped: false,
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = janus.child.try_wait() {
                panic!(
                    "janus exited at start ({status}): {}",
                    std::fs::read_to_string(janus.dir.join("stdout.log")).unwrap_or_default()
                );
            }
            if let Ok(v) = http(
                port,
                "POST",
                "/janus",
                Some(&json!({"janus": "info", "transaction": "up"})),
            ) {
                if v["janus"] == "server_info" {
                    return janus;
                }
            }
            assert!(Instant::now() < deadline, "janus did not come up in 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every file Janus wrote: its logs and its recordings.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_none_or(|e| e != "jcfg") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out.sort();
        out
    }

    /// Stops Janus (SIGTERM through `kill`, then waits; killed after 5 s).
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_config(dir: &Path, port: u16) {
    let d = dir.display();
    let plugins = "/usr/lib/x86_64-linux-gnu/janus";
    let disabled_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let disabled_transports = ["mqtt", "nanomsg", "pfunix", "rabbitmq", "websockets"]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
    let janus = format!(
        "general: {{\n configs_folder = \"{d}\"\n plugins_folder = \"{plugins}/plugins\"\n \
         transports_folder = \"{plugins}/transports\"\n events_folder = \"{d}/none\"\n \
         loggers_folder = \"{d}/none\"\n log_to_file = \"{d}/janus.log\"\n debug_level = 4\n \
         interface = \"127.0.0.1\"\n session_timeout = 60\n}}\n\
         media: {{\n rtp_port_range = \"42000-42999\"\n ipv6 = false\n}}\n\
         nat: {{\n ice_enforce_list = \"v0\"\n full_trickle = false\n ignore_mdns = true\n}}\n\
         plugins: {{\n disable = \"{disabled_plugins}\"\n}}\n\
         transports: {{\n disable = \"{disabled_transports}\"\n}}\n\
         events: {{\n broadcast = false\n}}\n"
    );
    std::fs::write(dir.join("janus.jcfg"), janus).unwrap();
    let http = format!(
        "general: {{\n json = \"plain\"\n base_path = \"/janus\"\n http = true\n port = {port}\n \
         ip = \"127.0.0.1\"\n https = false\n}}\nadmin: {{\n admin_http = false\n admin_https = false\n}}\n"
    );
    std::fs::write(dir.join("janus.transport.http.jcfg"), http).unwrap();
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n").unwrap();
    std::fs::write(
        dir.join("janus.plugin.textroom.jcfg"),
        "general: {\n json = \"compact\"\n}\n",
    )
    .unwrap();
}

/// One HTTP/1.0 request to Janus on 127.0.0.1 (no chunking); the JSON body of the answer.
pub fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let at = out.find("\r\n\r\n").ok_or("no HTTP body")?;
    serde_json::from_str(&out[at + 4..]).map_err(|e| format!("{e}: {out}"))
}

/// A Janus session: requests, and its events from a long-poll thread.
pub struct Session {
    port: u16,
    pub id: u64,
    tx: u64,
    events: Receiver<Value>,
    pending: Vec<Value>,
}

impl Session {
    pub fn new(port: u16) -> Session {
        let r = http(
            port,
            "POST",
            "/janus",
            Some(&json!({"janus": "create", "transaction": "c"})),
        )
        .expect("create session");
        let id = r["data"]["id"].as_u64().expect("session id");
        let (tx, events) = channel();
        std::thread::spawn(move || loop {
            let Ok(r) = http(port, "GET", &format!("/janus/{id}?maxev=10"), None) else {
                return;
            };
            let list = match r {
                Value::Array(list) => list,
                other => vec![other],
            };
            for e in list {
                if e["janus"] == "keepalive" {
                    continue;
                }
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        Session {
            port,
            id,
            tx: 0,
            events,
            pending: Vec::new(),
        }
    }

    fn transaction(&mut self) -> String {
        self.tx += 1;
        format!("t{}", self.tx)
    }

    /// Attaches a VideoRoom handle.
    pub fn attach(&mut self) -> u64 {
        self.attach_plugin("janus.plugin.videoroom")
    }

    /// Attaches a handle of `plugin`.
    pub fn attach_plugin(&mut self, plugin: &str) -> u64 {
        let t = self.transaction();
        let r = http(
            self.port,
            "POST",
            &format!("/janus/{}", self.id),
            Some(&json!({"janus": "attach", "plugin": plugin, "transaction": t})),
        )
        .expect("attach");
        r["data"]["id"].as_u64().expect("handle id")
    }

    /// A plugin message on `handle`, with an optional JSEP; the synchronous answer.
    pub fn message(&mut self, handle: u64, body: Value, jsep: Option<Value>) -> Value {
        let t = self.transaction();
        let mut m = json!({"janus": "message", "transaction": t, "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        http(
            self.port,
            "POST",
            &format!("/janus/{}/{handle}", self.id),
            Some(&m),
        )
        .expect("message")
    }

    /// The first event of `handle` matching `pred` that arrived so far.
    pub fn take(&mut self, handle: u64, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        while let Ok(e) = self.events.try_recv() {
            self.pending.push(e);
        }
        let i = self
            .pending
            .iter()
            .position(|e| e["sender"].as_u64() == Some(handle) && pred(e))?;
        Some(self.pending.remove(i))
    }

    /// Every event received so far, for the record.
    pub fn seen(&mut self) -> &[Value] {
        while let Ok(e) = self.events.try_recv() {
            self.pending.push(e);
        }
        &self.pending
    }

    pub fn destroy(&mut self) {
        let t = self.transaction();
        let _ = http(
            self.port,
            "POST",
            &format!("/janus/{}", self.id),
            Some(&json!({"janus": "destroy", "transaction": t})),
        );
    }
}

/// A peer connection with its own UDP socket on 127.0.0.1.
pub struct Link {
    pub socket: std::net::UdpSocket,
    pub peer: sotto::webrtc::WebRtcPeer,
    pub events: Vec<sotto::webrtc::PeerEvent>,
    /// Every SDP this link offered or was offered (for the loopback check).
    pub sdps: Vec<String>,
}

impl Link {
    pub fn new(now: Instant) -> Link {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let peer = sotto::webrtc::WebRtcPeer::new(socket.local_addr().unwrap(), now).unwrap();
        Link {
            socket,
            peer,
            events: Vec::new(),
            sdps: Vec::new(),
        }
    }

    /// Moves datagrams both ways and runs timers; records where packets went.
    pub fn pump(&mut self, sent_to: &mut std::collections::HashSet<std::net::SocketAddr>) {
        let mut buf = [0u8; 2048];
        for _ in 0..256 {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = self.peer.handle_datagram(from, &buf[..n], Instant::now());
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if self.peer.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.peer.handle_timeout(now);
        }
        while let Some((to, bytes)) = self.peer.poll_transmit() {
            sent_to.insert(to);
            let _ = self.socket.send_to(&bytes, to);
        }
        while let Some(e) = self.peer.poll_event() {
            self.events.push(e);
        }
    }
}

// ---- The call engine over Janus: what an app's glue does ----

use sotto::call::{Call, CallEvent, JanusOutbound, JanusTransport};
use sotto::provider::Provider;
use sotto::webrtc::PeerEvent;
use std::collections::HashSet;
use std::net::SocketAddr;
use str0m::media::Direction;

/// A member's counters, accumulated tick by tick (receivers come and go with members).
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    pub sent: u64,
    pub opened: u64,
    pub fec: u64,
    pub concealed: u64,
    pub ticks: u64,
    /// Time in `Call::send_audio` (encode and seal) and `Call::pull_audio` (decode, mix).
    pub send_time: Duration,
    pub pull_time: Duration,
    /// Audio datagrams given to the call, and the time in `Call::handle_datagram` (open).
    pub received: u64,
    pub receive_time: Duration,
}

/// What a member's voice generator must provide (the examples' synthetic voices).
pub trait Fill {
    fn fill(&mut self, out: &mut [i16]);
}

/// One member: its call, its TextRoom link, its VideoRoom publisher and subscriptions.
pub struct Member {
    pub call: Call<Provider, JanusTransport>,
    pub text: Link,
    /// VideoRoom publisher: handle, feed, link.
    pub publisher: Option<(u64, u64, Link)>,
    /// VideoRoom subscriptions: feed, link.
    pub subs: Vec<(u64, Link)>,
    pub voice: Box<dyn Fill>,
    pub events: Vec<CallEvent>,
    /// Decoded frames per other member after the removal, for Carol.
    pub removed_at: Option<Instant>,
    pub report: Report,
}

/// A Janus session and the members it serves.
pub struct World {
    pub session: Session,
    pub members: Vec<Member>,
    pub sent_to: HashSet<SocketAddr>,
    pub media_room: Option<u64>,
    pub sdps: Vec<String>,
    /// When the next 20 ms frame is due.
    pub next_tick: Option<Instant>,
}

impl World {
    /// No members yet, on a new Janus session.
    pub fn new(port: u16) -> World {
        World {
            session: Session::new(port),
            members: Vec::new(),
            sent_to: HashSet::new(),
            media_room: None,
            sdps: Vec::new(),
            next_tick: None,
        }
    }

    /// Moves everything one step: sockets, Janus events, the calls' datagrams and timers.
    pub fn pump(&mut self) {
        let now = Instant::now();
        for m in &mut self.members {
            m.text.pump(&mut self.sent_to);
            for e in std::mem::take(&mut m.text.events) {
                if let PeerEvent::Data(bytes) = e {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let _ = m.call.handle_datagram(&JanusTransport::inbound(&text), now);
                }
            }
            if let Some((_, _, link)) = &mut m.publisher {
                link.pump(&mut self.sent_to);
                link.events.clear();
            }
            for (_, link) in &mut m.subs {
                link.pump(&mut self.sent_to);
                for e in std::mem::take(&mut link.events) {
                    if let PeerEvent::Audio { payload, .. } = e {
                        let t = Instant::now();
                        let _ = m
                            .call
                            .handle_datagram(&JanusTransport::audio(&payload), now);
                        m.report.receive_time += t.elapsed();
                        m.report.received += 1;
                    }
                }
            }
            if m.call.poll_timeout().is_some_and(|t| t <= now) {
                m.call.handle_timeout(now);
            }
            let mut buf = Vec::new();
            while m.call.poll_transmit(&mut buf) {
                match JanusTransport::outbound(&buf) {
                    Some(JanusOutbound::Audio(payload)) => {
                        if let Some((_, _, link)) = &mut m.publisher {
                            if link.peer.is_connected() {
                                let _ = link.peer.send_audio(payload, now);
                            }
                        }
                    }
                    Some(JanusOutbound::Text(texts)) => {
                        for t in texts {
                            let _ = m.text.peer.send_text(t);
                        }
                    }
                    None => panic!("the engine wrote something JanusTransport cannot split"),
                }
            }
            while let Some(e) = m.call.poll_event() {
                m.events.push(e);
            }
            m.text.pump(&mut self.sent_to);
        }
    }

    pub fn wait(&mut self, handle: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.session.take(handle, &pred) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} from janus; events: {:?}",
                self.session.seen()
            );
            self.pump();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A TextRoom peer connection (Janus offers, the link answers).
    pub fn textroom_link(&mut self) -> Link {
        let handle = self.session.attach_plugin("janus.plugin.textroom");
        self.session
            .message(handle, json!({"request": "setup"}), None);
        self.answer_offer(handle, "ack")
    }

    /// Waits for Janus's offer on `handle`, answers it from a new link with `request`.
    fn answer_offer(&mut self, handle: u64, request: &str) -> Link {
        let offer = self.wait(handle, "an offer", |e| e["jsep"].is_object());
        let sdp = offer["jsep"]["sdp"].as_str().unwrap().to_string();
        let mut link = Link::new(Instant::now());
        let answer = link.peer.accept_offer(&sdp).unwrap();
        self.sdps.push(sdp);
        self.sdps.push(answer.clone());
        self.session.message(
            handle,
            json!({"request": request}),
            Some(json!({"type": "answer", "sdp": answer})),
        );
        link
    }

    /// Publishes member `i`'s audio in the media room (made by the first to publish).
    pub fn publish(&mut self, i: usize) {
        let room = match self.media_room {
            Some(r) => r,
            None => {
                let group = self.members[i].call.room().unwrap().group_id().to_vec();
                let digest: [u8; 32] = {
                    use sha2::Digest;
                    sha2::Sha256::new()
                        .chain_update(b"test: janus media room")
                        .chain_update(&group)
                        .finalize()
                        .into()
                };
                let room = u64::from_be_bytes(digest[..8].try_into().unwrap()) >> 12;
                let admin = self.session.attach();
                let r = self.session.message(
                    admin,
                    json!({"request": "create", "room": room, "audiocodec": "opus",
                           "require_e2ee": true, "publishers": 8, "audiolevel_ext": false}),
                    None,
                );
                assert_eq!(r["plugindata"]["data"]["videoroom"], "created", "{r}");
                self.media_room = Some(room);
                room
            }
        };
        let handle = self.session.attach();
        self.session.message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room}),
            None,
        );
        let joined = self.wait(handle, "joined", |e| {
            e["plugindata"]["data"]["videoroom"] == "joined"
        });
        let feed = joined["plugindata"]["data"]["id"].as_u64().unwrap();
        let mut link = Link::new(Instant::now());
        let offer = link.peer.offer(Direction::SendOnly, false).unwrap();
        self.sdps.push(offer.clone());
        self.session.message(
            handle,
            json!({"request": "publish"}),
            Some(json!({"type": "offer", "sdp": offer, "e2ee": true})),
        );
        self.members[i].publisher = Some((handle, feed, link));
        let answer = self.wait(handle, "publish answer", |e| e["jsep"].is_object());
        let sdp = answer["jsep"]["sdp"].as_str().unwrap().to_string();
        self.sdps.push(sdp.clone());
        if let Some((_, _, link)) = &mut self.members[i].publisher {
            link.peer.accept_answer(&sdp).unwrap();
        }
        self.wait(handle, "publisher webrtcup", |e| e["janus"] == "webrtcup");
        // Those already publishing.
        for p in joined["plugindata"]["data"]["publishers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(f) = p["id"].as_u64() {
                self.subscribe(i, f);
            }
        }
    }

    /// Subscribes member `i` to `feed` (one peer connection per feed).
    pub fn subscribe(&mut self, i: usize, feed: u64) {
        let room = self.media_room.unwrap();
        if self.members[i].subs.iter().any(|(f, _)| *f == feed) {
            return;
        }
        let handle = self.session.attach();
        self.session.message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room,
                   "streams": [{"feed": feed}]}),
            None,
        );
        let link = self.answer_offer(handle, "start");
        self.members[i].subs.push((feed, link));
    }

    /// New publishers announced to member `i`'s publisher handle.
    pub fn follow_publishers(&mut self, i: usize) {
        let Some((handle, _, _)) = &self.members[i].publisher else {
            return;
        };
        let handle = *handle;
        while let Some(e) = self
            .session
            .take(handle, |e| e["plugindata"]["data"]["publishers"].is_array())
        {
            for p in e["plugindata"]["data"]["publishers"].as_array().unwrap() {
                if let Some(f) = p["id"].as_u64() {
                    self.subscribe(i, f);
                }
            }
        }
    }

    /// Runs the call for `d`, every member in the room sending and pulling 20 ms frames.
    /// Runs the call for `d`: ticks on one 20 ms grid for the whole run (however `talk` is
    /// called), pumping in between.
    pub fn talk(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let next = *self.next_tick.get_or_insert_with(Instant::now);
            while Instant::now() < next.min(end) {
                self.pump();
                std::thread::sleep(Duration::from_millis(1));
            }
            if Instant::now() >= end && next > end {
                return;
            }
            self.next_tick = Some(next + Duration::from_millis(20));
            self.tick();
            if Instant::now() >= end {
                return;
            }
        }
    }

    /// One 20 ms frame: members in the room publish (once) and follow new publishers, send
    /// a frame of their voice and pull the mix; counted in their [`Report`].
    pub fn tick(&mut self) {
        let mut pcm = vec![0i16; 960];
        let mut out = vec![0i16; 960];
        let now = Instant::now();
        for i in 0..self.members.len() {
            let in_room = self.members[i].call.is_in_room();
            if in_room && self.members[i].publisher.is_none() {
                self.publish(i);
            }
            self.follow_publishers(i);
            let m = &mut self.members[i];
            if m.call.is_in_room() {
                m.voice.fill(&mut pcm);
                let sent = m.call.stats().frames_sent;
                let t = Instant::now();
                let _ = m.call.send_audio(&pcm, now);
                m.report.send_time += t.elapsed();
                m.report.sent += m.call.stats().frames_sent - sent;
                let before: Vec<_> = m
                    .call
                    .voices()
                    .map(|v| ((v.member, v.stream), v.stats))
                    .collect();
                let t = Instant::now();
                let _ = m.call.pull_audio(&mut out, now);
                m.report.pull_time += t.elapsed();
                m.report.ticks += 1;
                for v in m.call.voices() {
                    let b = before
                        .iter()
                        .find(|(id, _)| *id == (v.member, v.stream))
                        .map(|(_, s)| *s)
                        .unwrap_or_default();
                    m.report.opened += v.stats.decoded - b.decoded;
                    m.report.fec += v.stats.fec_recovered - b.fec_recovered;
                    m.report.concealed += v.stats.concealed - b.concealed;
                }
            }
        }
        self.pump();
    }

    pub fn converged(&self, who: &[usize]) -> bool {
        let codes: HashSet<String> = who
            .iter()
            .filter_map(|i| self.members[*i].call.safety_code().map(|c| c.to_string()))
            .collect();
        codes.len() == 1
            && who.iter().all(|i| {
                let c = &self.members[*i].call;
                c.is_in_room() && c.can_speak() && c.members().count() + 1 == who.len()
            })
    }
}
