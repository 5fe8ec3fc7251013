//! lib0 primitives (varuint, varint, varUint8Array, varString) shared by the message,
//! awareness and update decoders.
//!
//! Every read is bounds-checked against the remaining input and never allocates from a
//! length prefix, so hostile bytes can only ever make a read fail.

/// Why a primitive read failed. Callers map it onto the error of what they decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The input ended in the middle of a value.
    Truncated,
    /// A variable-length integer does not fit in 64 bits.
    Overflow,
    /// A string is not valid UTF-8.
    Utf8,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadError::Truncated => "truncated",
            ReadError::Overflow => "integer does not fit in 64 bits",
            ReadError::Utf8 => "string is not valid UTF-8",
        })
    }
}

/// A cursor over a byte slice reading lib0 encoded values.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Start reading at the beginning of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next byte to read, so callers can cut out what they just read.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Number of bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// One raw byte.
    pub(crate) fn read_u8(&mut self) -> Result<u8, ReadError> {
        let b = *self.buf.get(self.pos).ok_or(ReadError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Exactly `len` raw bytes. `len` is checked against the remaining input first.
    pub(crate) fn read_exact(&mut self, len: u64) -> Result<&'a [u8], ReadError> {
        if len > self.remaining() as u64 {
            return Err(ReadError::Truncated);
        }
        // `len` fits in usize: it is at most `remaining()`.
        let len = len as usize;
        let slice = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// lib0 varuint: 7 bits per byte, least significant group first, high bit = more.
    /// Non-canonical (over-long) encodings are accepted, as lib0 does.
    pub(crate) fn read_var_u64(&mut self) -> Result<u64, ReadError> {
        let mut value: u64 = 0;
        let mut shift: u32 = 0;
        loop {
            let b = self.read_u8()?;
            let bits = u64::from(b & 0x7f);
            if shift >= 64 {
                if bits != 0 {
                    return Err(ReadError::Overflow);
                }
            } else {
                let shifted = bits << shift;
                if shifted >> shift != bits {
                    return Err(ReadError::Overflow);
                }
                value |= shifted;
            }
            if b < 0x80 {
                return Ok(value);
            }
            shift += 7;
            // lib0 writers never produce more than 10 bytes for a 64-bit value; allow a
            // little slack for over-long encodings but stop runaway continuation bytes.
            if shift > 7 * 16 {
                return Err(ReadError::Overflow);
            }
        }
    }

    /// lib0 signed varint (first byte: continue bit, sign bit, 6 value bits), skipped
    /// without interpretation; only its extent matters to callers.
    pub(crate) fn skip_var_i64(&mut self) -> Result<(), ReadError> {
        for _ in 0..16 {
            if self.read_u8()? < 0x80 {
                return Ok(());
            }
        }
        Err(ReadError::Overflow)
    }

    /// lib0 varUint8Array: varuint length, then that many bytes.
    pub(crate) fn read_var_bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let len = self.read_var_u64()?;
        self.read_exact(len)
    }

    /// lib0 varString: varuint byte length, then UTF-8.
    pub(crate) fn read_var_str(&mut self) -> Result<&'a str, ReadError> {
        let bytes = self.read_var_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| ReadError::Utf8)
    }
}

/// Append a lib0 varuint.
pub(crate) fn write_var_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Append a lib0 varUint8Array (length, then bytes).
pub(crate) fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_var_u64(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.read_var_u64(), Ok(v));
            assert!(r.is_empty());
        }
        let mut out = Vec::new();
        write_var_u64(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn varuint_errors() {
        assert_eq!(
            Reader::new(&[0x80]).read_var_u64(),
            Err(ReadError::Truncated)
        );
        assert_eq!(Reader::new(&[]).read_var_u64(), Err(ReadError::Truncated));
        // 2^64 does not fit.
        let too_big = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert_eq!(
            Reader::new(&too_big).read_var_u64(),
            Err(ReadError::Overflow)
        );
        // Over-long zero is accepted, as lib0 does.
        assert_eq!(Reader::new(&[0x80, 0x00]).read_var_u64(), Ok(0));
        // Endless continuation bytes are refused.
        assert_eq!(
            Reader::new(&[0x80; 40]).read_var_u64(),
            Err(ReadError::Overflow)
        );
    }

    #[test]
    fn length_prefix_is_capped_by_input() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
        assert_eq!(r.read_var_bytes(), Err(ReadError::Truncated));
        let mut r = Reader::new(&[0x02, b'h', b'i']);
        assert_eq!(r.read_var_str(), Ok("hi"));
        let mut r = Reader::new(&[0x01, 0xff]);
        assert_eq!(r.read_var_str(), Err(ReadError::Utf8));
    }
}
