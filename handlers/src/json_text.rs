//! JSON text written by hand, byte for byte as `serde_json` writes it, for the documents written
//! on every delivery (the envelope, the ingress's answer).
//!
//! serde_json escapes a string one byte at a time through its formatter: about 190 instructions
//! for a 30-byte string, and an envelope has two dozen of them. Here a string is checked eight
//! bytes at a time and copied whole when nothing in it needs escaping, which is every string
//! gatehouse writes in practice (ids, names, times, keys). What does need escaping is escaped
//! exactly as serde_json does it (`\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, and `\u00xx` with
//! lowercase hex for the other control characters; nothing else), which the tests hold it to.

/// Appends `value` as a JSON string: quoted, and escaped as serde_json escapes it.
pub fn push_string(out: &mut Vec<u8>, value: &str) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    push_string_contents(out, value);
    out.push(b'"');
}

/// Appends `value` escaped as inside a JSON string, without the quotes.
fn push_string_contents(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut from = 0;
    while let Some(at) = first_to_escape(bytes, from) {
        out.extend_from_slice(&bytes[from..at]);
        push_escape(out, bytes[at]);
        from = at + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

/// Appends `name` as an object key followed by `:`. Keys are gatehouse's own field names: ASCII
/// words that never need escaping, so they are written as they are.
pub fn push_key(out: &mut Vec<u8>, name: &str) {
    debug_assert!(first_to_escape(name.as_bytes(), 0).is_none(), "{name}");
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `value` as a JSON number.
pub fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[derive(Debug)]
/// An object being written: `{`, then each field with its separator, then `}` from [`end`](Self::end).
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Starts the field `name` and returns the buffer for its value, which the caller writes.
    pub fn field(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        push_key(self.out, name);
        self.out
    }

    pub fn string(&mut self, name: &str, value: &str) {
        push_string(self.field(name), value);
    }

    /// A string field that is left out when absent (serde's `skip_serializing_if = "Option::is_none"`).
    pub fn optional_string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.string(name, value);
        }
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

const BELOW_SPACE: u64 = 0x2020_2020_2020_2020;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes in `word` is below `0x20`, `"` or `\`. Exact for "any": the
/// classic has-less-than and has-zero-byte tests, whose per-byte bits may be wrong only above a
/// byte that matched.
fn needs_escape(word: u64) -> bool {
    let control = word.wrapping_sub(BELOW_SPACE) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w;
    (control | zero_in(quote) | zero_in(backslash)) & HIGH_BITS != 0
}

fn escapes(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The index of the first byte at or after `from` that must be escaped.
fn first_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut words = rest.chunks_exact(8);
    let mut offset = from;
    for chunk in words.by_ref() {
        let word = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        if needs_escape(word)
            && let Some(at) = chunk.iter().position(|&b| escapes(b))
        {
            return Some(offset + at);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| escapes(b))
        .map(|i| offset + i)
}

fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0x0f)],
            ]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_string(&mut out, value);
        out
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_as_serde_json_does() {
        for byte in 0u8..=0x7f {
            let text = format!("ab{}cdefghijk", char::from(byte));
            assert_eq!(
                written(&text),
                serde_json::to_vec(&text).unwrap(),
                "byte {byte:#04x}"
            );
        }
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn an_object_separates_its_fields_and_leaves_out_absent_ones() {
        let mut out = Vec::new();
        let mut object = ObjectWriter::begin(&mut out);
        object.optional_string("a", None);
        object.string("b", "x\"y");
        object.optional_string("c", Some("z"));
        push_u64(object.field("d"), 7);
        object.end();
        assert_eq!(out, br#"{"b":"x\"y","c":"z","d":7}"#);
        let mut empty = Vec::new();
        ObjectWriter::begin(&mut empty).end();
        assert_eq!(empty, b"{}");
    }

    proptest! {
        /// Any text, at any length and alignment: the same bytes as serde_json.
        #[test]
        fn strings_are_written_as_serde_json_writes_them(
            text in prop_oneof![
                any::<String>(),
                "[\\x00-\\x7f]{0,40}",
                "[a-z\"\\\\\\x00-\\x1f\u{e9}\u{1F600}]{0,40}",
            ]
        ) {
            prop_assert_eq!(written(&text), serde_json::to_vec(&text).unwrap());
        }
    }
}
