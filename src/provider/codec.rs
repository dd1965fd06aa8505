//! A compact, self-describing binary encoding of serde values, for [`Storage`](super::Storage).
//!
//! openmls writes its state through serde, and its byte strings (keys, secrets, the ratchet
//! tree) as sequences of `u8`. JSON spends a decimal number and a comma on each byte; this
//! encoding spends one byte on it. Every value starts with a tag byte:
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0 | unit | — |
//! | 1 / 2 | `None` / `Some` | — / the value |
//! | 3 / 4 | `false` / `true` | — |
//! | 5 | `u8` | 1 byte |
//! | 6 | other unsigned integer | LEB128 |
//! | 7 | signed integer | zigzag LEB128 |
//! | 8 | `f64` (and `f32`) | 8 bytes, little-endian |
//! | 9 | string (and `char`) | u32 LE length, UTF-8 |
//! | 10 | byte string, or a sequence whose elements were all `u8` | u32 LE length, the bytes |
//! | 11 | sequence, tuple or struct (fields in order, no names) | u32 LE count, the elements |
//! | 12 | map | u32 LE count, key and value pairs |
//! | 13 | enum variant | LEB128 variant index, then unit, the newtype's value, or a sequence |
//!
//! Decoding is self-describing (`deserialize_any` works, which openmls' untagged enums
//! need), bounds-checked, depth-limited, and never allocates more than the input could
//! hold. Newtype structs are transparent. 128-bit integers are not supported.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};
use serde::ser::{self, Serialize};

const UNIT: u8 = 0;
const NONE: u8 = 1;
const SOME: u8 = 2;
const FALSE: u8 = 3;
const TRUE: u8 = 4;
const U8: u8 = 5;
const UINT: u8 = 6;
const INT: u8 = 7;
const F64: u8 = 8;
const STR: u8 = 9;
const BYTES: u8 = 10;
const SEQ: u8 = 11;
const MAP: u8 = 12;
const VARIANT: u8 = 13;

/// Nesting deeper than this is refused when decoding (openmls' state nests a few levels;
/// the limit keeps a corrupted record from exhausting the stack).
const MAX_DEPTH: usize = 64;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage codec: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

impl ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

impl de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

fn error(msg: &str) -> CodecError {
    CodecError(msg.to_owned())
}

/// Encodes `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut encoder = Encoder { out: Vec::new() };
    value.serialize(&mut encoder)?;
    Ok(encoder.out)
}

/// Decodes a value encoded by [`to_vec`]; the whole input must be one value.
pub fn from_slice<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<T, CodecError> {
    let mut decoder = Decoder { input, depth: 0 };
    let value = T::deserialize(&mut decoder)?;
    if decoder.input.is_empty() {
        Ok(value)
    } else {
        Err(error("trailing bytes"))
    }
}

// ---------------------------------------------------------------------------------------
// encoding

struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    fn leb128(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn tagged_leb128(&mut self, tag: u8, v: u64) {
        self.out.push(tag);
        self.leb128(v);
    }

    fn blob(&mut self, tag: u8, bytes: &[u8]) -> Result<(), CodecError> {
        let len = u32::try_from(bytes.len()).map_err(|_| error("longer than 2^32 bytes"))?;
        self.out.push(tag);
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Opens a sequence or map: the tag and a count patched in by [`Compound::end`].
    fn compound(&mut self, tag: u8) -> Compound<'_> {
        let start = self.out.len();
        self.out.push(tag);
        self.out.extend_from_slice(&[0; 4]);
        Compound {
            encoder: self,
            start,
            tag,
            count: 0,
            bytes: tag == SEQ,
        }
    }
}

/// A sequence or map being written. A sequence is written as a byte string (raw bytes
/// after the header) for as long as its elements are `u8`s; an element of another type
/// turns the bytes so far into tagged `u8` elements.
struct Compound<'a> {
    encoder: &'a mut Encoder,
    start: usize,
    tag: u8,
    count: u64,
    bytes: bool,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        if self.bytes {
            if let Ok(b) = value.serialize(ByteProbe) {
                self.encoder.out.push(b);
                self.count += 1;
                return Ok(());
            }
            self.bytes = false;
            let raw = self.encoder.out.split_off(self.start + 5);
            self.encoder.out.reserve(2 * raw.len());
            for b in raw {
                self.encoder.out.extend_from_slice(&[U8, b]);
            }
        }
        value.serialize(&mut *self.encoder)?;
        self.count += 1;
        Ok(())
    }

    fn end(self) -> Result<(), CodecError> {
        let count = u32::try_from(self.count).map_err(|_| error("more than 2^32 elements"))?;
        let header = self
            .encoder
            .out
            .get_mut(self.start..self.start + 5)
            .ok_or_else(|| error("lost the sequence header"))?;
        let tag = if self.bytes && count > 0 {
            BYTES
        } else {
            self.tag
        };
        let [a, b, c, d] = count.to_le_bytes();
        header.copy_from_slice(&[tag, a, b, c, d]);
        Ok(())
    }
}

