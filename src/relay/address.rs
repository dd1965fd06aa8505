//! [`AddressCheck`]: a stateless return-routability check for transports whose source
//! addresses can be forged (raw UDP).

use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::wire::{ClientMessage, Cookie, RelayMessage};

/// What a transport does with a datagram from an address it has not validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission<'b> {
    /// A Hello with this address's cookie: the address is valid now. Name it with a
    /// [`ConnId`](super::ConnId) and pass this datagram to the router, which answers
    /// [`Ready`](super::RelayMessage::Ready).
    Admit,
    /// Send these bytes (a Challenge, never longer than the datagram) back to the address,
    /// and drop the datagram.
    Challenge(&'b [u8]),
    /// Drop the datagram without an answer: it is not a client request (so two relays, or
    /// a relay and an echo service, cannot be set answering each other forever), or it is
    /// shorter than a Challenge.
    Ignore,
}

/// Bytes of a [`RelayMessage::Challenge`]: the buffer [`AddressCheck::check`] writes into.
pub const CHALLENGE_LEN: usize = 1 + Cookie::LEN;

/// The relay's stateless return-routability check for transports on raw UDP.
///
/// Without it, anyone could make a UDP relay send to an address of their choosing: subscribe
/// a forged address to a busy channel, or fetch a mailbox of large Welcomes for it. With it,
/// a transport passes datagrams to the [`Router`](super::Router) only from addresses that
/// proved they receive: an unvalidated address gets nothing but a
/// [`Challenge`](super::RelayMessage::Challenge) no longer than the client request that
/// caused it (anything else gets no answer at all), and becomes valid by echoing the challenge's cookie in a
/// [`Hello`](super::ClientMessage::Hello). The check keeps no state per address, so a flood
/// from forged addresses costs the relay no memory.
///
/// The cookie is HMAC-SHA256 over the time period and the address, under a key of the
/// relay's own (never a room secret), truncated to 16 bytes. A cookie is accepted in the
/// [period](AddressCheck::PERIOD) it was made in and the next one.
#[derive(Clone)]
pub struct AddressCheck {
    mac: Hmac<Sha256>,
    start: Instant,
}

impl AddressCheck {
    /// How long cookies of one period are made; each is accepted for this period and the
    /// next (30 to 60 s in all).
    pub const PERIOD: Duration = Duration::from_secs(30);

    /// A check under the relay's own random `key` (draw it at start-up; it never leaves the
    /// relay), with periods counted from `now`.
    pub fn new(key: &[u8; 32], now: Instant) -> AddressCheck {
        // HMAC pads a short key with zeros to the block size, so this is HMAC under `key`.
        let mut block = [0u8; 64];
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
        let mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        block.zeroize();
        AddressCheck { mac, start: now }
    }

    fn period(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / Self::PERIOD.as_secs()
    }

    fn cookie_in(&self, period: u64, address: &[u8]) -> Cookie {
        let mut mac = self.mac.clone();
        mac.update(&period.to_be_bytes());
        mac.update(address);
        let tag = mac.finalize().into_bytes();
        let mut cookie = Cookie::default();
        for (c, t) in cookie.0.iter_mut().zip(tag.iter()) {
            *c = *t;
        }
        cookie
    }

    /// The cookie `address` gets at `now`. `address` is the transport's name for the peer
    /// (for UDP: its IP address and port).
    pub fn cookie(&self, address: &[u8], now: Instant) -> Cookie {
        self.cookie_in(self.period(now), address)
    }

    /// Whether `cookie` is one this check gave `address` in this period or the last.
    pub fn is_valid(&self, address: &[u8], cookie: &Cookie, now: Instant) -> bool {
        let period = self.period(now);
        self.is_valid_in(period, &self.cookie_in(period, address), address, cookie)
    }

    /// [`is_valid`](Self::is_valid), given this period's cookie.
    fn is_valid_in(&self, period: u64, current: &Cookie, address: &[u8], cookie: &Cookie) -> bool {
        // Which period a cookie is from is no secret; the comparisons are constant-time.
        bool::from(current.0.ct_eq(&cookie.0))
            || period
                .checked_sub(1)
                .is_some_and(|p| bool::from(self.cookie_in(p, address).0.ct_eq(&cookie.0)))
    }

