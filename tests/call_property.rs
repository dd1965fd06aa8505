//! Property test of the call engine on the simulated network (`common/call_net.rs`).
//!
//! Three to six members, every datagram in both directions delayed (up to 80 ms), lost (up
//! to 10 %) and duplicated (so reordered), random member operations (invite a new joiner,
//! remove a member, self-update, leave) issued only by members ready to commit, and random
//! relay restarts. Afterwards, on a network that still delays and duplicates but no longer
//! loses, the property is that
//!
//! - every member in the room reaches the same epoch and safety code and hears every other
//!   (`CallNet::converged`), and their member lists agree;
//! - everyone removed (or whose leave was committed) knows it, has no voices left, and
//!   hears nothing after its removal;
//! - after one more epoch change, every member opens a frame of the new epoch from every
//!   other within the switch delay plus the commit's and a frame's trip through the relay.
//!
//! Each seed is its own test (8 seeds): fixed impairment and operations per seed, every loop
//! bounded in steps and virtual time. `sweep` (ignored) runs many more seeds and prints a
//! summary: `SOTTO_CALL_SEEDS=200 cargo test --test call_property -- --ignored --nocapture`.
#![cfg(feature = "opus")]

#[path = "common/call_net.rs"]
mod call_net;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use call_net::{CallNet, Impairment, Rng, FRAME, TICK};
use sotto::call::{CallConfig, CallError, CallEvent, Warning};
use sotto::frame::Header;
use sotto::keys::MemberId;
use sotto::media::MediaConfig;
use sotto::relay::RelayMessage;

const MIN_MEMBERS: usize = 3;
const MAX_MEMBERS: usize = 6;
/// Operation slots of the random phase (each may also restart the relay).
const OPS: usize = 12;
/// How long an operation slot waits for a member ready to commit.
const READY_LIMIT: Duration = Duration::from_secs(4);
/// Percent of operation slots that restart the relay.
const RESTART_PERCENT: u64 = 12;
/// Bounds of virtual time.
const FORM_LIMIT: Duration = Duration::from_secs(30);
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
const MEASURE_LIMIT: Duration = Duration::from_secs(10);

/// An operation the test (the app) asked of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Invite(usize),
    Remove(usize),
    Update,
}

/// What a run did and measured.
#[derive(Debug, Default)]
struct Report {
    seed: u64,
    impairment: String,
    invites: u32,
    removes: u32,
    updates: u32,
    leaves: u32,
    restarts: u64,
    /// Operation calls that returned an error, by error.
    errors: BTreeMap<String, u32>,
    /// Slots in which no member became ready to commit in time.
    not_ready: u32,
    /// App commits that lost the race or went unechoed (asked again).
    dropped: u32,
    /// Members at the end.
    members: usize,
    /// Virtual time until everything settled after the random phase.
    settle: Duration,
    /// After the last epoch change: worst time until a listener opened a frame of the new
    /// epoch from a speaker, until it decoded one, and until every listener was settled.
    open_window: Duration,
    decode_window: Duration,
    settled_window: Duration,
    /// The bound the open window was held to.
    bound: Duration,
    /// Handshake messages refused / held early, over all members.
    refused: u64,
    early: u64,
}