/// Serializes a `u8` to itself and refuses everything else (cheaply: no message).
struct ByteProbe;

#[derive(Debug)]
struct NotAByte;

impl fmt::Display for NotAByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a byte")
    }
}

impl std::error::Error for NotAByte {}

impl ser::Error for NotAByte {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        NotAByte
    }
}

impl ser::Serializer for ByteProbe {
    type Ok = u8;
    type Error = NotAByte;
    type SerializeSeq = ser::Impossible<u8, NotAByte>;
    type SerializeTuple = ser::Impossible<u8, NotAByte>;
    type SerializeTupleStruct = ser::Impossible<u8, NotAByte>;
    type SerializeTupleVariant = ser::Impossible<u8, NotAByte>;
    type SerializeMap = ser::Impossible<u8, NotAByte>;
    type SerializeStruct = ser::Impossible<u8, NotAByte>;
    type SerializeStructVariant = ser::Impossible<u8, NotAByte>;

    fn serialize_u8(self, v: u8) -> Result<u8, NotAByte> {
        Ok(v)
    }

    fn serialize_bool(self, _: bool) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_i8(self, _: i8) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_i16(self, _: i16) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_i32(self, _: i32) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_i64(self, _: i64) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_u16(self, _: u16) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_u32(self, _: u32) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_u64(self, _: u64) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_f32(self, _: f32) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_f64(self, _: f64) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_char(self, _: char) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_str(self, _: &str) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_none(self) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_unit(self) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAByte> {
        Err(NotAByte)
    }
}

