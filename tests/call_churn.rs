//! Churn soak of the call engine: a room of `Call`s lives through 150 membership events
//! (invites of new joiners, removals, self-updates; 3 to 10 members; one every 0.3 to
//! 1.3 s) on the simulated network (`common/call_net.rs`), every member sending a frame
//! every 20 ms. The network delays every datagram (up to 10 ms each way, so reorders) and
//! duplicates 5 % of them, but loses none, and its jitter fits the receivers' playout
//! buffer (40 ms): every frame a current member seals reaches every other current member in
//! time, so any frame not decoded is the engine's loss. (With 40 ms each way, 80 ms of
//! jitter, about 7 % of frames arrive after their playout time: the buffer's size, not the
//! engine.) An operation goes out as soon as some member is ready to commit, so commits race
//! and members are often an epoch apart.
//!
//! Required: the room converges (one epoch, one safety code, everyone hears everyone);
//! every invited joiner joins and every removed member knows it, hears nothing after its
//! removal and keeps no voice; no receiver of a current member concealed, dropped as late,
//! or failed to authenticate a single frame (0 lost). `tests/churn.rs` soaks the layers
//! underneath (room and media session, 500 events, rogue removed members) directly.
#![cfg(feature = "opus")]

#[path = "common/call_net.rs"]
mod call_net;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use call_net::{CallNet, Impairment, Rng};
use sotto::call::{CallConfig, CallEvent};
use sotto::keys::MemberId;

const EVENTS: usize = 150;
const MIN_MEMBERS: usize = 3;
const MAX_MEMBERS: usize = 10;

/// The worst a receiver of a current member did, per (listener, speaker).
#[derive(Clone, Copy, Default, Debug)]
struct Worst {
    decoded: u64,
    concealed: u64,
    late: u64,
    auth_failures: u64,
}

struct Soak {
    net: CallNet,
    rng: Rng,
    config: CallConfig,
    /// Events of each node looked at so far.
    seen: Vec<usize>,
    joiners: BTreeMap<usize, Vec<u8>>,
    victims: BTreeSet<usize>,
    /// Removed nodes and the frames they had heard when they learned it.
    removed: BTreeMap<usize, u64>,
    receivers: BTreeMap<(usize, MemberId), Worst>,
    ops: (u32, u32, u32),
    next_name: usize,
}

impl Soak {
    fn step(&mut self) {
        self.net.step(&mut |_| true);
        self.seen.resize(self.net.nodes.len(), 0);
        for n in 0..self.net.nodes.len() {
            while self.seen[n] < self.net.nodes[n].events.len() {
                let event = &self.net.nodes[n].events[self.seen[n]];
                self.seen[n] += 1;
                match event {
                    CallEvent::Removed => {
                        self.removed.insert(n, self.net.nodes[n].heard_frames);
                    }
                    CallEvent::Joined { .. } => {
                        self.joiners.remove(&n);
                    }
                    _ => {}
                }
            }
            if !self.net.nodes[n].call.is_in_room() {
                continue;
            }
            for v in self.net.nodes[n].call.voices() {
                let w = self.receivers.entry((n, v.member)).or_default();
                w.decoded = w.decoded.max(v.stats.decoded);
                w.concealed = w.concealed.max(v.stats.concealed);
                w.late = w.late.max(v.stats.late);
                w.auth_failures = w.auth_failures.max(v.stats.auth_failures);
            }
        }
    }

    fn id_of(&self, n: usize) -> Option<MemberId> {
        let room = self.net.nodes[n].call.room()?;
        room.members()
            .into_iter()
            .find(|m| m.leaf == room.own_leaf())
            .map(|m| m.id)
    }

    /// Members in the room not being removed.
    fn staying(&self) -> Vec<usize> {
        self.net
            .active()
            .into_iter()
            .filter(|n| !self.victims.contains(n))
            .collect()
    }

    fn invite(&mut self, actor: usize) {
        self.next_name += 1;
        let name = format!("m{}", self.next_name);
        let (j, kp) = self.net.joiner(&name, self.config.clone());
        let now = self.net.now;
        if self.net.nodes[actor].call.invite(&[&kp], now).is_ok() {
            self.ops.0 += 1;
            self.joiners.insert(j, kp);
        } else {
            // Never invited: it stays out (and waits, harmlessly).
            self.net.nodes[j].offline = true;
        }
    }

    fn event(&mut self) {
        let gap = Duration::from_millis(300 + self.rng.below(1000));
        let end = self.net.now + gap;
        while self.net.now < end {
            self.step();
        }
        let size = self.staying().len() + self.joiners.len();
        let ready: Vec<usize> = self
            .staying()
            .into_iter()
            .filter(|n| self.net.nodes[*n].call.ready_to_commit())
            .collect();
        let Some(&actor) = ready.get(self.rng.below(ready.len().max(1) as u64) as usize) else {
            return;
        };
        let now = self.net.now;
        match self.rng.below(10) {
            0..=3 if size < MAX_MEMBERS => self.invite(actor),
            4..=6 if size > MIN_MEMBERS => {
                let others: Vec<usize> =
                    self.staying().into_iter().filter(|n| *n != actor).collect();
                let victim = others[self.rng.below(others.len() as u64) as usize];
                if let Some(id) = self.id_of(victim) {
                    if self.net.nodes[actor].call.remove(id, now).is_ok() {
                        self.ops.1 += 1;
                        self.victims.insert(victim);
                    }
                }
            }
            _ => {
                if self.net.nodes[actor].call.self_update(now).is_ok() {
                    self.ops.2 += 1;
                }
            }
        }
    }

