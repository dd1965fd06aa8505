//! Sliding replay window over frame counters.
//!
//! The window remembers the highest authenticated counter `top` and, for the `size`
//! counters ending at `top`, whether each was seen. It is *checked* before decryption and
//! *updated* only after the frame authenticated, so forged headers cannot move it.

use super::FrameError;

/// Smallest window, in counters.
pub const MIN_REPLAY_WINDOW: usize = 128;
/// Largest window, in counters (8 KiB of bitmap per key).
pub const MAX_REPLAY_WINDOW: usize = 1 << 16;
/// Window used by [`FrameOpener::new`](super::FrameOpener::new).
pub const DEFAULT_REPLAY_WINDOW: usize = 128;

/// Rounds a requested window up to a power of two within the supported range (so a slot is
/// found with a mask, not a division).
pub(crate) fn effective_window(requested: usize) -> usize {
    requested
        .clamp(MIN_REPLAY_WINDOW, MAX_REPLAY_WINDOW)
        .next_power_of_two()
}

/// Bitmap window; bit `ctr mod size` stands for counter `ctr` while it is inside the window.
pub(crate) struct ReplayWindow {
    /// Highest counter recorded, or `None` before the first frame.
    top: Option<u64>,
    /// `size - 1`; `size` is a power of two of at least 128.
    mask: u64,
    bits: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` counters (`size` from [`effective_window`]).
    pub(crate) fn new(size: usize) -> ReplayWindow {
        let size = effective_window(size);
        ReplayWindow {
            top: None,
            mask: u64::try_from(size).unwrap_or(128) - 1,
            bits: vec![0u64; size / 64].into_boxed_slice(),
        }
    }

    #[inline]
    fn size(&self) -> u64 {
        self.mask + 1
    }

    #[inline]
    fn slot(&self, ctr: u64) -> (usize, u64) {
        let bit = ctr & self.mask;
        let word = usize::try_from(bit >> 6).unwrap_or(0);
        (word, 1u64 << (bit & 63))
    }

    /// May a frame with counter `ctr` be opened? Does not change the window.
    #[inline]
    pub(crate) fn check(&self, ctr: u64) -> Result<(), FrameError> {
        let Some(top) = self.top else { return Ok(()) };
        if ctr > top {
            return Ok(());
        }
        if top - ctr >= self.size() {
            return Err(FrameError::TooOld);
        }
        let (word, mask) = self.slot(ctr);
        match self.bits.get(word) {
            Some(w) if w & mask != 0 => Err(FrameError::Replayed),
            _ => Ok(()),
        }
    }

    /// Records `ctr` as seen. Call only after [`check`](Self::check) passed and the frame
    /// authenticated.
    #[inline]
    pub(crate) fn record(&mut self, ctr: u64) {
        match self.top {
            Some(top) if ctr <= top => {}
            Some(top) => {
                // Clear the slots of the counters the window slides over: top+1 ..= ctr.
                let advance = ctr - top;
                if advance >= self.size() {
                    self.bits.fill(0);
                } else {
                    for c in top + 1..=ctr {
                        let (word, mask) = self.slot(c);
                        if let Some(w) = self.bits.get_mut(word) {
                            *w &= !mask;
                        }
                    }
                }
                self.top = Some(ctr);
            }
            None => self.top = Some(ctr),
        }
        let (word, mask) = self.slot(ctr);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }

    /// The highest counter recorded so far.
    pub(crate) fn top(&self) -> Option<u64> {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_semantics() {
        let mut w = ReplayWindow::new(128);
        assert!(w.check(5).is_ok());
        w.record(5);
        assert_eq!(w.check(5), Err(FrameError::Replayed));
        assert!(w.check(4).is_ok());
        assert!(w.check(0).is_ok());
        w.record(200);
        assert_eq!(w.check(5), Err(FrameError::TooOld));
        assert_eq!(w.check(72), Err(FrameError::TooOld));
        assert!(w.check(73).is_ok());
        w.record(73);
        assert_eq!(w.check(73), Err(FrameError::Replayed));
        w.record(201);
        assert_eq!(w.check(200), Err(FrameError::Replayed));
        assert_eq!(w.check(73), Err(FrameError::TooOld));
        // Slot of 73 (73 % 128 = 73) was reused by 201; 201 itself is marked.
        assert_eq!(w.check(201), Err(FrameError::Replayed));
        w.record(u64::MAX);
        assert_eq!(w.check(u64::MAX), Err(FrameError::Replayed));
        assert!(w.check(u64::MAX - 1).is_ok());
    }

    #[test]
    fn effective_sizes() {
        assert_eq!(effective_window(0), 128);
        assert_eq!(effective_window(129), 256);
        assert_eq!(effective_window(usize::MAX), MAX_REPLAY_WINDOW);
    }
}
