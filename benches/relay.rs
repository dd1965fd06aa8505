//! Relay router benchmarks: fan-out of 60-byte media packets over 1,000 channels × 8
//! members (packets forwarded per second), with a baseline measured in the same run: a bare
//! `HashMap<handle, Vec<conn>>` lookup plus a copy of the packet into a buffer per
//! receiver. Also the cost of an epoch move (subscribe to the new token, unsubscribe the
//! old one), and what a datagram from a connection that never said Hello costs the router
//! (refused with a 7-byte `NotConnected`), against routing one media packet of a member to
//! its 7 peers.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sotto::media::ChannelToken;
use sotto::relay::{
    ChannelHandle, ClientMessage, ConnId, ErrorCode, RelayMessage, Router, RouterLimits,
};

const CHANNELS: u32 = 1_000;
const MEMBERS: u32 = 8;
const FRAME: usize = 60;

fn token(channel: u32, epoch: u32) -> ChannelToken {
    let mut t = [0u8; 16];
    t[..4].copy_from_slice(&channel.to_be_bytes());
    t[4..8].copy_from_slice(&epoch.to_be_bytes());
    ChannelToken(t)
}

fn conn(channel: u32, member: u32) -> ConnId {
    ConnId(u64::from(channel * MEMBERS + member))
}

/// What a sink does with each datagram: touches its length and first byte, as handing it
/// to a socket queue would.
#[inline]
fn consume(total: &mut usize, to: ConnId, bytes: &[u8]) {
    *total = total.wrapping_add(bytes.len() + bytes[0] as usize + to.0 as usize);
}

fn fan_out(c: &mut Criterion) {
    let now = Instant::now();
    // The router: every member of every channel subscribed; one sender per channel.
    let mut router = Router::new(
        RouterLimits {
            max_connections: (CHANNELS * MEMBERS) as usize,
            max_channels: CHANNELS as usize + 10,
            ..RouterLimits::default()
        },
        &[0x42; 32],
    );
    let mut buf = [0u8; 64];
    for ch in 0..CHANNELS {
        for m in 0..MEMBERS {
            let n = ClientMessage::Hello.encode(&mut buf).unwrap();
            router
                .receive(conn(ch, m), &buf[..n], now, &mut |_, _| {})
                .unwrap();
            let n = ClientMessage::Subscribe {
                token: token(ch, 0),
            }
            .encode(&mut buf)
            .unwrap();
            router
                .receive(conn(ch, m), &buf[..n], now, &mut |_, _| {})
                .unwrap();
        }
    }
    let frame = [0xa5u8; FRAME];
    // Senders rotate through the members so every connection's handle lookup is used.
    let packets: Vec<(ConnId, Vec<u8>)> = (0..CHANNELS)
        .map(|ch| {
            let from = conn(ch, ch % MEMBERS);
            let handle = router.handle(from, &token(ch, 0)).unwrap();
            let mut p = ClientMessage::media_header(handle).to_vec();
            p.extend_from_slice(&frame);
            (from, p)
        })
        .collect();
    let forwarded = u64::from(CHANNELS * (MEMBERS - 1));

    let mut group = c.benchmark_group("relay/fan-out 1000x8, 60 B");
    group.throughput(Throughput::Elements(forwarded));
    group.bench_function("router", |b| {
        let mut total = 0usize;
        let mut sink = |to: ConnId, bytes: &[u8]| consume(&mut total, to, bytes);
        b.iter(|| {
            for (from, p) in &packets {
                let _ = router.receive(*from, black_box(p), now, &mut sink);
            }
        });
        black_box(total);
    });

    // Baseline: global handles (one per channel), handle → members, copy per receiver.
    let mut table: HashMap<u32, Vec<ConnId>> = HashMap::new();
    for ch in 0..CHANNELS {
        let handle = ch;
        table.insert(handle, (0..MEMBERS).map(|m| conn(ch, m)).collect());
    }
    let bare: Vec<(ConnId, Vec<u8>)> = (0..CHANNELS)
        .map(|ch| {
            let handle = ChannelHandle(ch);
            let mut p = RelayMessage::media_header(handle).to_vec();
            p.extend_from_slice(&frame);
            (conn(ch, ch % MEMBERS), p)
        })
        .collect();
    group.bench_function("baseline HashMap<handle, Vec<conn>> + copy", |b| {
        let mut total = 0usize;
        let mut out = vec![0u8; 1500];
        b.iter(|| {
            for (from, p) in &bare {
                let p = black_box(p);
                let handle = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
                if let Some(members) = table.get(&handle) {
                    for to in members {
                        if to == from {
                            continue;
                        }
                        out[..p.len()].copy_from_slice(p);
                        consume(&mut total, *to, &out[..p.len()]);
                    }
                }
            }
        });
        black_box(total);
    });
    group.finish();

    // Epoch move for one member: subscribe to the next epoch's token, unsubscribe the old.
    let mut group = c.benchmark_group("relay/epoch move");
    group.throughput(Throughput::Elements(1));
    let mut epoch = 0u32;
    let me = conn(0, 0);
    let mut handle = router.handle(me, &token(0, 0)).unwrap();
    let mut sub = [0u8; 64];
    let mut unsub = [0u8; 32];
    group.bench_function("subscribe new + unsubscribe old", |b| {
        b.iter(|| {
            epoch += 1;
            let n = ClientMessage::Subscribe {
                token: token(0, epoch),
            }
            .encode(&mut sub)
            .unwrap();
            let mut next = None;
            router
                .receive(me, &sub[..n], now, &mut |_, b: &[u8]| {
                    if let Ok(RelayMessage::Subscribed { handle, .. }) = RelayMessage::parse(b) {
                        next = Some(handle);
                    }
                })
                .unwrap();
            let m = ClientMessage::Unsubscribe { handle }
                .encode(&mut unsub)
                .unwrap();
            router
                .receive(me, &unsub[..m], now, &mut |_, _| {})
                .unwrap();
            handle = next.unwrap();
        });
    });
    group.finish();

    // A connection that never said Hello: every datagram is refused, never routed.
    let mut group = c.benchmark_group("relay/65 B media datagram");
    group.throughput(Throughput::Elements(1));
    let stranger = ConnId(u64::MAX);
    let mut media = ClientMessage::media_header(ChannelHandle(0)).to_vec();
    media.extend_from_slice(&[0x5a; FRAME]);
    group.bench_function("unknown connection (NotConnected)", |b| {
        let mut total = 0usize;
        b.iter(|| {
            let refused = router.receive(stranger, black_box(&media), now, &mut |to, bytes| {
                consume(&mut total, to, bytes)
            });
            assert_eq!(refused, Err(ErrorCode::NotConnected));
        });
        black_box(total);
    });
    let sender = conn(1, 0);
    let sender_handle = router.handle(sender, &token(1, 0)).unwrap();
    let mut routed = ClientMessage::media_header(sender_handle).to_vec();
    routed.extend_from_slice(&[0x5a; FRAME]);
    group.bench_function("baseline: route a member's packet to 7 peers", |b| {
        let mut total = 0usize;
        b.iter(|| {
            router
                .receive(sender, black_box(&routed), now, &mut |to, bytes| {
                    consume(&mut total, to, bytes)
                })
                .unwrap();
        });
        black_box(total);
    });
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