    /// Removals whose commit lost a race are asked again; joiners invited again.
    fn settle(&mut self) -> bool {
        let end = self.net.now + Duration::from_secs(60);
        while self.net.now < end {
            let done = self.joiners.is_empty()
                && self
                    .victims
                    .iter()
                    .all(|v| self.net.nodes[*v].call.is_removed())
                && self.net.converged();
            if done {
                return true;
            }
            let actor = self
                .staying()
                .into_iter()
                .find(|n| self.net.nodes[*n].call.ready_to_commit());
            if let Some(actor) = actor {
                let now = self.net.now;
                if let Some(v) = self
                    .victims
                    .iter()
                    .copied()
                    .find(|v| self.net.nodes[*v].call.is_in_room())
                {
                    if let Some(id) = self.id_of(v) {
                        let _ = self.net.nodes[actor].call.remove(id, now);
                    }
                } else if let Some(kp) = self
                    .joiners
                    .iter()
                    .find(|(j, _)| !self.net.nodes[**j].call.is_in_room())
                    .map(|(_, kp)| kp.clone())
                {
                    let _ = self.net.nodes[actor].call.invite(&[&kp], now);
                }
            }
            for _ in 0..20 {
                self.step();
            }
        }
        false
    }
}

#[test]
fn churn_soak_on_calls_loses_nothing() {
    let impairment = Impairment {
        loss: 0,
        duplicate: 5,
        max_delay: Duration::from_millis(10),
    };
    let config = CallConfig::default();
    let mut soak = Soak {
        net: CallNet::new(2026, impairment, Instant::now()),
        rng: Rng(0xc4u64 << 32),
        config: config.clone(),
        seen: Vec::new(),
        joiners: BTreeMap::new(),
        victims: BTreeSet::new(),
        removed: BTreeMap::new(),
        receivers: BTreeMap::new(),
        ops: (0, 0, 0),
        next_name: 0,
    };
    soak.net.create("m0", config);
    for _ in 0..EVENTS {
        soak.event();
    }
    assert!(
        soak.settle(),
        "did not settle: joiners {:?} victims {:?}",
        soak.joiners.keys(),
        soak.victims
    );
    let (invites, removes, updates) = soak.ops;
    let epochs = soak.net.nodes[soak.net.active()[0]].call.epoch().unwrap();
    // Every removed member knows, hears nothing since, keeps no voice.
    for v in &soak.victims {
        let node = &soak.net.nodes[*v];
        assert!(node.call.is_removed(), "{} not removed", node.name);
        assert_eq!(node.call.voices().count(), 0);
        assert_eq!(
            soak.removed.get(v),
            Some(&node.heard_frames),
            "{} heard after its removal",
            node.name
        );
    }
    // The pairs of members in the room at the end: their streams never stopped, so every
    // frame not decoded was lost. (A removed member's stream stops when it learns of its
    // removal, and its listeners conceal until they merge it too: not counted.)
    let members: BTreeSet<MemberId> = soak
        .net
        .active()
        .into_iter()
        .filter_map(|n| soak.id_of(n))
        .collect();
    let survivors: Vec<&Worst> = soak
        .receivers
        .iter()
        .filter(|((l, s), _)| soak.net.nodes[*l].call.is_in_room() && members.contains(s))
        .map(|(_, w)| w)
        .collect();
    let all = soak
        .receivers
        .values()
        .fold(Worst::default(), |a, w| Worst {
            decoded: a.decoded + w.decoded,
            concealed: a.concealed + w.concealed,
            late: a.late + w.late,
            auth_failures: a.auth_failures + w.auth_failures,
        });
    let total = survivors.iter().fold(Worst::default(), |a, w| Worst {
        decoded: a.decoded + w.decoded,
        concealed: a.concealed + w.concealed,
        late: a.late + w.late,
        auth_failures: a.auth_failures + w.auth_failures,
    });
    eprintln!(
        "churn on calls: {invites} invites, {removes} removals, {updates} self-updates, \
         {epochs} epochs, {} members at the end; {} receivers of members at the end: \
         {total:?}; all {} receivers: {all:?}",
        soak.net.active().len(),
        survivors.len(),
        soak.receivers.len()
    );
    assert!(
        invites >= 20 && removes >= 10 && epochs >= 100,
        "too little churn"
    );
    assert!(total.decoded > 10_000, "{total:?}");
    assert_eq!(
        (total.concealed, total.late, total.auth_failures),
        (0, 0, 0),
        "frames lost between members in the room at the end"
    );
    // Nor did any receiver ever, removals included (a removed member's stream ends when
    // it learns of its removal, and its listeners had merged the removal by then).
    assert_eq!(
        (all.concealed, all.late, all.auth_failures),
        (0, 0, 0),
        "frames lost by any receiver"
    );
}
