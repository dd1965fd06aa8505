//! A lossless in-process room of `sotto::call::Call`s around sotto's relay `Router`, on
//! virtual time, every datagram delivered at once. For the call benchmark
//! (`benches/call.rs`) and the allocation and memory tests (`tests/call_no_alloc.rs`),
//! which include it with `#[path]`.
//!
//! A member can be detached ([`CallRoom::detach`]): what the relay sends it from then on
//! is kept in its inbox instead of delivered, so a benchmark can feed it to the detached
//! `Call` (or to a copy of its parts) outside the room's own bookkeeping. Raw connections
//! ([`CallRoom::add_raw`]) have no `Call`: everything the relay sends them stays in their
//! inbox.
#![allow(dead_code)]

use sotto::room::MlsSuite;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sotto::call::{Call, CallConfig};
use sotto::provider::Provider;
use sotto::relay::{ConnId, Router, RouterLimits};
use sotto::room::Identity;

/// One audio frame interval, and one step of virtual time.
pub const FRAME: Duration = Duration::from_millis(20);

/// Members invited per commit while building a room.
const BATCH: usize = 10;

pub struct CallRoom {
    pub router: Router,
    pub now: Instant,
    /// The members, by connection; `None`: detached or raw.
    pub calls: Vec<Option<Call>>,
    /// What the relay sent each detached or raw connection, oldest first.
    pub inbox: Vec<Vec<Vec<u8>>>,
    datagram: Vec<u8>,
    pcm: Vec<i16>,
    out: Vec<i16>,
}

impl CallRoom {
    pub fn new(now: Instant) -> CallRoom {
        CallRoom {
            router: Router::new(RouterLimits::default(), &[0x5a; 32]),
            now,
            calls: Vec::new(),
            inbox: Vec::new(),
            datagram: Vec::new(),
            pcm: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Builds a room of `n` members over the relay: member 0 creates it and invites the
    /// others in batches; returns once every member is in the room at the same epoch, has
    /// made its own commit and seals in that epoch (no commit is due any more, with
    /// `config.self_update_every` = `None`). Members in `speakers` send audio on every
    /// frame, members in `pullers` pull it.
    pub fn build(
        n: usize,
        config: &CallConfig,
        now: Instant,
        speakers: &[usize],
        pullers: &[usize],
        voice: &mut impl FnMut(usize, &mut [i16]),
    ) -> CallRoom {
        let mut room = CallRoom::new(now);
        let creator = Identity::new(Provider::new().unwrap(), b"m00").unwrap();
        room.add(Call::create(creator, config.clone(), now).unwrap());
        room.pump();
        let mut invited = 1;
        while invited < n {
            let batch = BATCH.min(n - invited);
            let mut kps = Vec::new();
            for k in invited..invited + batch {
                let identity =
                    Identity::new(Provider::new().unwrap(), format!("m{k:02}").as_bytes()).unwrap();
                let kp = identity.key_package(MlsSuite::Classic).unwrap();
                kps.push(kp.bytes.clone());
                room.add(Call::join(identity, kp, config.clone(), room.now).unwrap());
            }
            room.pump();
            assert!(
                room.run_until(Duration::from_secs(5), speakers, pullers, voice, |r| {
                    r.call(0).ready_to_commit()
                }),
                "the creator never became ready to commit"
            );
            let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
            let now = room.now;
            room.calls[0].as_mut().unwrap().invite(&refs, now).unwrap();
            room.pump();
            invited += batch;
            assert!(
                room.run_until(
                    Duration::from_secs(60),
                    speakers,
                    pullers,
                    voice,
                    CallRoom::quiet
                ),
                "the room never settled with {invited} members:\n{}",
                room.describe()
            );
        }
        room
    }

    pub fn add(&mut self, call: Call) -> usize {
        self.calls.push(Some(call));
        self.inbox.push(Vec::new());
        self.calls.len() - 1
    }

    /// A connection with no `Call`: what the relay sends it stays in its inbox.
    pub fn add_raw(&mut self) -> usize {
        self.calls.push(None);
        self.inbox.push(Vec::new());
        self.calls.len() - 1
    }

    pub fn call(&self, i: usize) -> &Call {
        self.calls[i].as_ref().expect("attached")
    }

    /// Takes member `i` out of the room's delivery: from now on what the relay sends it
    /// is kept in `inbox[i]`, and what it sends goes nowhere unless handed to [`send`].
    pub fn detach(&mut self, i: usize) -> Call {
        self.calls[i].take().expect("attached")
    }

    /// Every attached member in the room at the same epoch, sealing in it, with nothing
    /// left to commit (its own commit made, none in flight).
    pub fn quiet(&self) -> bool {
        let calls: Vec<&Call> = self.calls.iter().flatten().collect();
        let Some(epoch) = calls.first().and_then(|c| c.epoch()) else {
            return false;
        };
        calls.iter().all(|c| {
            c.is_in_room()
                && c.epoch() == Some(epoch)
                && c.media().sending_epoch() == Some(epoch)
                && c.room()
                    .is_some_and(|r| r.can_seal() && !r.has_pending_commit())
                && c.ready_to_commit()
        })
    }

    /// Every attached member quiet and settled (has heard every other member in the
    /// current epoch).
    pub fn converged(&self) -> bool {
        self.quiet() && self.calls.iter().flatten().all(Call::is_settled)
    }

    /// Each member's state, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, c) in self.calls.iter().enumerate() {
            let Some(c) = c else {
                s += &format!("{i}: detached or raw\n");
                continue;
            };
            s += &format!(
                "{i}: in room {} epoch {:?} sending {:?} can seal {:?} pending {:?} ready {} settled {} {:?}\n",
                c.is_in_room(),
                c.epoch(),
                c.media().sending_epoch(),
                c.room().map(|r| r.can_seal()),
                c.room().map(|r| r.has_pending_commit()),
                c.ready_to_commit(),
                c.is_settled(),
                c.stats(),
            );
        }
        s
    }

