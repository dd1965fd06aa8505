//! The call engine through the C ABI only (`sotto_call_*`), around sotto's relay `Router`
//! in this process: Alice creates a room, invites Bob and Carol with their KeyPackages,
//! everyone converges on one epoch and safety code and hears the others' tone; Alice
//! removes Carol, who learns it; Alice and Bob still hear each other.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sotto::relay::{ConnId, Router, RouterLimits};
use sotto_ffi::*;

const OK: SottoStatus = SottoStatus::SOTTO_OK;

struct Net {
    router: Router,
    calls: Vec<*mut SottoCall>,
    t0: Instant,
    now_ms: u64,
    buf: Vec<u8>,
}

impl Net {
    /// Moves every queued datagram through the relay until nothing moves.
    fn pump(&mut self) {
        let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
        for i in 0..self.calls.len() {
            self.drain(i, &mut queue);
        }
        let now = self.t0 + Duration::from_millis(self.now_ms);
        let mut replies = Vec::new();
        let mut moved = 0;
        while let Some((from, bytes)) = queue.pop_front() {
            moved += 1;
            assert!(moved < 100_000, "the relay never settles");
            let _ = self.router.receive(
                ConnId(from as u64),
                &bytes,
                now,
                &mut |to: ConnId, b: &[u8]| replies.push((to.0 as usize, b.to_vec())),
            );
            for (to, b) in replies.drain(..) {
                // SAFETY: a live call handle; `b` is readable for its length.
                let _ = unsafe {
                    sotto_call_handle_datagram(self.calls[to], b.as_ptr(), b.len(), self.now_ms)
                };
                self.drain(to, &mut queue);
            }
        }
    }

    fn drain(&mut self, i: usize, queue: &mut VecDeque<(usize, Vec<u8>)>) {
        loop {
            let mut n = 0;
            // SAFETY: a live call handle; `buf` is writable for its length.
            let s = unsafe {
                sotto_call_poll_transmit(
                    self.calls[i],
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                    &mut n,
                )
            };
            if s == SottoStatus::SOTTO_EMPTY {
                return;
            }
            assert_eq!(s, OK);
            queue.push_back((i, self.buf[..n].to_vec()));
        }
    }

    /// 20 ms: timeouts, every call sends a frame of its tone and pulls the mix; returns
    /// the voices each heard and the peak sample of its mix.
    fn tick(&mut self) -> Vec<(usize, i16)> {
        self.now_ms += 20;
        let mut heard = Vec::new();
        for (i, &call) in self.calls.iter().enumerate() {
            let mut due = 0;
            // SAFETY: a live call handle; local out-parameters and buffers of the stated
            // sizes.
            unsafe {
                if sotto_call_poll_timeout(call, &mut due) == OK && due <= self.now_ms {
                    assert_eq!(sotto_call_handle_timeout(call, self.now_ms), OK);
                }
                let mut samples = 0;
                assert_eq!(sotto_call_frame_samples(call, &mut samples), OK);
                let pcm: Vec<i16> = (0..samples)
                    .map(|k| {
                        let t = (self.now_ms as f64 / 1000.0) + k as f64 / 48_000.0;
                        (6000.0
                            * (2.0 * std::f64::consts::PI * (200.0 + 100.0 * i as f64) * t).sin())
                            as i16
                    })
                    .collect();
                assert_eq!(
                    sotto_call_send_audio(call, pcm.as_ptr(), samples, self.now_ms),
                    OK
                );
                let mut out = vec![0i16; samples];
                let mut voices = 0;
                let s = sotto_call_pull_audio(
                    call,
                    out.as_mut_ptr(),
                    samples,
                    &mut voices,
                    self.now_ms,
                );
                assert_eq!(s, OK);
                heard.push((
                    voices,
                    out.iter().map(|v| v.saturating_abs()).max().unwrap_or(0),
                ));
            }
        }
        self.pump();
        heard
    }

    fn code(&self, i: usize) -> Option<String> {
        let mut code = [0u8; 64];
        let mut n = 0;
        // SAFETY: a live call handle; a local buffer of the stated size.
        let s =
            unsafe { sotto_call_safety_code(self.calls[i], code.as_mut_ptr().cast(), 64, &mut n) };
        (s == OK).then(|| String::from_utf8_lossy(&code[..n - 1]).into_owned())
    }
}

fn identity(name: &str) -> *mut SottoIdentity {
    let mut id = std::ptr::null_mut();
    // SAFETY: a readable name and a writable out-pointer.
    assert_eq!(
        unsafe { sotto_identity_new(name.as_ptr(), name.len(), &mut id) },
        OK
    );
    id
}

