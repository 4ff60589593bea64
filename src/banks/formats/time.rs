//! The timestamps partner formats carry, to and from ms since the Unix epoch (UTC).
//!
//! ThreatExchange writes `2020-07-01T18:31:15+0000`, NCMEC `2017-10-24T15:00:00Z`; both are ISO 8601 with
//! an offset. `humantime` (already a dependency) parses only `Z`, not `+0000`, so the civil-date arithmetic
//! is done here (days from a proleptic Gregorian date, the well-known era-based method).

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HHMM|±HH:MM)` (a space may stand for the `T`) to ms since the
/// epoch; `None` for anything else or a time before 1970.
pub(super) fn parse(s: &str) -> Option<u64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, sec) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > 31 || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n];
        ms = format!("{:0<3}", &digits[..n.min(3)]).parse().ok()?;
        rest = &frac[n..];
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest[1..].replace(':', "");
            if o.len() != 4 || !o.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (oh, om): (i64, i64) = (o[..2].parse().ok()?, o[2..].parse().ok()?);
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec) - offset_s;
    u64::try_from(secs).ok().map(|s| s * 1000 + u64::from(ms))
}

/// `ms` as `YYYY-MM-DDTHH:MM:SS` (UTC, to the second), the common part of the forms below.
fn seconds(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// ThreatExchange's form: `2020-07-01T18:31:15+0000`.
pub(super) fn te(ms: u64) -> String {
    format!("{}+0000", seconds(ms))
}

/// NCMEC's form: `2017-10-24T15:00:00Z`.
pub(super) fn ncmec(ms: u64) -> String {
    format!("{}Z", seconds(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_and_offsets() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2020-07-01T18:31:15+0000"), Some(1_593_628_275_000));
        assert_eq!(parse("2020-07-01T20:31:15+02:00"), Some(1_593_628_275_000));
        assert_eq!(parse("2017-10-24T15:00:00.250Z"), Some(1_508_857_200_250));
        assert_eq!(te(1_593_628_275_999), "2020-07-01T18:31:15+0000");
        assert_eq!(ncmec(1_508_857_200_000), "2017-10-24T15:00:00Z");
        assert_eq!(parse("2024-02-29T00:00:00Z").map(ncmec), Some("2024-02-29T00:00:00Z".into()));
        for bad in
            ["today", "2020-07-01", "2020-13-01T00:00:00Z", "2020-07-01T18:31:15", "1969-12-31T23:59:59Z"]
        {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
