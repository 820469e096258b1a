//! The client layer's two questions of a JSON text, answered from its bytes without building
//! a Python object: a request's token estimate, and the `usage` an answer states.
//!
//! It answers only for the texts it is sure of (UTF-8, no byte order mark, integers of at
//! most 18 digits): there its answer is the one `json.loads` and `admission.presets`' Python
//! reading give. Anything else is [`Unsure`] and the caller asks Python, so a text
//! `json.loads` would refuse is never read here, and none is read differently. The grammar is
//! `json.loads`' own (`strict`): `NaN`, `Infinity` and `-Infinity` are numbers, control
//! characters are refused inside strings, a duplicate key's last value is the one kept, a
//! surrogate pair of `\u` escapes is one character. Nesting costs no recursion (a stack of
//! the open containers, as deep as the text).

/// Not answered here: ask Python.
#[derive(Debug)]
pub struct Unsure;

type Scan<T> = Result<T, Unsure>;

/// Integers beyond this many digits are left to Python (a Python `int`, and its limit on
/// the digits it converts).
const MAX_DIGITS: usize = 18;

/// Objects inside a counted value with more keys than this are left to Python (checking
/// that none repeats would cost more than it saves).
const MAX_KEYS: usize = 64;
/// Request keys whose integer is the most tokens the answer may take, in order of preference.
const MAX_TOKENS_KEYS: [&[u8]; 3] = [
    b"max_tokens",
    b"max_completion_tokens",
    b"max_output_tokens",
];
/// Request keys whose strings are prompt text.
const PROMPT_KEYS: [&[u8]; 6] = [
    b"messages",
    b"system",
    b"prompt",
    b"input",
    b"content",
    b"text",
];
/// The `usage` keys counted: `total_tokens`, else `input_tokens` + `output_tokens`.
const USAGE_KEYS: [&[u8]; 3] = [b"total_tokens", b"input_tokens", b"output_tokens"];

/// What the scan keeps of one value.
#[derive(Clone, Copy)]
enum Value {
    /// An integer (`true` and `false` are not counts: `Other`).
    Int(i64),
    /// A string, array or object: the characters of every string in it (object keys aside).
    Text(usize),
    /// Anything else: null, a boolean, a float.
    Other,
}

impl Value {
    /// A count: an integer >= 0.
    fn count(self) -> Option<i64> {
        match self {
            Value::Int(n) if n >= 0 => Some(n),
            _ => None,
        }
    }

    fn chars(self) -> usize {
        match self {
            Value::Text(n) => n,
            _ => 0,
        }
    }
}

