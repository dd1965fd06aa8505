//! A cheap hasher for integer keys the application chooses (KIDs of installed keys,
//! connection ids the I/O layer assigns). Frames may name any KID, but lookups of keys not
//! in a table insert nothing, so collisions cannot be forced; a multiplicative hash (high
//! bits well mixed, as the table needs) is enough and much cheaper than SipHash on the
//! per-packet path.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// Fibonacci hashing of integer keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.0.rotate_left(8));
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Multiply by 2^64 / φ, then fold the high bits down so every bit of the result mixes.
        let h = (v ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

/// A `HashMap` with [`IntHasher`].
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