impl<'a> ser::Serializer for &'a mut Encoder {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), CodecError> {
        self.out.push(if v { TRUE } else { FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), CodecError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), CodecError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), CodecError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), CodecError> {
        self.tagged_leb128(INT, ((v << 1) ^ (v >> 63)) as u64);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), CodecError> {
        self.out.extend_from_slice(&[U8, v]);
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), CodecError> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), CodecError> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), CodecError> {
        self.tagged_leb128(UINT, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), CodecError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), CodecError> {
        self.out.push(F64);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), CodecError> {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }

    fn serialize_str(self, v: &str) -> Result<(), CodecError> {
        self.blob(STR, v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CodecError> {
        self.blob(BYTES, v)
    }

    fn serialize_none(self) -> Result<(), CodecError> {
        self.out.push(NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CodecError> {
        self.out.push(SOME);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), CodecError> {
        self.out.push(UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CodecError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), CodecError> {
        self.tagged_leb128(VARIANT, u64::from(index));
        self.out.push(UNIT);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.tagged_leb128(VARIANT, u64::from(index));
        value.serialize(self)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, CodecError> {
        Ok(self.compound(SEQ))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, CodecError> {
        Ok(self.compound(SEQ))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, CodecError> {
        Ok(self.compound(SEQ))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, CodecError> {
        self.tagged_leb128(VARIANT, u64::from(index));
        Ok(self.compound(SEQ))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, CodecError> {
        Ok(self.compound(MAP))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, CodecError> {
        Ok(self.compound(SEQ))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, CodecError> {
        self.tagged_leb128(VARIANT, u64::from(index));
        Ok(self.compound(SEQ))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.element(value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), CodecError> {
        // Fields are positional: a skipped field would shift every later one.
        Err(error("skipped struct fields are not supported"))
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.element(value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), CodecError> {
        Err(error("skipped struct fields are not supported"))
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = CodecError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CodecError> {
        key.serialize(&mut *self.encoder)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        value.serialize(&mut *self.encoder)?;
        self.count += 1;
        Ok(())
    }

    fn end(self) -> Result<(), CodecError> {
        Compound::end(self)
    }
}

// ---------------------------------------------------------------------------------------
// decoding

struct Decoder<'de> {
    input: &'de [u8],
    depth: usize,
}

impl<'de> Decoder<'de> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.input.split_first().ok_or_else(|| error("truncated"))?;
        self.input = rest;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, CodecError> {
        self.input
            .first()
            .copied()
            .ok_or_else(|| error("truncated"))
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], CodecError> {
        if n > self.input.len() {
            return Err(error("truncated"));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn leb128(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(error("integer overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(error("integer overflows 64 bits"))
    }

    /// A u32 LE count of bytes, or of elements (each at least one byte): never more than
    /// the rest of the input.
    fn count(&mut self) -> Result<usize, CodecError> {
        let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| error("truncated"))?;
        let count = u32::from_le_bytes(raw) as usize;
        if count > self.input.len() {
            return Err(error("truncated"));
        }
        Ok(count)
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<(), CodecError> {
        if self.byte()? == tag {
            Ok(())
        } else {
            Err(CodecError(format!("expected {what}")))
        }
    }

    fn enter(&mut self) -> Result<(), CodecError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error("nested too deeply"));
        }
        Ok(())
    }

    /// Visits the sequence or byte string that follows (tag already read).
    fn visit_seq_of<V: Visitor<'de>>(
        &mut self,
        tag: u8,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        match tag {
            SEQ => {
                let remaining = self.count()?;
                self.enter()?;
                let value = visitor.visit_seq(Elements {
                    decoder: &mut *self,
                    remaining,
                })?;
                self.depth -= 1;
                Ok(value)
            }
            BYTES => {
                let len = self.count()?;
                let bytes = self.take(len)?;
                visitor.visit_seq(ByteElements { bytes })
            }
            _ => Err(error("expected a sequence")),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.byte()? {
            UNIT => visitor.visit_unit(),
            NONE => visitor.visit_none(),
            SOME => {
                self.enter()?;
                let value = visitor.visit_some(&mut *self)?;
                self.depth -= 1;
                Ok(value)
            }
            FALSE => visitor.visit_bool(false),
            TRUE => visitor.visit_bool(true),
            U8 => visitor.visit_u8(self.byte()?),
            UINT => visitor.visit_u64(self.leb128()?),
            INT => {
                let v = self.leb128()?;
                visitor.visit_i64(((v >> 1) as i64) ^ -((v & 1) as i64))
            }
            F64 => {
                let raw = self.take(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                visitor.visit_f64(f64::from_le_bytes(b))
            }
            STR => {
                let len = self.count()?;
                let text = std::str::from_utf8(self.take(len)?).map_err(|_| error("bad UTF-8"))?;
                visitor.visit_borrowed_str(text)
            }
            tag @ (SEQ | BYTES) => self.visit_seq_of(tag, visitor),
            MAP => {
                let remaining = self.count()?;
                self.enter()?;
                let value = visitor.visit_map(Entries {
                    decoder: &mut *self,
                    remaining,
                })?;
                self.depth -= 1;
                Ok(value)
            }
            VARIANT => {
                // Self-described, a variant is a map of one entry: index → content.
                let index = self.leb128()?;
                self.enter()?;
                let value = visitor.visit_map(OneVariant {
                    decoder: &mut *self,
                    index: Some(index),
                })?;
                self.depth -= 1;
                Ok(value)
            }
            _ => Err(error("unknown tag")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        if self.peek()? == BYTES {
            self.byte()?;
            let len = self.count()?;
            visitor.visit_borrowed_bytes(self.take(len)?)
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.byte()? {
            NONE => visitor.visit_none(),
            SOME => {
                self.enter()?;
                let value = visitor.visit_some(&mut *self)?;
                self.depth -= 1;
                Ok(value)
            }
            _ => Err(error("expected an option")),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.expect(UNIT, "unit")?;
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.enter()?;
        let value = visitor.visit_newtype_struct(&mut *self)?;
        self.depth -= 1;
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let tag = self.byte()?;
        self.visit_seq_of(tag, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        if self.peek()? == MAP {
            self.deserialize_any(visitor)
        } else {
            Err(error("expected a map"))
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.expect(VARIANT, "an enum variant")?;
        let index = self.leb128()?;
        let index = u32::try_from(index).map_err(|_| error("variant index too large"))?;
        self.enter()?;
        let value = visitor.visit_enum(Variant {
            decoder: &mut *self,
            index,
        })?;
        self.depth -= 1;
        Ok(value)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string identifier ignored_any
    }
}

struct Elements<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    remaining: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = CodecError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, CodecError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(&mut *self.decoder).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

struct ByteElements<'de> {
    bytes: &'de [u8],
}

impl<'de> SeqAccess<'de> for ByteElements<'de> {
    type Error = CodecError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, CodecError> {
        match self.bytes.split_first() {
            None => Ok(None),
            Some((&b, rest)) => {
                self.bytes = rest;
                seed.deserialize(b.into_deserializer()).map(Some)
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len())
    }
}

struct Entries<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    remaining: usize,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, CodecError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(&mut *self.decoder).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, CodecError> {
        seed.deserialize(&mut *self.decoder)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

struct OneVariant<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    index: Option<u64>,
}

impl<'de> MapAccess<'de> for OneVariant<'_, 'de> {
    type Error = CodecError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, CodecError> {
        match self.index.take() {
            None => Ok(None),
            Some(index) => seed.deserialize(index.into_deserializer()).map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, CodecError> {
        seed.deserialize(&mut *self.decoder)
    }
}

struct Variant<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    index: u32,
}

impl<'a, 'de> EnumAccess<'de> for Variant<'a, 'de> {
    type Error = CodecError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), CodecError> {
        let value = seed.deserialize(self.index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, 'de> {
    type Error = CodecError;

    fn unit_variant(self) -> Result<(), CodecError> {
        self.decoder.expect(UNIT, "a unit variant")
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, CodecError> {
        seed.deserialize(&mut *self.decoder)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_seq(&mut *self.decoder, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_seq(&mut *self.decoder, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Shape {
        Empty,
        Newtype(Vec<u8>),
        Tuple(u16, String),
        Struct { a: Option<u64>, b: i32 },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Record {
        bytes: Vec<u8>,
        empty: Vec<u8>,
        big: u64,
        negative: i64,
        flag: bool,
        text: String,
        letter: char,
        ratio: f64,
        nested: Vec<Vec<u8>>,
        mixed: Vec<u16>,
        shapes: Vec<Shape>,
        map: BTreeMap<u32, Vec<u8>>,
        pair: (u8, Option<Box<Record>>),
        unit: (),
    }

    fn sample() -> Record {
        let inner = Record {
            bytes: vec![1],
            empty: vec![],
            big: 0,
            negative: 0,
            flag: false,
            text: String::new(),
            letter: 'x',
            ratio: 0.0,
            nested: vec![],
            mixed: vec![],
            shapes: vec![],
            map: BTreeMap::new(),
            pair: (0, None),
            unit: (),
        };
        Record {
            bytes: (0..=255).collect(),
            empty: vec![],
            big: u64::MAX,
            negative: i64::MIN,
            flag: true,
            text: "sotto ♪".into(),
            letter: 'ß',
            ratio: -1.5,
            nested: vec![vec![0; 200], vec![7]],
            mixed: vec![1, 300, 65535],
            shapes: vec![
                Shape::Empty,
                Shape::Newtype(vec![9; 3]),
                Shape::Tuple(7, "t".into()),
                Shape::Struct { a: Some(5), b: -3 },
                Shape::Struct { a: None, b: 0 },
            ],
            map: [(1, vec![1, 2]), (2, vec![])].into_iter().collect(),
            pair: (200, Some(Box::new(inner))),
            unit: (),
        }
    }

    #[test]
    fn round_trips_every_shape() {
        let record = sample();
        let bytes = to_vec(&record).unwrap();
        assert_eq!(from_slice::<Record>(&bytes).unwrap(), record);
    }

    #[test]
    fn byte_sequences_cost_one_byte_per_byte() {
        let bytes = to_vec(&vec![0xabu8; 1000]).unwrap();
        // tag + u32 length + the bytes.
        assert_eq!(bytes.len(), 1 + 4 + 1000);
        assert_eq!(from_slice::<Vec<u8>>(&bytes).unwrap(), vec![0xab; 1000]);
    }

    #[test]
    fn untagged_and_any_decode() {
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Text(String),
            Bytes(Vec<u8>),
        }
        for (value, expected) in [
            (to_vec(&7u64).unwrap(), Either::Int(7)),
            (to_vec("x").unwrap(), Either::Text("x".into())),
            (to_vec(&vec![1u8, 2]).unwrap(), Either::Bytes(vec![1, 2])),
        ] {
            assert_eq!(from_slice::<Either>(&value).unwrap(), expected);
        }
        // An enum read without knowing its type, then as its type.
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum AnyShape {
            Shape(Shape),
        }
        let shape = Shape::Tuple(3, "z".into());
        let bytes = to_vec(&shape).unwrap();
        assert_eq!(
            from_slice::<AnyShape>(&bytes).unwrap(),
            AnyShape::Shape(shape)
        );
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_or_a_value_never_a_panic() {
        let bytes = to_vec(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(from_slice::<Record>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extended = bytes.clone();
        extended.push(0);
        assert!(from_slice::<Record>(&extended).is_err());
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[i] ^= flip;
                let _ = from_slice::<Record>(&corrupt);
            }
        }
    }

    #[test]
    fn hostile_lengths_and_depth_are_refused_without_allocating() {
        // A sequence claiming 2^32 - 1 elements in 5 bytes.
        assert!(from_slice::<Vec<u64>>(&[SEQ, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A byte string claiming 2^32 - 1 bytes.
        assert!(from_slice::<Vec<u8>>(&[BYTES, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        // An integer longer than 64 bits.
        assert!(from_slice::<u64>(&[
            UINT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ])
        .is_err());
        // Options nested past the limit.
        let deep: Vec<u8> = std::iter::repeat_n(SOME, 10_000).chain([NONE]).collect();
        assert!(from_slice::<serde::de::IgnoredAny>(&deep).is_err());
    }
}
