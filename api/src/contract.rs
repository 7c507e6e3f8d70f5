//! Small rules of Dapr's contract that the sidecar, the injector and the
//! operator must read the same way: truthy annotation values, which app-ids
//! are usable, and Go-style durations.

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

#[cfg(test)]
mod tests {
    use super::*;

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
