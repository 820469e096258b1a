//! A rate-limit reset as the providers write it, read from its bytes: a Go duration
//! (OpenAI: `6m0s`, `20ms`, `1.5s`), a number of seconds (`7`), or an RFC 3339 time
//! (Anthropic: `2030-01-01T00:00:10Z`).
//!
//! It reads only the forms it is sure of, each giving what `admission.presets.parse_reset`
//! gives (the same float: the same operations on correctly rounded parts); anything else
//! (spaces, other number forms, other ISO 8601 forms, times beyond 2^53 microseconds from
//! 1970) is `None` here and left to Python.

/// A reset read: seconds from now, or a point in wall-clock time (seconds since 1970).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reset {
    /// A finite duration >= 0, or None: unreadable (not a wait).
    After(Option<f64>),
    /// An RFC 3339 time.
    At(f64),
}

/// The reset `value` states, or None: not read here.
pub fn read(value: &[u8]) -> Option<Reset> {
    if let Some(seconds) = go_duration(value) {
        return Some(Reset::After(finite(seconds)));
    }
    if let Some(seconds) = decimal(value) {
        return Some(Reset::After(finite(seconds)));
    }
    rfc3339(value).map(Reset::At)
}

/// Python's `float(text)` of digits with an optional fraction (`\d+(\.\d+)?`), else None.
fn decimal(text: &[u8]) -> Option<f64> {
    let (int, fraction) = match text.iter().position(|b| *b == b'.') {
        Some(dot) => (&text[..dot], Some(&text[dot + 1..])),
        None => (text, None),
    };
    let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    if !digits(int) || !fraction.map_or(true, digits) {
        return None;
    }
    // (Rust's parse, like Python's float(), rounds correctly: the same float.)
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn finite(seconds: f64) -> Option<f64> {
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

/// A Go duration as `presets._GO_DURATION` matches it: hours, minutes, seconds and
/// milliseconds, each at most once and in that order, at least one; hours and minutes
/// whole, the others with an optional fraction.
fn go_duration(text: &[u8]) -> Option<f64> {
    const HOURS: u8 = 0;
    const MINUTES: u8 = 1;
    const SECONDS: u8 = 2;
    const MILLIS: u8 = 3;
    let mut parts = [0.0f64; 4];
    let mut next = HOURS; // (the first unit still allowed)
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let int = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if int == 0 {
            return None;
        }
        let mut end = int;
        if rest.get(end) == Some(&b'.') && rest.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end += 1 + rest[end + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        }
        let fractional = end > int;
        let (unit, width) = match &rest[end..] {
            [b'm', b's', ..] => (MILLIS, 2),
            [b'h', ..] if !fractional => (HOURS, 1),
            [b'm', ..] if !fractional => (MINUTES, 1),
            [b's', ..] => (SECONDS, 1),
            _ => return None,
        };
        if unit < next {
            return None;
        }
        parts[usize::from(unit)] = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        next = unit + 1;
        rest = &rest[end + width..];
    }
    let [h, m, s, ms] = parts;
    // (The expression of `presets._read_reset`, in its order.)
    Some(h * 3600.0 + m * 60.0 + s + ms / 1e3)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff](Z|+HH:MM|-HH:MM)`, as Python's
/// `datetime.fromisoformat(...).timestamp()` gives it (microseconds / 1e6), else None.
fn rfc3339(text: &[u8]) -> Option<f64> {
    let number = |at: usize, len: usize| -> Option<i64> {
        let digits = text.get(at..at + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, byte: u8| text.get(i) == Some(&byte);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    let mut i = 19;
    let mut micros = 0;
    if at(i, b'.') {
        let digits = text[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        micros = match digits {
            3 => number(i + 1, 3)? * 1000,
            6 => number(i + 1, 6)?,
            _ => return None,
        };
        i += 1 + digits;
    }
    let offset = match &text[i..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(i + 1, 2)?, number(i + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1
        || !(1..=12).contains(&month)
        || day < 1
        || day > month_days[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let total = seconds * 1_000_000 + micros;
    // Python divides the integer microseconds by 10**6, correctly rounded: so does this,
    // while they convert to a float exactly.
    if total.unsigned_abs() > 1 << 53 {
        return None;
    }
    Some(total as f64 / 1e6)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
