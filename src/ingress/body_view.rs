//! The fields of a webhook body that normalizing reads, found in one pass that also checks the
//! whole body is JSON.
//!
//! A body is forwarded byte for byte, so before it is queued all of it must be checked to be
//! JSON (RFC 8259: the grammar serde_json enforces, control characters refused in strings,
//! escapes well-formed), and a handful of its fields read. serde_json did both through derived
//! views of borrowed values, at about five instructions a byte of a 2 KiB body, most of it
//! skipping the long strings nobody reads; this reader skips them with vector instructions
//! ([`Reader::string`]), tracks nesting itself (so no separate depth scan is needed on the
//! accepted path) and keeps each field as the raw text of its value.
//!
//! It is as strict as serde_json's own check of a body (`IgnoredAny`), which the tests hold it
//! to on arbitrary input. When it refuses a body, the refusal is explained by the slower checks
//! the ingress made before ([`super::normalize`]): depth first, then serde_json's error message.
//! Two things more are refused, as serde's derived views refused them: a known field named
//! twice, and a key that does not decode to text (an unpaired UTF-16 surrogate escape) in an
//! object whose fields are read.

use std::borrow::Cow;

/// Why a body was not read. [`ViewError::Duplicate`] and [`ViewError::KeyNotText`] are reported
/// as they are; the others are explained again by the checks that name the error precisely.
#[derive(Debug, PartialEq, Eq)]
pub enum ViewError {
    /// Not JSON, or not an object at the top.
    Invalid,
    /// Arrays and objects nested deeper than the limit.
    TooDeep,
    /// A field the views read appears twice in one object.
    Duplicate(String),
    /// A key of an object whose fields are read is not text: its escapes hold an unpaired
    /// UTF-16 surrogate (`"\ud800"`), which JSON's grammar allows and no string can hold.
    KeyNotText,
}

/// The deepest nesting the reader can follow: one bit a level in a `u64`.
pub const MAX_NESTING: usize = 63;

/// The raw JSON text of a field's value (`"text"`, `123`, `{...}`); a `null` is no value.
pub type Raw<'a> = Option<&'a str>;

/// The fields gatehouse reads from a payload (or a relay's `data`); everything else is checked
/// and skipped.
#[derive(Debug, Default)]
pub struct Top<'a> {
    pub kind: Raw<'a>,
    pub data: Raw<'a>,
    pub forge_event: Raw<'a>,
    pub event: Raw<'a>,
    pub webhook_event: Raw<'a>,
    pub timestamp: Raw<'a>,
    pub event_created_date: Raw<'a>,
    pub user_account_id: Raw<'a>,
    pub cloud_id: Raw<'a>,
    // Whom it is about: at the top of Atlassian payloads, in `data` (read as a `Top` of its own)
    // for relays.
    pub account_id: Raw<'a>,
    pub account_id_camel: Raw<'a>,
    pub email: Raw<'a>,
    /// `actor`, when it is an object.
    pub actor: Option<UserView<'a>>,
    /// `user`, when it is an object.
    pub user: Option<UserView<'a>>,
    /// `group`, when it is an object.
    pub group: Option<GroupView<'a>>,
}

#[derive(Debug, Default)]
pub struct UserView<'a> {
    pub account_id_camel: Raw<'a>,
    pub account_id: Raw<'a>,
    pub email: Raw<'a>,
}

#[derive(Debug, Default)]
pub struct GroupView<'a> {
    pub id: Raw<'a>,
    pub group_id: Raw<'a>,
    pub name: Raw<'a>,
}

impl<'a> Top<'a> {
    /// Reads `text`, which must be one JSON object (whitespace around it allowed), nested no
    /// deeper than `max_depth`.
    pub fn read(text: &'a str, max_depth: usize) -> Result<Self, ViewError> {
        let mut reader = Reader::new(text, max_depth);
        reader.whitespace();
        if reader.peek() != Some(b'{') {
            return Err(ViewError::Invalid);
        }
        let mut top = Top::default();
        let mut seen = Seen::default();
        reader.object(|reader, key| {
            // The nested views take the bits after the raw fields' (see `Fields for Top`).
            match &*key {
                "actor" => {
                    seen.once(12, &key)?;
                    top.actor = reader.view()?;
                }
                "user" => {
                    seen.once(13, &key)?;
                    top.user = reader.view()?;
                }
                "group" => {
                    seen.once(14, &key)?;
                    top.group = reader.view()?;
                }
                _ => reader.member(&mut top, &mut seen, &key)?,
            }
            Ok(())
        })?;
        reader.whitespace();
        if reader.at != reader.bytes.len() {
            return Err(ViewError::Invalid);
        }
        Ok(top)
    }
}