/// An object key as decoded: a position in the list of keys looked for, or none.
fn which(key: &[u8], names: &[&[u8]]) -> Option<usize> {
    names.iter().position(|name| *name == key)
}

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
    /// The key being decoded (reused: one allocation per scan at most).
    key: Vec<u8>,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a [u8]) -> Scan<Self> {
        // (`json.loads` reads UTF-8 with a byte order mark, UTF-16 and UTF-32 too: Python's.)
        std::str::from_utf8(text).map_err(|_| Unsure)?;
        Ok(Self {
            text,
            at: 0,
            key: Vec::new(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Scan<()> {
        if self.peek() != Some(byte) {
            return Err(Unsure);
        }
        self.at += 1;
        Ok(())
    }

    fn word(&mut self, word: &[u8]) -> Scan<()> {
        if !self.text[self.at..].starts_with(word) {
            return Err(Unsure);
        }
        self.at += word.len();
        Ok(())
    }

    /// The whole text is one value, spaces around it: `json.loads`' rule.
    fn end(&mut self) -> Scan<()> {
        self.space();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn hex4(&self, at: usize) -> Scan<u32> {
        let digits = self.text.get(at..at + 4).ok_or(Unsure)?;
        let mut value = 0;
        for &d in digits {
            value = value * 16 + char::from(d).to_digit(16).ok_or(Unsure)?;
        }
        Ok(value)
    }

    /// A string at its quote: its characters (code points, as Python's `len`). `decode`:
    /// also decoded into `self.key` (a lone surrogate as 0xFF, which no key looked for has).
    fn string(&mut self, decode: bool) -> Scan<usize> {
        self.at += 1;
        if decode {
            self.key.clear();
        }
        let mut chars = 0;
        loop {
            let byte = self.peek().ok_or(Unsure)?;
            match byte {
                b'"' => {
                    self.at += 1;
                    return Ok(chars);
                }
                b'\\' => {
                    chars += 1;
                    self.escape(decode)?;
                }
                0..=0x1f => return Err(Unsure), // (a control character: `strict`)
                _ => {
                    if byte & 0xC0 != 0x80 {
                        chars += 1; // (the first byte of a character)
                    }
                    if decode {
                        self.key.push(byte);
                    }
                    self.at += 1;
                }
            }
        }
    }

    /// One escape at its backslash (a surrogate pair of them: both).
    fn escape(&mut self, decode: bool) -> Scan<()> {
        let plain = match self.text.get(self.at + 1).ok_or(Unsure)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(decode),
            _ => return Err(Unsure),
        };
        if decode {
            self.key.push(plain);
        }
        self.at += 2;
        Ok(())
    }

    fn unicode_escape(&mut self, decode: bool) -> Scan<()> {
        let mut code = self.hex4(self.at + 2)?;
        self.at += 6;
        if (0xD800..0xDC00).contains(&code) && self.text[self.at..].starts_with(b"\\u") {
            // A high surrogate then an escape: json joins a low one to it (and refuses bad
            // hex digits there, as it would anyway).
            let low = self.hex4(self.at + 2)?;
            if (0xDC00..0xE000).contains(&low) {
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                self.at += 6;
            }
        }
        if decode {
            match char::from_u32(code) {
                Some(c) => {
                    let mut utf8 = [0; 4];
                    self.key
                        .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
                None => self.key.push(0xFF), // (a lone surrogate)
            }
        }
        Ok(())
    }

    /// A number (not a constant): an integer, or `Other` for a float.
    fn number(&mut self) -> Scan<Value> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Unsure),
        }
        let int_end = self.at;
        let mut float = false;
        if self.peek() == Some(b'.') && self.text.get(self.at + 1).is_some_and(u8::is_ascii_digit) {
            float = true;
            self.at += 1;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            let e = self.at;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            let first = self.at;
            self.digits();
            if self.at > first {
                float = true;
            } else {
                self.at = e; // (not an exponent: what follows is refused by the caller)
            }
        }
        if float {
            return Ok(Value::Other);
        }
        let digits = &self.text[start + usize::from(negative)..int_end];
        if digits.len() > MAX_DIGITS {
            return Err(Unsure);
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        Ok(Value::Int(if negative { -magnitude } else { magnitude }))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// A value that is not a string or a container.
    fn scalar(&mut self) -> Scan<Value> {
        match self.peek().ok_or(Unsure)? {
            b't' => self.word(b"true").map(|()| Value::Other),
            b'f' => self.word(b"false").map(|()| Value::Other),
            b'n' => self.word(b"null").map(|()| Value::Other),
            b'N' => self.word(b"NaN").map(|()| Value::Other),
            b'I' => self.word(b"Infinity").map(|()| Value::Other),
            b'-' if self.text.get(self.at + 1) == Some(&b'I') => {
                self.word(b"-Infinity").map(|()| Value::Other)
            }
            _ => self.number(),
        }
    }

    /// Any value (no space before it): what the scan keeps of it.
    fn value(&mut self) -> Scan<Value> {
        match self.peek().ok_or(Unsure)? {
            b'"' => self.string(false).map(Value::Text),
            b'{' | b'[' => self.container().map(Value::Text),
            _ => self.scalar(),
        }
    }

    /// An object's key and its colon, at the key's quote; spaces after the colon skipped.
    /// The key as written (between its quotes).
    fn key(&mut self, decode: bool) -> Scan<&'a [u8]> {
        if self.peek() != Some(b'"') {
            return Err(Unsure);
        }
        let start = self.at + 1;
        self.string(decode)?;
        let text: &'a [u8] = self.text;
        let key = &text[start..self.at - 1];
        self.space();
        self.eat(b':')?;
        self.space();
        Ok(key)
    }

    /// An array or an object, at its bracket, without recursion: the characters of its
    /// strings (keys aside). An object's repeated key keeps its last value only (Python's
    /// dict): the characters of the others would count too, so an object that repeats one
    /// (or may: a key with an escape, more than `MAX_KEYS` keys) is `Unsure`.
    fn container(&mut self) -> Scan<usize> {
        let mut chars = 0;
        // The closing bracket of each open container, and where its keys start in `keys`.
        let mut open: Vec<(u8, usize)> = Vec::new();
        let mut keys: Vec<&'a [u8]> = Vec::new();
        loop {
            // At a value.
            match self.peek().ok_or(Unsure)? {
                opening @ (b'{' | b'[') => {
                    let closing = if opening == b'{' { b'}' } else { b']' };
                    self.at += 1;
                    self.space();
                    if self.peek() != Some(closing) {
                        let first = keys.len();
                        open.push((closing, first));
                        if closing == b'}' {
                            new_key(&mut keys, first, self.key(false)?)?;
                        }
                        continue;
                    }
                    self.at += 1; // (empty)
                }
                b'"' => chars += self.string(false)?,
                _ => {
                    self.scalar()?;
                }
            }
            // After a value: close what ends here, then on to the next value.
            loop {
                let Some(&(closing, first)) = open.last() else {
                    return Ok(chars);
                };
                self.space();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        self.space();
                        if closing == b'}' {
                            new_key(&mut keys, first, self.key(false)?)?;
                        }
                        break;
                    }
                    Some(byte) if byte == closing => {
                        self.at += 1;
                        open.pop();
                        keys.truncate(first);
                    }
                    _ => return Err(Unsure),
                }
            }
        }
    }

    /// An object's members, at its brace: `member` is given each decoded key (in
    /// `self.key`) and reads the value.
    fn members(&mut self, mut member: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.at += 1;
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.key(true)?;
            member(self)?;
            self.space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.space();
                }
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// The counted keys of a `usage` object (the last value of each), or None if the value
    /// here is not an object.
    fn usage(&mut self) -> Scan<Option<[Option<Value>; 3]>> {
        if self.peek() != Some(b'{') {
            self.value()?;
            return Ok(None);
        }
        let mut read = [None; 3];
        self.members(|s| {
            let value = s.value()?;
            if let Some(i) = which(&s.key, &USAGE_KEYS) {
                read[i] = Some(value);
            }
            Ok(())
        })?;
        Ok(Some(read))
    }
}