    /// Hands `bytes` from connection `from` to the relay and delivers everything that
    /// follows.
    pub fn send(&mut self, from: usize, bytes: &[u8]) {
        let mut queue = VecDeque::from([(from, bytes.to_vec())]);
        self.run_queue(&mut queue);
    }

    /// Moves everything the attached members queued through the relay until nothing
    /// moves.
    pub fn pump(&mut self) {
        let mut queue = VecDeque::new();
        for i in 0..self.calls.len() {
            self.drain(i, &mut queue);
        }
        self.run_queue(&mut queue);
    }

    fn drain(&mut self, i: usize, queue: &mut VecDeque<(usize, Vec<u8>)>) {
        let Some(call) = self.calls[i].as_mut() else {
            return;
        };
        while call.poll_transmit(&mut self.datagram) {
            queue.push_back((i, self.datagram.clone()));
        }
        while call.poll_event().is_some() {}
    }

    fn run_queue(&mut self, queue: &mut VecDeque<(usize, Vec<u8>)>) {
        let now = self.now;
        let mut replies: Vec<(usize, Vec<u8>)> = Vec::new();
        while let Some((from, bytes)) = queue.pop_front() {
            let _ = self.router.receive(
                ConnId(from as u64),
                &bytes,
                now,
                &mut |to: ConnId, b: &[u8]| replies.push((to.0 as usize, b.to_vec())),
            );
            for (to, b) in replies.drain(..) {
                match self.calls.get_mut(to).and_then(Option::as_mut) {
                    Some(call) => {
                        let _ = call.handle_datagram(&b, now);
                        self.drain(to, queue);
                    }
                    None => self.inbox[to].push(b),
                }
            }
        }
    }

    /// One frame interval: virtual time moves by [`FRAME`], every attached member runs
    /// its due timeout, `speakers` send a frame of `voice`, `pullers` pull one, and
    /// everything sent is delivered.
    pub fn tick(
        &mut self,
        speakers: &[usize],
        pullers: &[usize],
        voice: &mut impl FnMut(usize, &mut [i16]),
    ) {
        self.now += FRAME;
        let now = self.now;
        for i in 0..self.calls.len() {
            let Some(call) = self.calls[i].as_mut() else {
                continue;
            };
            if call.poll_timeout().is_some_and(|t| t <= now) {
                call.handle_timeout(now);
            }
            let samples = call.frame_samples();
            if speakers.contains(&i) {
                self.pcm.resize(samples, 0);
                voice(i, &mut self.pcm);
                call.send_audio(&self.pcm, now).unwrap();
            }
            if pullers.contains(&i) {
                self.out.resize(samples, 0);
                call.pull_audio(&mut self.out, now).unwrap();
            }
        }
        self.pump();
    }

    /// Ticks until `done` holds (checked before each tick) or `limit` passes.
    pub fn run_until(
        &mut self,
        limit: Duration,
        speakers: &[usize],
        pullers: &[usize],
        voice: &mut impl FnMut(usize, &mut [i16]),
        done: impl Fn(&CallRoom) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.tick(speakers, pullers, voice);
        }
        done(self)
    }

    /// Ticks for `d`.
    pub fn run(
        &mut self,
        d: Duration,
        speakers: &[usize],
        pullers: &[usize],
        voice: &mut impl FnMut(usize, &mut [i16]),
    ) {
        let end = self.now + d;
        while self.now < end {
            self.tick(speakers, pullers, voice);
        }
    }
}