fn key_package(id: *mut SottoIdentity) -> Vec<u8> {
    let mut kp = vec![0u8; 4096];
    let mut n = 0;
    // SAFETY: a live identity; a buffer of the stated size.
    assert_eq!(
        unsafe { sotto_identity_key_package(id, kp.as_mut_ptr(), kp.len(), &mut n) },
        OK
    );
    kp.truncate(n);
    kp
}

#[test]
fn a_call_runs_through_the_c_abi() {
    let ids = [identity("alice"), identity("bob"), identity("carol")];
    let kps: Vec<Vec<u8>> = ids[1..].iter().map(|id| key_package(*id)).collect();
    let mut calls = [std::ptr::null_mut(); 3];
    // SAFETY: live identities; writable out-pointers.
    unsafe {
        assert_eq!(sotto_call_create(ids[0], 0, &mut calls[0]), OK);
        assert_eq!(sotto_call_join(ids[1], 0, &mut calls[1]), OK);
        assert_eq!(sotto_call_join(ids[2], 0, &mut calls[2]), OK);
    }
    let mut net = Net {
        router: Router::new(RouterLimits::default(), &[0x5a; 32]),
        calls: calls.to_vec(),
        t0: Instant::now(),
        now_ms: 0,
        buf: vec![0u8; 65536],
    };
    net.pump();
    let ptrs: Vec<*const u8> = kps.iter().map(|k| k.as_ptr()).collect();
    let lens: Vec<usize> = kps.iter().map(Vec::len).collect();
    // SAFETY: a live call; arrays of 2 pointers and lengths to readable KeyPackages.
    assert_eq!(
        unsafe { sotto_call_invite(calls[0], ptrs.as_ptr(), lens.as_ptr(), 2, 0) },
        OK
    );
    net.pump();
    // Run until everyone agrees and hears both others (bounded: 10 s of virtual time).
    let mut heard_all = 0;
    for _ in 0..500 {
        let heard = net.tick();
        let codes: Vec<Option<String>> = (0..3).map(|i| net.code(i)).collect();
        let agreed = codes[0].is_some() && codes.iter().all(|c| *c == codes[0]);
        if agreed && heard.iter().all(|(v, peak)| *v == 2 && *peak > 1000) {
            heard_all += 1;
            if heard_all == 25 {
                break;
            }
        }
    }
    assert_eq!(
        heard_all, 25,
        "the call never converged with everyone heard"
    );
    let mut epochs = [0u64; 3];
    for (i, e) in epochs.iter_mut().enumerate() {
        // SAFETY: a live call; a writable out-parameter.
        assert_eq!(unsafe { sotto_call_epoch(calls[i], e) }, OK);
    }
    assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");
    println!("c abi call: epoch {} code {:?}", epochs[0], net.code(0));

    // Alice finds Carol among the members she knows, by pseudonym, and removes her.
    let mut leaves = [0u32; 8];
    let mut count = 0;
    // SAFETY: a live call; a local array of the stated length.
    assert_eq!(
        unsafe { sotto_call_members(calls[0], leaves.as_mut_ptr(), 8, &mut count) },
        OK
    );
    assert_eq!(count, 2, "Alice knows Bob and Carol");
    let carol = leaves[..count]
        .iter()
        .copied()
        .find(|leaf| {
            let mut name = [0u8; 64];
            let mut n = 0;
            // SAFETY: a live call; a local buffer of the stated size.
            let s = unsafe {
                sotto_call_member_pseudonym(calls[0], *leaf, name.as_mut_ptr(), 64, &mut n)
            };
            s == OK && &name[..n] == b"carol"
        })
        .expect("Carol is a member");
    // SAFETY: a live call.
    assert_eq!(
        unsafe { sotto_call_remove(calls[0], carol, net.now_ms) },
        OK
    );
    net.pump();
    let mut removed = 0;
    let mut after = 0;
    for _ in 0..250 {
        let heard = net.tick();
        // SAFETY: a live call; a writable out-parameter.
        unsafe { sotto_call_is_removed(calls[2], &mut removed) };
        if removed == 1 && heard[0].0 == 1 && heard[1].0 == 1 && heard[0].1 > 1000 {
            after += 1;
            if after == 25 {
                break;
            }
        }
    }
    assert_eq!(removed, 1, "Carol never learnt she was removed");
    assert_eq!(after, 25, "Alice and Bob did not go on hearing each other");
    assert_eq!(net.code(0), net.code(1));
    let mut stats = SottoCallStats::default();
    // SAFETY: a live call; a writable out-parameter.
    assert_eq!(unsafe { sotto_call_stats(calls[1], &mut stats) }, OK);
    assert!(stats.frames_sent > 0 && stats.media_in > 0, "{stats:?}");
    // SAFETY: every handle is live and freed once.
    unsafe {
        for c in calls {
            assert_eq!(sotto_call_free(c), OK);
        }
        for id in ids {
            assert_eq!(sotto_identity_free(id), OK);
        }
    }
}