struct Sim {
    net: CallNet,
    rng: Rng,
    config: CallConfig,
    report: Report,
    /// Events of each node looked at so far.
    seen: Vec<usize>,
    /// Each node's app operation whose commit is in flight.
    in_flight: Vec<Option<Op>>,
    /// KeyPackage of each joiner node.
    key_packages: BTreeMap<usize, Vec<u8>>,
    /// Joiners invited and not in the room yet.
    joiners: BTreeSet<usize>,
    /// Joiners whose invitation is to be asked again (its commit was dropped).
    reinvite: Vec<usize>,
    /// Victims whose removal is to be asked again.
    reremove: Vec<usize>,
    /// Nodes that asked to leave.
    leavers: BTreeSet<usize>,
    /// Nodes a member asked to remove.
    victims: BTreeSet<usize>,
    /// Nodes seen removed, with the frames they had heard by then.
    removed: BTreeMap<usize, u64>,
    next_name: usize,
    /// What happened when (virtual ms since start): epoch changes, restarts, operations.
    log: Vec<String>,
    start: Instant,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
        let impairment = Impairment {
            loss: rng.below(11),
            duplicate: rng.below(11),
            max_delay: Duration::from_millis(rng.below(81)),
        };
        let net = CallNet::new(seed, impairment, Instant::now());
        let start = net.now;
        Sim {
            start,
            net,
            rng,
            config: CallConfig::default(),
            report: Report {
                seed,
                impairment: format!("{impairment:?}"),
                ..Report::default()
            },
            seen: Vec::new(),
            in_flight: Vec::new(),
            key_packages: BTreeMap::new(),
            joiners: BTreeSet::new(),
            reinvite: Vec::new(),
            reremove: Vec::new(),
            leavers: BTreeSet::new(),
            victims: BTreeSet::new(),
            removed: BTreeMap::new(),
            next_name: 0,
            log: Vec::new(),
        }
    }

    fn name(&mut self) -> String {
        self.next_name += 1;
        format!("m{}", self.next_name - 1)
    }

    fn grow(&mut self) {
        self.seen.resize(self.net.nodes.len(), 0);
        self.in_flight.resize(self.net.nodes.len(), None);
    }

    fn error(&mut self, what: &str, e: &CallError) {
        let kind = format!("{what}: {e:?}");
        let kind = kind.split('(').next().unwrap_or(&kind).to_string();
        *self.report.errors.entry(kind).or_default() += 1;
    }

    /// The node's own member id.
    fn id_of(&self, node: usize) -> Option<MemberId> {
        let room = self.net.nodes[node].call.room()?;
        let own = room.own_leaf();
        room.members()
            .into_iter()
            .find(|m| m.leaf == own)
            .map(|m| m.id)
    }

    /// Members in the room that neither leave nor are being removed.
    fn staying(&self) -> Vec<usize> {
        self.net
            .active()
            .into_iter()
            .filter(|n| !self.leavers.contains(n) && !self.victims.contains(n))
            .collect()
    }

    /// How many members the room is heading for.
    fn size(&self) -> usize {
        self.staying().len() + self.joiners.len()
    }

    /// A random staying member ready to commit.
    fn ready_actor(&mut self) -> Option<usize> {
        let ready: Vec<usize> = self
            .staying()
            .into_iter()
            .filter(|n| self.net.nodes[*n].call.ready_to_commit())
            .collect();
        if ready.is_empty() {
            return None;
        }
        Some(ready[self.rng.below(ready.len() as u64) as usize])
    }

    /// One network step, then the app's reactions to what happened.
    fn step(&mut self) {
        self.net.step(&mut |_| true);
        self.react();
    }

    fn run(&mut self, d: Duration) {
        let end = self.net.now + d;
        while self.net.now < end {
            self.step();
        }
    }

    fn react(&mut self) {
        self.grow();
        for n in 0..self.net.nodes.len() {
            while self.seen[n] < self.net.nodes[n].events.len() {
                let i = self.seen[n];
                self.seen[n] += 1;
                if let CallEvent::EpochChanged { epoch, safety_code } = &self.net.nodes[n].events[i]
                {
                    let line = format!(
                        "{:>6} {} epoch {epoch} {}",
                        (self.net.now - self.start).as_millis(),
                        self.net.nodes[n].name,
                        &safety_code.to_string()[..5]
                    );
                    self.log.push(line);
                }
                let (dropped, joined, removed) = match &self.net.nodes[n].events[i] {
                    CallEvent::CommitDropped | CallEvent::Warning(Warning::CommitUnconfirmed) => {
                        (true, false, false)
                    }
                    CallEvent::Joined { .. } => (false, true, false),
                    CallEvent::Removed => (false, false, true),
                    _ => (false, false, false),
                };
                if dropped {
                    // The app asks its operation again (the engine redoes its own updates).
                    match self.in_flight[n].take() {
                        Some(Op::Invite(j)) => {
                            self.report.dropped += 1;
                            if !self.net.nodes[j].call.is_in_room() {
                                self.reinvite.push(j);
                            }
                        }
                        Some(Op::Remove(v)) => {
                            self.report.dropped += 1;
                            if !self.net.nodes[v].call.is_removed() {
                                self.reremove.push(v);
                            }
                        }
                        Some(Op::Update) => self.report.dropped += 1,
                        None => {}
                    }
                }
                if joined {
                    self.joiners.remove(&n);
                }
                if removed {
                    self.removed.insert(n, self.net.nodes[n].heard_frames);
                }
            }
            // A commit that is no longer pending and was not dropped was confirmed.
            if self.in_flight[n].is_some()
                && !self.net.nodes[n]
                    .call
                    .room()
                    .is_some_and(|r| r.has_pending_commit())
            {
                self.in_flight[n] = None;
            }
        }
    }

    /// Invites `joiner` (or a new one) by `actor`.
    fn invite(&mut self, actor: usize, joiner: Option<usize>) {
        let joiner = match joiner {
            Some(j) => j,
            None => {
                let name = self.name();
                let (j, kp) = self.net.joiner(&name, self.config.clone());
                self.grow();
                self.key_packages.insert(j, kp);
                self.joiners.insert(j);
                j
            }
        };
        let kp = self.key_packages[&joiner].clone();
        let now = self.net.now;
        match self.net.nodes[actor].call.invite(&[&kp], now) {
            Ok(()) => {
                self.report.invites += 1;
                self.in_flight[actor] = Some(Op::Invite(joiner));
            }
            Err(e) => {
                self.error("invite", &e);
                self.reinvite.push(joiner);
            }
        }
    }

    fn remove(&mut self, actor: usize, victim: usize) {
        let Some(id) = self.id_of(victim) else {
            return;
        };
        let now = self.net.now;
        match self.net.nodes[actor].call.remove(id, now) {
            Ok(()) => {
                self.report.removes += 1;
                self.victims.insert(victim);
                self.in_flight[actor] = Some(Op::Remove(victim));
            }
            Err(CallError::NoSuchMember) if self.net.nodes[victim].call.is_removed() => {}
            Err(e) => {
                self.error("remove", &e);
                self.victims.insert(victim);
                self.reremove.push(victim);
            }
        }
    }

    fn update(&mut self, actor: usize) {
        let now = self.net.now;
        match self.net.nodes[actor].call.self_update(now) {
            Ok(()) => {
                self.report.updates += 1;
                self.in_flight[actor] = Some(Op::Update);
            }
            Err(e) => self.error("self_update", &e),
        }
    }

    /// The room forms: a creator and two joiners, invited one after the other.
    fn form(&mut self) -> Result<(), String> {
        let name = self.name();
        self.net.create(&name, self.config.clone());
        self.grow();
        let end = self.net.now + FORM_LIMIT;
        let mut invited = 1;
        while self.net.now < end && (invited < MIN_MEMBERS || !self.joiners.is_empty()) {
            if self.net.nodes[0].call.ready_to_commit() {
                if let Some(j) = self.reinvite.pop() {
                    self.invite(0, Some(j));
                } else if self.joiners.is_empty() && invited < MIN_MEMBERS {
                    invited += 1;
                    self.invite(0, None);
                }
            }
            self.step();
        }
        if invited < MIN_MEMBERS || !self.joiners.is_empty() {
            return Err(format!("the room never formed\n{}", self.describe()));
        }
        Ok(())
    }

    /// Random operations and relay restarts.
    fn random_phase(&mut self) {
        for _ in 0..OPS {
            let gap = Duration::from_millis(200 + self.rng.below(1801));
            self.run(gap);
            if self.rng.chance(RESTART_PERCENT) {
                self.net.restart_relay();
                let line = format!(
                    "{:>6} relay restart",
                    (self.net.now - self.start).as_millis()
                );
                self.log.push(line);
            }
            let kind = self.rng.below(4);
            // Leaving needs no commit of the leaver.
            if kind == 3 {
                let staying = self.staying();
                if self.size() > MIN_MEMBERS {
                    let n = staying[self.rng.below(staying.len() as u64) as usize];
                    let now = self.net.now;
                    match self.net.nodes[n].call.leave(now) {
                        Ok(()) => {
                            self.report.leaves += 1;
                            self.leavers.insert(n);
                        }
                        Err(e) => self.error("leave", &e),
                    }
                    continue;
                }
            }
            // A member ready to commit (after an epoch change the others must be heard in
            // the new epoch first): waited for, a bounded time.
            let end = self.net.now + READY_LIMIT;
            let actor = loop {
                match self.ready_actor() {
                    Some(a) => break Some(a),
                    None if self.net.now >= end => break None,
                    None => self.step(),
                }
            };
            let Some(actor) = actor else {
                self.report.not_ready += 1;
                continue;
            };
            match kind {
                0 if self.size() < MAX_MEMBERS || !self.reinvite.is_empty() => {
                    let again = self.reinvite.pop();
                    self.invite(actor, again);
                }
                1 | 3 if self.size() > MIN_MEMBERS || !self.reremove.is_empty() => {
                    let victim = self.reremove.pop().or_else(|| {
                        let others: Vec<usize> =
                            self.staying().into_iter().filter(|n| *n != actor).collect();
                        (!others.is_empty())
                            .then(|| others[self.rng.below(others.len() as u64) as usize])
                    });
                    if let Some(v) = victim {
                        self.remove(actor, v);
                    }
                }
                _ => self.update(actor),
            }
        }
    }

    /// Whether everything asked for has happened and the room converged.
    fn settled(&self) -> bool {
        self.reinvite.is_empty()
            && self.reremove.is_empty()
            && self.joiners.is_empty()
            && self
                .leavers
                .iter()
                .chain(&self.victims)
                .all(|n| self.net.nodes[*n].call.is_removed())
            && self.net.converged()
    }

    /// Re-asks dropped operations, commits pending leaves, until settled.
    fn settle(&mut self) -> Result<(), String> {
        let start = self.net.now;
        let end = start + SETTLE_LIMIT;
        let mut last_leave_commit = start;
        while self.net.now < end && !self.settled() {
            if let Some(actor) = self.ready_actor() {
                if let Some(j) = self.reinvite.pop() {
                    self.invite(actor, Some(j));
                } else if let Some(v) = self.reremove.pop() {
                    if self.net.nodes[v].call.is_in_room() {
                        self.remove(actor, v);
                    }
                } else if self
                    .leavers
                    .iter()
                    .any(|n| !self.net.nodes[*n].call.is_removed())
                    && self.net.now.saturating_duration_since(last_leave_commit)
                        >= Duration::from_millis(1500)
                {
                    // Someone commits the queued leave proposals.
                    last_leave_commit = self.net.now;
                    self.update(actor);
                }
            }
            self.step();
        }
        self.report.settle = self.net.now - start;
        if self.settled() {
            Ok(())
        } else {
            Err(format!(
                "not settled after {:?}:\n{}",
                SETTLE_LIMIT,
                self.describe()
            ))
        }
    }

    /// Member lists agree with who is in the room; the removed know it and hear nothing.
    fn check_membership(&self) -> Result<(), String> {
        let active = self.net.active();
        let ids: BTreeMap<usize, MemberId> = active
            .iter()
            .map(|n| (*n, self.id_of(*n).expect("a member has a leaf")))
            .collect();
        for n in &active {
            let listed: BTreeSet<MemberId> = self.net.nodes[*n]
                .call
                .members()
                .map(|(id, _)| id)
                .collect();
            let expected: BTreeSet<MemberId> = ids
                .iter()
                .filter(|(m, _)| *m != n)
                .map(|(_, id)| *id)
                .collect();
            if listed != expected {
                return Err(format!(
                    "{} lists {listed:?}, the room is {expected:?}",
                    self.net.nodes[*n].name
                ));
            }
        }
        for n in self.leavers.iter().chain(&self.victims) {
            let node = &self.net.nodes[*n];
            if !node.call.is_removed() || node.call.is_in_room() {
                return Err(format!("{} was not removed", node.name));
            }
            if node.call.voices().count() != 0 {
                return Err(format!("{} still has voices", node.name));
            }
            let heard = self.removed.get(n).copied();
            if heard != Some(node.heard_frames) {
                return Err(format!(
                    "{} heard {} frames, {heard:?} when removed",
                    node.name, node.heard_frames
                ));
            }
        }
        Ok(())
    }

    /// One more epoch change (a self-update): the time until each listener opens, and then
    /// decodes, a frame of the new epoch from each speaker.
    fn measure(&mut self) -> Result<(), String> {
        let switch = MediaConfig::default().switch_delay;
        let max_delay = self.net.impairment.max_delay;
        // The commit to the relay and back, then a frame (sealed at most one frame interval
        // after the switch) to the relay and on: four trips (each up to a step late), a
        // frame and a step.
        let bound = switch + 4 * (max_delay + TICK) + FRAME + TICK;
        self.report.bound = bound;
        let end = self.net.now + MEASURE_LIMIT;
        let actor = loop {
            if let Some(a) = self.ready_actor() {
                break a;
            }
            if self.net.now >= end {
                return Err("no member ready to commit for the last epoch change".into());
            }
            self.step();
        };
        let before = self.net.nodes[actor].call.epoch().unwrap_or(0);
        let epoch = before + 1;
        let changes: Vec<u64> = self
            .net
            .nodes
            .iter()
            .map(|n| n.call.stats().epoch_changes)
            .collect();
        self.net.delivered.clear();
        self.net.record_delivered = true;
        let t0 = self.net.now;
        self.update(actor);
        if self.in_flight[actor] != Some(Op::Update) {
            return Err("the last self-update was refused".into());
        }
        let active = self.net.active();
        let pairs = active.len() * (active.len() - 1);
        let layout = self.config.room.params.layout;
        let mut opened: BTreeMap<(usize, usize), (Instant, u64)> = BTreeMap::new();
        let mut decoded: BTreeMap<(usize, usize), Instant> = BTreeMap::new();
        let mut settled: BTreeMap<usize, Instant> = BTreeMap::new();
        while self.net.now < end && (decoded.len() < pairs || settled.len() < active.len()) {
            self.step();
            // Who sends with which leaf in the new epoch.
            let leaves: BTreeMap<u64, usize> = active
                .iter()
                .filter_map(|n| self.id_of(*n).map(|id| (u64::from(id.leaf), *n)))
                .collect();
            for (at, to, bytes) in std::mem::take(&mut self.net.delivered) {
                let Ok(RelayMessage::Media { frame, .. }) = RelayMessage::parse(&bytes) else {
                    continue;
                };
                let Ok((header, _)) = Header::parse(frame) else {
                    continue;
                };
                let parts = layout.decompose(header.kid);
                let listener = &self.net.nodes[to].call;
                if parts.epoch_bits != epoch % layout.epoch_slots()
                    || listener.epoch() < Some(epoch)
                    || !active.contains(&to)
                {
                    continue;
                }
                let Some(speaker) = leaves.get(&parts.leaf).copied() else {
                    continue;
                };
                let Some(speaker_id) = self.id_of(speaker) else {
                    continue;
                };
                // What it had decoded, and the frames it buffered (its playout delay now).
                let frame = self.config.audio.frame_duration();
                let count = listener
                    .voices()
                    .find(|v| v.member == speaker_id)
                    .map_or(u64::from(self.config.audio.playout_delay_frames), |v| {
                        v.stats.decoded + (v.playout_delay.as_nanos() / frame.as_nanos()) as u64
                    });
                opened.entry((to, speaker)).or_insert((at, count));
            }
            for (&(l, s), &(_, count)) in &opened {
                if decoded.contains_key(&(l, s)) {
                    continue;
                }
                let Some(id) = self.id_of(s) else { continue };
                // Frames play out in order: the new epoch's first frame is decoded once the
                // count passes what was buffered when it opened.
                let now_count = self.net.nodes[l]
                    .call
                    .voices()
                    .find(|v| v.member == id)
                    .map_or(0, |v| v.stats.decoded);
                if now_count > count {
                    decoded.insert((l, s), self.net.now);
                }
            }
            for n in &active {
                if self.net.nodes[*n].call.epoch() == Some(epoch)
                    && self.net.nodes[*n].call.is_settled()
                {
                    settled.entry(*n).or_insert(self.net.now);
                }
            }
        }
        self.net.record_delivered = false;
        for (n, node) in self.net.nodes.iter().enumerate() {
            let extra = node.call.stats().epoch_changes - changes[n];
            if active.contains(&n) && extra != 1 {
                return Err(format!("{} changed epoch {extra} times", node.name));
            }
        }
        if opened.len() < pairs || decoded.len() < pairs || settled.len() < active.len() {
            let missing: Vec<String> = active
                .iter()
                .flat_map(|l| active.iter().map(move |s| (*l, *s)))
                .filter(|(l, s)| l != s && !decoded.contains_key(&(*l, *s)))
                .map(|(l, s)| format!("{}<-{}", self.net.nodes[l].name, self.net.nodes[s].name))
                .collect();
            return Err(format!(
                "after the last epoch change, not heard within {MEASURE_LIMIT:?}: {missing:?}\n{}",
                self.describe()
            ));
        }
        self.report.open_window = opened
            .values()
            .map(|(t, _)| *t - t0)
            .max()
            .unwrap_or_default();
        self.report.decode_window = decoded.values().map(|t| *t - t0).max().unwrap_or_default();
        self.report.settled_window = settled.values().map(|t| *t - t0).max().unwrap_or_default();
        if self.report.open_window > bound {
            return Err(format!(
                "a listener opened the new epoch {:?} after the commit (bound {bound:?})",
                self.report.open_window
            ));
        }
        // Readiness may lag a moment behind (a member that refused a rival commit waits).
        if !self
            .net
            .run_until(Duration::from_secs(5), CallNet::converged)
        {
            return Err(format!(
                "not converged after the last epoch change\n{}",
                self.describe()
            ));
        }
        Ok(())
    }

    /// "fork" if two members (not removed) went through different states of one epoch.
    fn classify(&self) -> &'static str {
        let mut codes: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for node in self.net.nodes.iter().filter(|n| !n.call.is_removed()) {
            for e in &node.events {
                if let CallEvent::EpochChanged { epoch, safety_code } = e {
                    codes
                        .entry(*epoch)
                        .or_default()
                        .insert(safety_code.to_string());
                }
            }
        }
        if codes.values().any(|c| c.len() > 1) {
            "fork"
        } else {
            "behind"
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {} {} restarts {} leavers {:?} victims {:?} joiners {:?} reinvite {:?} reremove {:?}",
            self.report.seed,
            self.report.impairment,
            self.net.restarts,
            self.leavers,
            self.victims,
            self.joiners,
            self.reinvite,
            self.reremove
        );
        if self.classify() == "fork" {
            for line in &self.log {
                let _ = writeln!(s, "  | {line}");
            }
        }
        for (n, node) in self.net.nodes.iter().enumerate() {
            let c = &node.call;
            let st = c.stats();
            let _ = writeln!(
                s,
                "  {n} {}: in_room {} removed {} offline {} epoch {:?} code {:?} settled {} ready {} pending {} speak {} members {} | applied {} refused {} early {} duplicate {} asked {} skipped {} commits {} dropped {} resent {} | fetches {} welcomes ignored {} delivered {} undelivered {}",
                node.name,
                c.is_in_room(),
                c.is_removed(),
                node.offline,
                c.epoch(),
                c.safety_code().map(|code| code.to_string()[..11].to_string()),
                c.is_settled(),
                c.ready_to_commit(),
                c.room().is_some_and(|r| r.has_pending_commit()),
                c.can_speak(),
                c.members().count(),
                st.handshakes_applied,
                st.handshakes_refused,
                st.handshakes_early,
                st.handshakes_duplicate,
                st.handshake_gaps_asked,
                st.handshake_gaps_skipped,
                st.commits,
                st.commits_dropped,
                st.commits_resent,
                st.fetches,
                st.welcomes_ignored,
                st.welcomes_delivered,
                node.events
                    .iter()
                    .filter(|e| matches!(e, CallEvent::Warning(Warning::WelcomeUndelivered)))
                    .count(),
            );
        }
        s
    }

    fn finish(&mut self) {
        self.report.restarts = self.net.restarts;
        self.report.members = self.net.active().len();
        for node in &self.net.nodes {
            self.report.refused += node.call.stats().handshakes_refused;
            self.report.early += node.call.stats().handshakes_early;
        }
    }
}

