//! Sizes and durations as people type them on a command line: `10GB`, `512MiB`,
//! `90s`, `15m`. Plain numbers are bytes and seconds.

use std::time::Duration;

/// `10GB` (decimal), `512MiB` (binary), `1000` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 500MB, 10GB, 2TiB, 1000)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "pb" | "p" => 1_000_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (B, KB, MB, GB, TB, PB or KiB … PiB)"
            ));
        }
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{text}' is too large"));
    }
    Ok(bytes.round() as u64)
}

/// `90` or `90s`, `500ms`, `15m`, `2h`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        _ if text.ends_with("ms") => (&text[..text.len() - 2], 0.001),
        Some((i, 's')) => (&text[..i], 1.0),
        Some((i, 'm')) => (&text[..i], 60.0),
        Some((i, 'h')) => (&text[..i], 3600.0),
        Some((i, 'd')) => (&text[..i], 86400.0),
        _ => (text, 1.0),
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("'{text}' is not a duration (examples: 90, 90s, 500ms, 15m, 2h, 30d)")
    })?;
    let seconds = value * scale;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 365.0 * 86400.0 {
        return Err(format!(
            "'{text}' is out of range (more than 0 and at most a year)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `0.50`, `$2`, `1e-3`: a positive number of US dollars.
pub fn parse_usd(text: &str) -> Result<f64, String> {
    let trimmed = text.trim().trim_start_matches('$');
    match trimmed.parse::<f64>() {
        Ok(usd) if usd > 0.0 && usd.is_finite() => Ok(usd),
        _ => Err(format!(
            "'{text}' is not a positive amount of US dollars (examples: 0.50, $2)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("1.5 MB"), Ok(1_500_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(
            parse_size("10XB")
                .unwrap_err()
                .contains("unknown unit 'xb'")
        );
        assert!(parse_size("1e30").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("0").is_err());
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