/// A view's fields that hold a raw value: for a key, the field's own bit in [`Seen`] (to refuse
/// it named twice) and its slot.
trait Fields<'a>: Default {
    fn slot(&mut self, key: &str) -> Option<(u8, &mut Raw<'a>)>;
}

impl<'a> Fields<'a> for Top<'a> {
    fn slot(&mut self, key: &str) -> Option<(u8, &mut Raw<'a>)> {
        Some(match key {
            "type" => (0, &mut self.kind),
            "data" => (1, &mut self.data),
            "eventType" => (2, &mut self.forge_event),
            "event" => (3, &mut self.event),
            "webhookEvent" => (4, &mut self.webhook_event),
            "timestamp" => (5, &mut self.timestamp),
            "eventCreatedDate" => (6, &mut self.event_created_date),
            "userAccountId" => (7, &mut self.user_account_id),
            "cloudId" => (8, &mut self.cloud_id),
            "account_id" => (9, &mut self.account_id),
            "accountId" => (10, &mut self.account_id_camel),
            "email" => (11, &mut self.email),
            _ => return None,
        })
    }
}

impl<'a> Fields<'a> for UserView<'a> {
    fn slot(&mut self, key: &str) -> Option<(u8, &mut Raw<'a>)> {
        Some(match key {
            "accountId" => (0, &mut self.account_id_camel),
            "account_id" => (1, &mut self.account_id),
            "email" => (2, &mut self.email),
            _ => return None,
        })
    }
}

impl<'a> Fields<'a> for GroupView<'a> {
    fn slot(&mut self, key: &str) -> Option<(u8, &mut Raw<'a>)> {
        Some(match key {
            "id" => (0, &mut self.id),
            "groupId" => (1, &mut self.group_id),
            "name" => (2, &mut self.name),
            _ => return None,
        })
    }
}

/// Whether any byte is a control character, which JSON strings must escape. The least byte,
/// found without branches, so that it compiles to vector minimums (`pminub`).
fn has_control(bytes: &[u8]) -> bool {
    bytes.iter().fold(u8::MAX, |least, &byte| least.min(byte)) < 0x20
}

/// The text of a string token this reader has checked (`quoted` with its quotes; `escaped` when
/// it holds a `\`): what lies between the quotes when nothing is escaped, else decoded. `None`
/// when its escapes decode to no text (an unpaired UTF-16 surrogate).
pub fn unquote(quoted: &str, escaped: bool) -> Option<Cow<'_, str>> {
    debug_assert!(
        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
        "not a checked string token: {quoted}"
    );
    match quoted.get(1..quoted.len() - 1) {
        Some(inner) if !escaped => Some(Cow::Borrowed(inner)),
        _ => serde_json::from_str(quoted).ok().map(Cow::Owned),
    }
}

/// A field's raw value, `null` being none (as serde reads an `Option`).
fn non_null(raw: &str) -> Raw<'_> {
    (raw != "null").then_some(raw)
}

/// Which of an object's fields were present (one bit each), to refuse one named twice.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn once(&mut self, bit: u8, name: &str) -> Result<(), ViewError> {
        if self.0 & (1 << bit) != 0 {
            return Err(ViewError::Duplicate(name.to_owned()));
        }
        self.0 |= 1 << bit;
        Ok(())
    }
}

