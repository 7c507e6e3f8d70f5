//! Small rules of Dapr's contract that the sidecar, the injector and the
//! operator must read the same way: truthy annotation values, which app-ids
//! are usable, Go-style durations and byte sizes.

use std::time::Duration;

/// Dapr's truthy spellings (`1`, `t`, `true`, `y`, `yes`, `on`; any case).
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "y" | "yes" | "on"
    )
}

/// Whether `id` can be an app-id: `<id>-dapr` must be a DNS-1123 label, so
/// at most 58 lowercase letters, digits and `-`, starting with a letter or digit.
pub fn valid_app_id(id: &str) -> bool {
    let label = format!("{id}-dapr");
    label.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// One of Dapr's log levels (`debug`, `info`, `warn`, `error`, `fatal`; any
/// case) as a tracing filter; `fatal` logs errors.
pub fn log_level(s: &str) -> Result<String, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        l @ ("debug" | "info" | "warn" | "error") => Ok(l.to_string()),
        "fatal" => Ok("error".into()),
        _ => Err(format!(
            "{s:?} is not a log level: use debug, info, warn or error"
        )),
    }
}

/// A Go-style duration (`5s`, `500ms`, `1h`, `1m30s`), or a plain number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => n / 1e9,
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(secs).ok()?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A byte size written as a Kubernetes quantity: digits with an optional
/// fraction, then an optional suffix (`k M G T P E`, or `Ki Mi Gi Ti Pi Ei`),
/// such as `4Mi`, `1.5Gi` or `1048576`. Fractions of a byte round down.
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u128 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = whole.checked_mul(mult)? + frac_value * mult / scale;
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("4Mi"), Some(4 << 20));
        assert_eq!(parse_byte_size("1000"), Some(1000));
        assert_eq!(parse_byte_size("2k"), Some(2000));
        assert_eq!(parse_byte_size("1.5Ki"), Some(1536));
        assert_eq!(parse_byte_size(".5Mi"), Some(512 << 10));
        assert_eq!(parse_byte_size("1Ti"), Some(1 << 40));
        for bad in [
            "Mi",
            "",
            ".",
            "1.2.3Mi",
            "4MB",
            "-1",
            "99999999999999999999Gi",
            "100m",
        ] {
            assert_eq!(parse_byte_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_levels() {
        assert_eq!(log_level("WARN").as_deref(), Ok("warn"));
        assert_eq!(log_level("fatal").as_deref(), Ok("error"));
        assert!(log_level("verbose").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("20"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn app_ids() {
        assert!(valid_app_id("orders"));
        assert!(valid_app_id("a1-b2"));
        assert!(!valid_app_id("Orders"));
        assert!(!valid_app_id("orders.v1"));
        assert!(!valid_app_id("-orders"));
        assert!(!valid_app_id(""));
        assert!(valid_app_id(&"a".repeat(58)));
        assert!(!valid_app_id(&"a".repeat(59)));
    }

    #[test]
    fn truthy_spellings() {
        for t in ["1", "t", "TRUE", " yes ", "on", "Y"] {
            assert!(truthy(t), "{t}");
        }
        for f in ["0", "false", "no", "", "enabled"] {
            assert!(!truthy(f), "{f}");
        }
    }
}
