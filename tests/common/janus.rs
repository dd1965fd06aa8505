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