/// One more key of the object whose keys start at `first`: `Unsure` if it repeats one (or
/// may).
fn new_key<'a>(keys: &mut Vec<&'a [u8]>, first: usize, key: &'a [u8]) -> Scan<()> {
    let seen = &keys[first..];
    if key.contains(&b'\\') || seen.len() >= MAX_KEYS || seen.contains(&key) {
        return Err(Unsure);
    }
    keys.push(key);
    Ok(())
}

/// The JSON text without the spaces `json.loads` allows around it.
fn trimmed(text: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = text.iter().position(|b| !is_space(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &text[start..end]
}

/// A request's tokens: its `max_tokens` (or `max_completion_tokens`, `max_output_tokens`:
/// the first that is a count; else `default_max_tokens`) plus a quarter of the characters
/// of the strings in its prompt keys, rounded up. 0 for JSON that is not an object.
pub fn estimate(body: &[u8], default_max_tokens: i64) -> Scan<i64> {
    let mut s = Scanner::new(trimmed(body))?;
    if s.peek() != Some(b'{') {
        s.value()?;
        s.end()?;
        return Ok(0);
    }
    let mut most: [Option<Value>; 3] = [None; 3];
    let mut prompt: [usize; 6] = [0; 6];
    s.members(|s| {
        let value = s.value()?;
        if let Some(i) = which(&s.key, &MAX_TOKENS_KEYS) {
            most[i] = Some(value);
        } else if let Some(i) = which(&s.key, &PROMPT_KEYS) {
            prompt[i] = value.chars(); // (a repeated key: its last value, as a dict keeps)
        }
        Ok(())
    })?;
    s.end()?;
    let most = most
        .iter()
        .find_map(|value| value.and_then(Value::count))
        .unwrap_or(default_max_tokens);
    let chars: usize = prompt.iter().sum();
    let quarter = i64::try_from(chars.div_ceil(4)).map_err(|_| Unsure)?;
    most.checked_add(quarter).ok_or(Unsure)
}

/// The tokens an answer states it used: `usage.total_tokens`, or `input_tokens +
/// output_tokens` (each a count), in a JSON body or a stream of server-sent events (the last
/// figures win); `usage` may be inside `message` (Anthropic's `message_start`). None: no
/// usage stated.
pub fn usage(body: &[u8]) -> Scan<Option<i64>> {
    let mut read = Usage::default();
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0x0b)
        .unwrap_or(body.len());
    if body.get(start) == Some(&b'{') {
        read.document(&body[start..])?;
    } else {
        for line in lines(body) {
            if let Some(data) = line.strip_prefix(b"data:") {
                read.document(python_strip(data))?;
            }
        }
    }
    if read.total.is_some() {
        return Ok(read.total);
    }
    match read.counts {
        [None, None] => Ok(None),
        [input, output] => input
            .unwrap_or(0)
            .checked_add(output.unwrap_or(0))
            .map(Some)
            .ok_or(Unsure),
    }
}

#[derive(Default)]
struct Usage {
    total: Option<i64>,
    /// input_tokens, output_tokens.
    counts: [Option<i64>; 2],
}

impl Usage {
    /// One JSON document (the body, or one event's data).
    fn document(&mut self, text: &[u8]) -> Scan<()> {
        // Only a document that spells "usage" (or may, with an escape) can state one: a
        // stream has an event per token and a few with usage.
        if !contains(text, b"\"usage\"") && !contains(text, b"\\u") {
            return Ok(());
        }
        let mut s = Scanner::new(trimmed(text))?;
        if s.peek() != Some(b'{') {
            s.value()?;
            return s.end();
        }
        let mut usage = None;
        let mut message = None;
        s.members(|s| {
            if s.key == b"usage" {
                usage = s.usage()?;
            } else if s.key == b"message" {
                message = None;
                if s.peek() == Some(b'{') {
                    let mut inner = None;
                    s.members(|s| {
                        if s.key == b"usage" {
                            inner = s.usage()?;
                        } else {
                            s.value()?;
                        }
                        Ok(())
                    })?;
                    message = inner;
                } else {
                    s.value()?;
                }
            } else {
                s.value()?;
            }
            Ok(())
        })?;
        s.end()?;
        if let Some([total, input, output]) = usage.or(message) {
            if let Some(total) = total.and_then(Value::count) {
                self.total = Some(total);
            }
            for (i, value) in [input, output].into_iter().enumerate() {
                if let Some(n) = value.and_then(Value::count) {
                    self.counts[i] = Some(n);
                }
            }
        }
        Ok(())
    }
}

fn contains(text: &[u8], needle: &[u8]) -> bool {
    text.windows(needle.len()).any(|w| w == needle)
}

/// Python's `bytes.strip()`: ASCII whitespace, vertical tab included.
fn python_strip(text: &[u8]) -> &[u8] {
    let is_space = |b: &u8| b.is_ascii_whitespace() || *b == 0x0b;
    let start = text.iter().position(|b| !is_space(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &text[start..end]
}

/// Python's `bytes.splitlines()`: lines ended by `\n`, `\r` or `\r\n`.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let mut next = end;
        if rest.get(end) == Some(&b'\r') && rest.get(end + 1) == Some(&b'\n') {
            next += 2;
        } else if end < rest.len() {
            next += 1;
        }
        rest = &rest[next..];
        Some(line)
    })
}
