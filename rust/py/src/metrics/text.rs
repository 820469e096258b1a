//! Lines of the Prometheus text exposition format (0.0.4): `name{labels} value`.

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// Appends `value` to `out` as a label value: backslash, double quote and newline escaped.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `name="value"` pairs, comma-separated, values escaped.
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        push_escaped(&mut out, value);
        out.push('"');
    }
    out
}

/// The lines of one series in one family: every line starts with `name` and the series'
/// `labels`; `extra` (one per line kind, `,le="0.5"`) follows them.
pub struct Lines<'a> {
    out: &'a mut Vec<u8>,
    name: &'a str,
    labels: &'a str,
}

impl<'a> Lines<'a> {
    pub fn new(out: &'a mut Vec<u8>, name: &'a str, labels: &'a str) -> Self {
        Self { out, name, labels }
    }

    /// `name{labels<extra>} value`; `suffix` is added to the name (`_bucket`, `_sum`).
    pub fn line(&mut self, suffix: &str, extra: &str, value: Value) {
        let out = &mut *self.out;
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        out.push(b'{');
        out.extend_from_slice(self.labels.as_bytes());
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"} ");
        match value {
            Value::Int(v) => push_u64(out, v),
            // Shortest round-trip form, as Python's repr (`0.25`, `1e-7`): Prometheus parses it.
            Value::Float(v) => out.extend_from_slice(format!("{v:?}").as_bytes()),
        }
        out.push(b'\n');
    }
}

/// Appends `v` in decimal.
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}