    /// Decides on one datagram from `address`, which the transport has not validated, at
    /// `now`; a challenge is written into `reply`. No allocation; at most two HMACs (one for
    /// anything but a Hello, none for what gets no answer).
    pub fn check<'b>(
        &self,
        address: &[u8],
        datagram: &[u8],
        now: Instant,
        reply: &'b mut [u8; CHALLENGE_LEN],
    ) -> Admission<'b> {
        let Ok(request) = ClientMessage::parse(datagram) else {
            return Admission::Ignore;
        };
        if datagram.len() < CHALLENGE_LEN {
            return Admission::Ignore;
        }
        let period = self.period(now);
        let current = self.cookie_in(period, address);
        if let ClientMessage::Hello { cookie } = request {
            if self.is_valid_in(period, &current, address, &cookie) {
                return Admission::Admit;
            }
        }
        match (RelayMessage::Challenge { cookie: current }).encode(reply) {
            Ok(n) => Admission::Challenge(reply.get(..n).unwrap_or_default()),
            Err(_) => Admission::Ignore,
        }
    }
}

impl std::fmt::Debug for AddressCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressCheck").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn hello(cookie: Cookie) -> Vec<u8> {
        let mut buf = vec![0u8; 17];
        let n = ClientMessage::Hello { cookie }.encode(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn challenge_then_hello_admits_only_that_address() {
        let t0 = Instant::now();
        let check = AddressCheck::new(&KEY, t0);
        let mut reply = [0u8; CHALLENGE_LEN];
        let a = b"198.51.100.7:4000";
        let b = b"198.51.100.7:4001";
        let Admission::Challenge(bytes) = check.check(a, &hello(Cookie::default()), t0, &mut reply)
        else {
            panic!("a first Hello is challenged");
        };
        let Ok(RelayMessage::Challenge { cookie }) = RelayMessage::parse(bytes) else {
            panic!("a challenge");
        };
        assert_eq!(
            check.check(a, &hello(cookie), t0, &mut reply),
            Admission::Admit
        );
        // Another address (another port) cannot use it.
        assert!(matches!(
            check.check(b, &hello(cookie), t0, &mut reply),
            Admission::Challenge(_)
        ));
        // Another key does not accept it.
        let other = AddressCheck::new(&[8; 32], t0);
        assert!(!other.is_valid(a, &cookie, t0));
        // Accepted in the next period, not after.
        let later = t0 + AddressCheck::PERIOD;
        assert!(check.is_valid(a, &cookie, later));
        assert!(!check.is_valid(a, &cookie, later + AddressCheck::PERIOD));
    }

    #[test]
    fn never_answers_with_more_bytes_than_it_got() {
        let t0 = Instant::now();
        let check = AddressCheck::new(&KEY, t0);
        let mut reply = [0u8; CHALLENGE_LEN];
        // Media requests of every length: challenged from 17 bytes on.
        for len in 0..64 {
            let datagram = [&[0x43u8][..], &vec![0; len.max(1) - 1]].concat();
            match check.check(b"addr", &datagram[..len], t0, &mut reply) {
                Admission::Challenge(bytes) => assert!(bytes.len() <= len && len >= 17),
                Admission::Ignore => assert!(len < CHALLENGE_LEN),
                Admission::Admit => panic!("no valid cookie in {len} bytes"),
            }
        }
        // A relay's own messages (a Challenge among them) and junk get no answer: no loop
        // between two relays.
        let Admission::Challenge(challenge) = check.check(b"addr", &[0x43; 40], t0, &mut reply)
        else {
            panic!("a media request is challenged");
        };
        let challenge = challenge.to_vec();
        let mut again = [0u8; CHALLENGE_LEN];
        assert_eq!(
            check.check(b"other relay", &challenge, t0, &mut again),
            Admission::Ignore
        );
        assert_eq!(
            check.check(b"addr", &[0xff; 100], t0, &mut again),
            Admission::Ignore
        );
    }
}
