//! Times and durations as Go's apimachinery marshals them to JSON:
//! `metav1.Time` to the second (`2024-01-02T03:04:05Z`), `MicroTime` to
//! the microsecond, `metav1.Duration` as Go's `time.Duration` prints
//! (`1h2m3.5s`).

use k8s_openapi::jiff::Timestamp;

pub fn time(seconds: i64) -> Result<String, String> {
    let at = Timestamp::from_second(seconds).map_err(|e| e.to_string())?;
    Ok(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

pub fn micro_time(seconds: i64, nanos: i32) -> Result<String, String> {
    let at = Timestamp::new(seconds, nanos).map_err(|e| e.to_string())?;
    Ok(at.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string())
}

pub fn duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    if nanos < 1_000_000_000 {
        // Go prints sub-second durations in the largest fitting unit.
        let (unit, scale) = match nanos {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", decimal(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = decimal(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `value / scale` with the fraction's trailing zeros dropped.
fn decimal(value: u64, scale: u64) -> String {
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_go_does() {
        assert_eq!(time(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            micro_time(1, 500_000_000).unwrap(),
            "1970-01-01T00:00:01.500000Z"
        );
        assert_eq!(duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(duration(90_000_000_000), "1m30s");
        assert_eq!(duration(1_500_000), "1.5ms");
        assert_eq!(duration(-2_000_000_000), "-2s");
    }
}
