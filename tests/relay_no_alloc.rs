//! Zero heap allocations per media fan-out (and per handshake fan-out, once a channel keeps
//! as many handshake messages as it may, and error reply) in
//! the relay router after warm-up, measured with a counting global allocator. In its own
//! test binary because a global allocator is per binary.

use std::time::Instant;

use sotto::media::ChannelToken;
use sotto::relay::{
    ChannelHandle, ClientMessage, ConnId, ErrorCode, RelayMessage, Router, RouterLimits,
    MEDIA_OVERHEAD,
};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

const CHANNELS: u16 = 100;
const MEMBERS: u64 = 8;

/// A router with `CHANNELS` channels of `MEMBERS` connections each; returns each sender's
/// handle.
fn populated() -> (Router, Vec<(ConnId, ChannelHandle)>) {
    let mut router = Router::new(RouterLimits::default(), &[0x42; 32]);
    let now = Instant::now();
    let mut senders = Vec::new();
    let mut buf = [0u8; 64];
    for ch in 0..CHANNELS {
        let mut t = [0u8; 16];
        t[..2].copy_from_slice(&ch.to_be_bytes());
        let token = ChannelToken(t);
        for m in 0..MEMBERS {
            let conn = ConnId(u64::from(ch) * MEMBERS + m);
            let n = ClientMessage::Hello.encode(&mut buf).unwrap();
            router
                .receive(conn, &buf[..n], now, &mut |_, _| {})
                .unwrap();
            let n = ClientMessage::Subscribe { token }.encode(&mut buf).unwrap();
            router
                .receive(conn, &buf[..n], now, &mut |_, _| {})
                .unwrap();
            if m == 0 {
                senders.push((conn, router.handle(conn, &token).unwrap()));
            }
        }
    }
    (router, senders)
}

#[test]
fn media_fan_out_does_not_allocate() {
    let (mut router, senders) = populated();
    let now = Instant::now();
    let frame = [0xa5u8; 60];
    let packets: Vec<Vec<u8>> = senders
        .iter()
        .map(|(_, h)| {
            let mut p = ClientMessage::media_header(*h).to_vec();
            p.extend_from_slice(&frame);
            p
        })
        .collect();
    let mut delivered = 0u64;
    let mut bytes = 0usize;
    let mut sink = |_: ConnId, b: &[u8]| {
        delivered += 1;
        bytes += b.len();
    };
    // Warm-up.
    for ((conn, _), p) in senders.iter().zip(&packets) {
        router.receive(*conn, p, now, &mut sink).unwrap();
    }
    let n = allocations_in(|| {
        for _ in 0..100 {
            for ((conn, _), p) in senders.iter().zip(&packets) {
                router.receive(*conn, p, now, &mut sink).unwrap();
            }
        }
    });
    assert_eq!(n, 0, "allocations during 10,000 media fan-outs");
    let packets_in = 101 * u64::from(CHANNELS);
    assert_eq!(delivered, packets_in * (MEMBERS - 1));
    assert_eq!(bytes as u64, delivered * (60 + MEDIA_OVERHEAD) as u64);
    assert_eq!(router.stats().media_out, delivered);
}

#[test]
fn handshake_fan_out_and_error_replies_do_not_allocate() {
    let (mut router, senders) = populated();
    let now = Instant::now();
    let (conn, handle) = senders[3];
    let mut hs = [0u8; 320];
    let n = ClientMessage::Handshake {
        handle,
        message: &[7; 280],
    }
    .encode(&mut hs)
    .unwrap();
    let unknown = ClientMessage::media_header(ChannelHandle(4321));
    // A connection that never said Hello: refused, counted, answered.
    let stranger = ConnId(u64::MAX);
    let mut last_seq = None;
    let mut sink = |_: ConnId, b: &[u8]| {
        if let Ok(RelayMessage::Handshake { seq, .. }) = RelayMessage::parse(b) {
            last_seq = Some(seq);
        }
    };
    // The channel keeps its latest handshake messages: once its history is full, a new
    // one reuses the buffer of the one it pushes out.
    let warm = RouterLimits::default().history_per_channel;
    for _ in 0..=warm {
        router.receive(conn, &hs[..n], now, &mut sink).unwrap();
    }
    let allocations = allocations_in(|| {
        for _ in 0..1000 {
            router.receive(conn, &hs[..n], now, &mut sink).unwrap();
            router.receive(conn, &unknown, now, &mut sink).unwrap_err();
            router.receive(conn, b"junk", now, &mut sink).unwrap_err();
            assert_eq!(
                router.receive(stranger, &hs[..n], now, &mut sink),
                Err(ErrorCode::NotConnected)
            );
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(router.stats().drops.not_connected, 1000);
    assert_eq!(last_seq, Some(1000 + warm as u64));
}
