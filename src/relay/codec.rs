//! The only place relay messages touch raw bytes: a borrowed [`Reader`] that cannot panic and
//! a [`Writer`] over a caller buffer. Every read is bounds-checked; [`Reader::finish`]
//! rejects trailing bytes.

use super::WireError;

/// A cursor over borrowed input. Reads never panic: running out of input is
/// [`WireError::Truncated`].
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `input`.
    #[inline]
    pub(crate) fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { rest: input }
    }

    /// The next `n` bytes.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| WireError::Truncated)
    }

    /// One byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, tail) = self.rest.split_first().ok_or(WireError::Truncated)?;
        self.rest = tail;
        Ok(b)
    }

    /// A big-endian `u32`.
    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian `u64`.
    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Everything left (the payload of a message that ends with one).
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Succeeds only when every byte was read.
    #[inline]
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// A cursor over a caller buffer. The encoder checks the total length first, so writes
/// only fail if that computation was wrong; they still never panic.
pub(crate) struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `out`.
    #[inline]
    pub(crate) fn new(out: &'a mut [u8]) -> Writer<'a> {
        Writer { out, len: 0 }
    }

    /// Appends `bytes`.
    #[inline]
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(WireError::BufferTooSmall { needed: usize::MAX })?;
        let dst = self
            .out
            .get_mut(self.len..end)
            .ok_or(WireError::BufferTooSmall { needed: end })?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends one byte.
    #[inline]
    pub(crate) fn u8(&mut self, b: u8) -> Result<(), WireError> {
        self.put(&[b])
    }

    /// Appends a big-endian `u32`.
    #[inline]
    pub(crate) fn u32(&mut self, v: u32) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    /// Appends a big-endian `u64`.
    #[inline]
    pub(crate) fn u64(&mut self, v: u64) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    /// Bytes written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_overreads() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5]);
        assert_eq!(r.u32(), Ok(0x0102_0304));
        assert_eq!(r.u32(), Err(WireError::Truncated));
        assert_eq!(r.u64(), Err(WireError::Truncated));
        assert_eq!(r.take(2), Err(WireError::Truncated));
        assert_eq!(r.u8(), Ok(5));
        assert_eq!(r.u8(), Err(WireError::Truncated));
        assert_eq!(r.finish(), Ok(()));
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.finish(), Err(WireError::TrailingBytes));
    }

    #[test]
    fn writer_never_overwrites() {
        let mut buf = [0u8; 5];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u32(0xabcd_ef01), Ok(()));
        assert_eq!(w.u32(1), Err(WireError::BufferTooSmall { needed: 8 }));
        assert_eq!(w.u8(9), Ok(()));
        assert_eq!(w.len(), 5);
        assert_eq!(buf, [0xab, 0xcd, 0xef, 1, 9]);
    }
}