/// The run's report, and whether the property held.
fn run(seed: u64) -> (Report, Result<(), String>) {
    let mut sim = Sim::new(seed);
    let result = (|| -> Result<(), String> {
        sim.form()?;
        sim.random_phase();
        // The network stops losing (it still delays and duplicates, so reorders).
        sim.net.impairment.loss = 0;
        sim.settle()?;
        sim.check_membership()?;
        sim.measure()?;
        sim.check_membership()
    })()
    .map_err(|e| format!("[{}] {e}", sim.classify()));
    sim.finish();
    (std::mem::take(&mut sim.report), result)
}

fn check(seed: u64) {
    let started = std::time::Instant::now();
    match run(seed) {
        (r, Ok(())) => {
            eprintln!("{r:?} in {:?}", started.elapsed());
            // The run did something: operations went through and a window was measured.
            assert!(r.invites + r.removes + r.updates + r.leaves > 0, "{r:?}");
            assert!(
                r.open_window >= MediaConfig::default().switch_delay,
                "{r:?}"
            );
        }
        (r, Err(e)) => panic!("seed {seed}: {e}\n{r:?}"),
    }
}

macro_rules! seeds {
    ($($name:ident = $seed:expr),* $(,)?) => {
        $(#[test] fn $name() { check($seed); })*
    };
}

seeds! {
    seed_1 = 1,
    seed_2 = 2,
    seed_3 = 3,
    seed_4 = 4,
    seed_5 = 5,
    seed_6 = 6,
    seed_7 = 7,
    seed_8 = 8,
}

/// Many seeds, a summary instead of a failure at the first one.
#[test]
#[ignore]
fn sweep() {
    let seeds: u64 = std::env::var("SOTTO_CALL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let first: u64 = std::env::var("SOTTO_CALL_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut failures = Vec::new();
    let mut worst = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for seed in first..first + seeds {
        match run(seed) {
            (r, Ok(())) => {
                worst.0 = worst.0.max(r.open_window);
                worst.1 = worst.1.max(r.decode_window);
                worst.2 = worst.2.max(r.settled_window);
                eprintln!(
                    "seed {seed} ok: {} ops {}/{}/{}/{} restarts {} dropped {} errors {:?} open {:?} decode {:?} settled {:?}",
                    r.impairment, r.invites, r.removes, r.updates, r.leaves, r.restarts,
                    r.dropped, r.errors, r.open_window, r.decode_window, r.settled_window
                );
            }
            (r, Err(e)) => {
                eprintln!("seed {seed} FAILED ({}): {e}", r.impairment);
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{} of {seeds} seeds failed: {failures:?}; worst open {:?} decode {:?} settled {:?}",
        failures.len(),
        worst.0,
        worst.1,
        worst.2
    );
    assert!(failures.is_empty());
}