/// A position in a body being read, with the nesting open around it.
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str, max_depth: usize) -> Self {
        Reader {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
            // Open containers are remembered one bit each in a `u64` (normalize's limit is
            // checked against this at compile time).
            max_depth: max_depth.min(MAX_NESTING),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), ViewError> {
        if self.peek() != Some(byte) {
            return Err(ViewError::Invalid);
        }
        self.at += 1;
        Ok(())
    }

    fn open(&mut self) -> Result<(), ViewError> {
        self.depth += 1;
        self.at += 1;
        if self.depth > self.max_depth {
            return Err(ViewError::TooDeep);
        }
        Ok(())
    }

    /// Reads the object at the reader (its `{` next), calling `member` with each key, the
    /// reader just past the key's `:`; `member` reads the value.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), ViewError>,
    ) -> Result<(), ViewError> {
        self.open()?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            self.whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.whitespace();
                }
                Some(b'}') => {
                    self.at += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(ViewError::Invalid),
            }
        }
    }

    /// A key and its `:` (whitespace before the key already skipped); the key's text unescaped.
    /// A key whose escapes do not decode to text (an unpaired UTF-16 surrogate) is refused, as
    /// serde's views refused it: the objects whose fields are read are the ones a handler may
    /// deserialize again.
    fn key(&mut self) -> Result<Cow<'a, str>, ViewError> {
        let (quoted, escaped) = self.skip_key()?;
        unquote(quoted, escaped).ok_or(ViewError::KeyNotText)
    }

    /// Checks and skips a key and its `:`, returning the key as written (with its quotes) and
    /// whether it holds an escape. Keys inside values nobody reads are not decoded.
    fn skip_key(&mut self) -> Result<(&'a str, bool), ViewError> {
        if self.peek() != Some(b'"') {
            return Err(ViewError::Invalid);
        }
        let start = self.at;
        let escaped = self.string()?;
        let quoted = self.text.get(start..self.at).ok_or(ViewError::Invalid)?;
        self.whitespace();
        self.expect(b':')?;
        Ok((quoted, escaped))
    }

    /// The value at the reader as a view when it is an object; any other value is skipped.
    fn view<T: Fields<'a>>(&mut self) -> Result<Option<T>, ViewError> {
        self.whitespace();
        if self.peek() != Some(b'{') {
            self.value()?;
            return Ok(None);
        }
        let mut view = T::default();
        let mut seen = Seen::default();
        self.object(|reader, key| reader.member(&mut view, &mut seen, &key))?;
        Ok(Some(view))
    }

    /// Reads the value of the member named `key` into its field of `fields` (`null` as none),
    /// refusing a field named twice; the value of a member no field reads is checked and skipped.
    fn member<T: Fields<'a>>(&mut self, fields: &mut T, seen: &mut Seen, key: &str) -> Result<(), ViewError> {
        match fields.slot(key) {
            Some((bit, slot)) => {
                seen.once(bit, key)?;
                *slot = non_null(self.value()?);
            }
            None => {
                self.value()?;
            }
        }
        Ok(())
    }

    /// Checks and skips one value (with whatever it nests), returning its raw text.
    fn value(&mut self) -> Result<&'a str, ViewError> {
        self.whitespace();
        let start = self.at;
        let base = self.depth;
        // Bit `n` set: the container `n` levels below `base` is an object, else an array.
        let mut objects: u64 = 0;
        'value: loop {
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    let level = self.depth - base;
                    self.open()?;
                    let close = if open == b'{' {
                        objects |= 1 << level;
                        b'}'
                    } else {
                        objects &= !(1 << level);
                        b']'
                    };
                    self.whitespace();
                    if self.peek() == Some(close) {
                        self.at += 1;
                        self.depth -= 1;
                    } else {
                        if open == b'{' {
                            self.skip_key()?;
                            self.whitespace();
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(ViewError::Invalid),
            }
            // A value ended: separate it from the next one or close what holds it.
            while self.depth > base {
                self.whitespace();
                let in_object = objects & (1 << (self.depth - base - 1)) != 0;
                match (self.peek(), in_object) {
                    (Some(b','), _) => {
                        self.at += 1;
                        self.whitespace();
                        if in_object {
                            self.skip_key()?;
                            self.whitespace();
                        }
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        self.depth -= 1;
                    }
                    _ => return Err(ViewError::Invalid),
                }
            }
            return self.text.get(start..self.at).ok_or(ViewError::Invalid);
        }
    }

    /// Skips the string whose `"` is at the reader; true when it holds an escape. The end is
    /// found by `memchr2` (a few vector instructions per 32 bytes) and the text before it checked
    /// for control characters by a loop the compiler vectorizes.
    fn string(&mut self) -> Result<bool, ViewError> {
        let mut escaped = false;
        let mut from = self.at + 1;
        loop {
            let rest = self.bytes.get(from..).ok_or(ViewError::Invalid)?;
            let end = memchr::memchr2(b'"', b'\\', rest).ok_or(ViewError::Invalid)?;
            if has_control(&rest[..end]) {
                return Err(ViewError::Invalid);
            }
            let at = from + end;
            if self.bytes[at] == b'"' {
                self.at = at + 1;
                return Ok(escaped);
            }
            escaped = true;
            from = at + 1 + self.escape_len(at + 1)?;
        }
    }

    /// The length of the escape after a `\` at `at`: `\uXXXX` takes any four hex digits (as
    /// serde_json's check does; whether they pair up as UTF-16 matters only to a reader of the
    /// text, and [`super::normalize`] reads the fields it uses with serde_json).
    fn escape_len(&self, at: usize) -> Result<usize, ViewError> {
        match self.bytes.get(at) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(1),
            Some(b'u') => match self.bytes.get(at + 1..at + 5) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(5),
                _ => Err(ViewError::Invalid),
            },
            _ => Err(ViewError::Invalid),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ViewError> {
        if !self
            .bytes
            .get(self.at..)
            .is_some_and(|rest| rest.starts_with(word))
        {
            return Err(ViewError::Invalid);
        }
        self.at += word.len();
        Ok(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), ViewError> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(ViewError::Invalid),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), ViewError> {
        let start = self.at;
        self.digits();
        if self.at == start {
            return Err(ViewError::Invalid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::value::RawValue;

    /// Low, so that generated bodies cross it often.
    const MAX: usize = 4;

    /// What serde's derived views read (as normalize read bodies before this reader), the
    /// reference the reader is held to: each field the raw text of its value, nested views
    /// parsed from theirs when it is an object.
    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct SerdeTop<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a RawValue>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
        #[serde(rename = "eventType", borrow)]
        forge_event: Option<&'a RawValue>,
        #[serde(borrow)]
        event: Option<&'a RawValue>,
        #[serde(rename = "webhookEvent", borrow)]
        webhook_event: Option<&'a RawValue>,
        #[serde(borrow)]
        timestamp: Option<&'a RawValue>,
        #[serde(rename = "eventCreatedDate", borrow)]
        event_created_date: Option<&'a RawValue>,
        #[serde(rename = "userAccountId", borrow)]
        user_account_id: Option<&'a RawValue>,
        #[serde(rename = "cloudId", borrow)]
        cloud_id: Option<&'a RawValue>,
        #[serde(borrow)]
        account_id: Option<&'a RawValue>,
        #[serde(rename = "accountId", borrow)]
        account_id_camel: Option<&'a RawValue>,
        #[serde(borrow)]
        email: Option<&'a RawValue>,
        #[serde(borrow)]
        actor: Option<&'a RawValue>,
        #[serde(borrow)]
        user: Option<&'a RawValue>,
        #[serde(borrow)]
        group: Option<&'a RawValue>,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct SerdeUser<'a> {
        #[serde(rename = "accountId", borrow)]
        account_id_camel: Option<&'a RawValue>,
        #[serde(borrow)]
        account_id: Option<&'a RawValue>,
        #[serde(borrow)]
        email: Option<&'a RawValue>,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct SerdeGroup<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(rename = "groupId", borrow)]
        group_id: Option<&'a RawValue>,
        #[serde(borrow)]
        name: Option<&'a RawValue>,
    }

    fn raw(value: Option<&RawValue>) -> Option<&str> {
        value.map(RawValue::get)
    }

    /// The fields as text, in one comparable list; `Err` when serde refuses the body (a
    /// duplicate field, which is all it can refuse once the body is known to be JSON).
    fn by_serde(text: &str) -> Result<Vec<Option<String>>, serde_json::Error> {
        fn nested<'a, T: Deserialize<'a>>(
            value: Option<&'a RawValue>,
        ) -> Result<Option<T>, serde_json::Error> {
            match value {
                Some(v) if v.get().starts_with('{') => serde_json::from_str(v.get()).map(Some),
                _ => Ok(None),
            }
        }
        let top: SerdeTop<'_> = serde_json::from_str(text)?;
        let actor = nested::<SerdeUser<'_>>(top.actor)?;
        let user = nested::<SerdeUser<'_>>(top.user)?;
        let group = nested::<SerdeGroup<'_>>(top.group)?;
        let mut fields: Vec<Option<&str>> = vec![
            raw(top.kind),
            raw(top.data),
            raw(top.forge_event),
            raw(top.event),
            raw(top.webhook_event),
            raw(top.timestamp),
            raw(top.event_created_date),
            raw(top.user_account_id),
            raw(top.cloud_id),
            raw(top.account_id),
            raw(top.account_id_camel),
            raw(top.email),
        ];
        for view in [actor, user] {
            fields.push(view.as_ref().map(|_| "object"));
            let view = view.unwrap_or_default();
            fields.extend([raw(view.account_id_camel), raw(view.account_id), raw(view.email)]);
        }
        fields.push(group.as_ref().map(|_| "object"));
        let group = group.unwrap_or_default();
        fields.extend([raw(group.id), raw(group.group_id), raw(group.name)]);
        Ok(fields.into_iter().map(|f| f.map(str::to_owned)).collect())
    }

    fn by_reader(top: &Top<'_>) -> Vec<Option<String>> {
        let mut fields: Vec<Option<&str>> = vec![
            top.kind,
            top.data,
            top.forge_event,
            top.event,
            top.webhook_event,
            top.timestamp,
            top.event_created_date,
            top.user_account_id,
            top.cloud_id,
            top.account_id,
            top.account_id_camel,
            top.email,
        ];
        for view in [&top.actor, &top.user] {
            fields.push(view.as_ref().map(|_| "object"));
            let empty = UserView::default();
            let view = view.as_ref().unwrap_or(&empty);
            fields.extend([view.account_id_camel, view.account_id, view.email]);
        }
        fields.push(top.group.as_ref().map(|_| "object"));
        let empty = GroupView::default();
        let group = top.group.as_ref().unwrap_or(&empty);
        fields.extend([group.id, group.group_id, group.name]);
        fields.into_iter().map(|f| f.map(str::to_owned)).collect()
    }

    /// Held to serde_json: the same bodies accepted and the same fields read.
    fn agrees_with_serde(text: &str) -> Result<(), TestCaseError> {
        let json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        let object = text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{');
        let deep = super::super::normalize::nests_deeper_than(text.as_bytes(), MAX);
        match Top::read(text, MAX) {
            Ok(top) => {
                prop_assert!(
                    json && object && !deep,
                    "accepted what serde_json refuses: {text:?}"
                );
                let serde = by_serde(text);
                prop_assert!(serde.is_ok(), "serde refused {text:?}");
                prop_assert_eq!(by_reader(&top), serde.unwrap_or_default(), "{:?}", text);
            }
            Err(ViewError::TooDeep) => prop_assert!(deep, "{text:?}"),
            Err(ViewError::Duplicate(name)) => {
                // Refused by serde too, though not always for the same reason: the reader stops
                // at the first duplicate, serde's reference may meet another one, or text that
                // is not JSON further on, first.
                prop_assert!(
                    object && by_serde(text).is_err(),
                    "{text:?}: {name} refused, serde read it"
                );
            }
            Err(ViewError::KeyNotText) => {
                // Refused at the key, before whatever follows it: serde's views too.
                prop_assert!(
                    object && by_serde(text).is_err(),
                    "{text:?}: a key refused, serde read it"
                );
            }
            Err(ViewError::Invalid) => prop_assert!(!(json && object) || deep, "refused JSON: {text:?}"),
        }
        Ok(())
    }

    const KEYS: &[&str] = &[
        "type",
        "data",
        "eventType",
        "event",
        "webhookEvent",
        "timestamp",
        "eventCreatedDate",
        "userAccountId",
        "cloudId",
        "account_id",
        "accountId",
        "email",
        "actor",
        "user",
        "group",
        "id",
        "groupId",
        "name",
        "other",
        "",
        "\\u0074ype",
        "us\\u0065r",
        "\\\"",
        "e\\/mail",
        "\\ud800",
        "x\\uDC00",
    ];

    fn whitespace() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\n\t", "\r\n  "])
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["null", "true", "false", "0", "-0", "1e999", "\"\""])
                .prop_map(str::to_owned),
            "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-z \u{e9}\u{1F600}{}\\[\\],:]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}){0,12}\"",
            "\"x{20,70}\"",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec((whitespace(), inner.clone(), whitespace()), 0..5).prop_map(|items| {
                    let items: Vec<String> =
                        items.into_iter().map(|(a, v, b)| format!("{a}{v}{b}")).collect();
                    format!("[{}]", items.join(","))
                }),
                object(inner),
            ]
        })
    }

    fn object(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        prop::collection::vec((prop::sample::select(KEYS), whitespace(), inner), 0..7).prop_map(|members| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(key, space, value)| format!("{space}\"{key}\"{space}:{space}{value}"))
                .collect();
            format!("{{{}}}", members.join(","))
        })
    }

    /// A few bytes deleted, inserted or replaced: text that is almost JSON.
    fn mutated(text: String, edits: Vec<(usize, u8, u8)>) -> String {
        let mut bytes = text.into_bytes();
        for (at, op, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at % bytes.len();
            const BYTES: &[u8] = b"{}[]\",:\\ 0-9eE.+a\x01\x0b\x0ctnudDfls";
            let byte = BYTES[usize::from(byte) % BYTES.len()];
            match op % 3 {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, byte),
                _ => bytes[at] = byte,
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn well_formed_bodies_are_read_as_serde_reads_them(body in object(value()), space in whitespace()) {
            agrees_with_serde(&format!("{space}{body}{space}"))?;
        }

        #[test]
        fn almost_json_is_refused_exactly_when_serde_refuses_it(
            body in object(value()),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        ) {
            agrees_with_serde(&mutated(body, edits))?;
        }

        #[test]
        fn any_text_is_refused_or_read_as_serde_reads_it(
            text in prop_oneof![
                any::<String>().prop_map(|text| format!("{{{text}")),
                prop::collection::vec(prop::sample::select(vec![
                    "{", "}", "[", "]", "\"", ":", ",", "\\", "a", "0", "-", ".", "e", "null", "true",
                    " ", "\n", "\t", "\r", "\u{b}", "\u{c}", "\u{a0}", "\u{2028}", "\u{feff}", "\u{1}",
                    "\"type\"", "\"user\"", "\"group\"", "\"accountId\"", "u", "d800", "\"x\"",
                ]), 0..40).prop_map(|pieces| format!("{{{}", pieces.concat())),
            ]
        ) {
            agrees_with_serde(&text)?;
        }
    }

    #[test]
    fn fields_escaped_null_nested_and_repeated() {
        let top = Top::read(
            r#" {"\u0074ype" : "user.created", "email": null, "user": "not an object",
                "group": {"name": "g", "x": [1, {"name": 2}]}, "name": 1} "#,
            MAX,
        )
        .unwrap();
        assert_eq!(top.kind, Some("\"user.created\""));
        assert_eq!(top.email, None);
        assert!(top.user.is_none());
        assert_eq!(top.group.unwrap().name, Some("\"g\""));
        for (body, name) in [
            (r#"{"type":1,"type":2}"#, "type"),
            (r#"{"user":{},"x":0,"user":null}"#, "user"),
            (r#"{"user":{"email":"a","email":"b"}}"#, "email"),
            (r#"{"type":1,"\u0074ype":2}"#, "type"),
        ] {
            assert_eq!(
                Top::read(body, MAX).unwrap_err(),
                ViewError::Duplicate(name.into()),
                "{body}"
            );
        }
        // Fields the views do not read may repeat, as JSON allows.
        assert!(Top::read(r#"{"x":1,"x":2,"user":{"y":1,"y":2}}"#, MAX).is_ok());
    }

    #[test]
    fn nesting_beyond_the_limit_is_too_deep_and_at_it_is_read() {
        // `pairs` of `open` inside the top object: as deep as the top plus each `open`'s levels.
        for (open, close, levels) in [("[", "]", 1), ("{\"a\":", "}", 1), ("[{\"b\":", "}]", 2)] {
            let nested = |pairs: usize| format!("{{\"a\":{}1{}}}", open.repeat(pairs), close.repeat(pairs));
            let at_limit = (MAX - 1) / levels;
            assert!(Top::read(&nested(at_limit), MAX).is_ok(), "{}", nested(at_limit));
            let beyond = MAX / levels;
            assert_eq!(
                Top::read(&nested(beyond), MAX).unwrap_err(),
                ViewError::TooDeep,
                "{}",
                nested(beyond)
            );
        }
        // The views' own objects count too.
        assert!(Top::read(r#"{"user":{"a":[[1]]}}"#, MAX).is_ok());
        assert_eq!(
            Top::read(r#"{"user":{"a":[[[1]]]}}"#, MAX).unwrap_err(),
            ViewError::TooDeep
        );
    }

    #[test]
    fn keys_that_are_not_text_are_refused_where_fields_are_read() {
        for body in [r#"{"\ud800":1}"#, r#"{"user":{"\udc00x":1}}"#] {
            assert_eq!(Top::read(body, MAX).unwrap_err(), ViewError::KeyNotText, "{body}");
        }
        // Inside values nobody reads, a key is checked as JSON and not decoded.
        assert!(Top::read(r#"{"other":{"\ud800":1},"user":{"x":{"\ud800":[]}}}"#, MAX).is_ok());
    }

    #[test]
    fn what_is_not_one_object_is_refused() {
        for text in [
            "",
            " ",
            "[]",
            "1",
            "\"a\"",
            "{} {}",
            "{}x",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{,}",
            "{\"a\":1,}",
        ] {
            assert_eq!(Top::read(text, MAX).unwrap_err(), ViewError::Invalid, "{text:?}");
        }
    }
}
