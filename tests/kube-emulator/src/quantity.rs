//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `1e3`) as exact
//! numbers, for the parts that add up and compare requests: the scheduler
//! and the kubelet's admission against a node's allocatable resources.
//!
//! A quantity is kept in thousandths of its unit, as the real `MilliValue`
//! does, rounded up; `value` rounds up to whole units as `Value` does
//! (memory in bytes, pods in pods).

/// A parsed quantity, in thousandths of its unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    milli: i128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct InvalidQuantity(pub String);

impl Quantity {
    /// Thousandths of the unit (millicores for cpu).
    pub fn milli(self) -> i128 {
        self.milli
    }

    /// Whole units, rounded up (bytes for memory).
    pub fn value(self) -> i128 {
        self.milli.div_euclid(1000) + i128::from(self.milli.rem_euclid(1000) != 0)
    }

    pub fn parse(text: &str) -> Result<Self, InvalidQuantity> {
        parse(text).ok_or_else(|| InvalidQuantity(text.to_string()))
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_add(other.milli),
        }
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, other: Quantity) {
        *self = *self + other;
    }
}

/// Parses `<sign><digits>[.<digits>]<suffix>`, where the suffix is a binary
/// (`Ki`..`Ei`) or decimal (`n`, `u`, `m`, `k`, `M`..`E`) multiplier or an
/// exponent (`e3`, `E-2`).
fn parse(text: &str) -> Option<Quantity> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits: String = format!("{whole}{fraction}");
    let mut mantissa: i128 = digits.parse().ok()?;
    // value = mantissa * 10^(decimal - fraction digits) * 2^binary
    let (binary, decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent => {
            let exponent = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            (0, exponent.parse().ok()?)
        }
    };
    mantissa = mantissa.checked_mul(1i128.checked_shl(binary)?)?;
    let fraction_digits = i32::try_from(fraction.len()).ok()?;
    // Thousandths: one more factor of 10^3.
    let scale = decimal.checked_add(3)?.checked_sub(fraction_digits)?;
    let milli = if scale >= 0 {
        mantissa.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?
    } else {
        let divisor = 10i128
            .checked_pow(scale.unsigned_abs())
            .unwrap_or(i128::MAX);
        // Rounded up, as the real MilliValue rounds.
        mantissa / divisor + i128::from(mantissa % divisor != 0)
    };
    Some(Quantity {
        milli: if negative { -milli } else { milli },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(text: &str) -> i128 {
        Quantity::parse(text).unwrap().milli()
    }

    #[test]
    fn cpu_quantities_are_read_in_millicores() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("1e3"), 1_000_000);
        assert_eq!(milli("+250m"), 250);
        // Below a millicore rounds up to one, as the real MilliValue does.
        assert_eq!(milli("1u"), 1);
        assert_eq!(milli("0"), 0);
    }

    #[test]
    fn memory_quantities_are_read_in_bytes() {
        let bytes = |text: &str| Quantity::parse(text).unwrap().value();
        assert_eq!(bytes("16Gi"), 16 << 30);
        assert_eq!(bytes("512Mi"), 512 << 20);
        assert_eq!(bytes("1G"), 1_000_000_000);
        assert_eq!(bytes("1k"), 1000);
        assert_eq!(bytes("1.5Ki"), 1536);
        assert_eq!(bytes("100"), 100);
        assert_eq!(bytes("1500m"), 2, "whole units round up");
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for text in ["", "abc", "1.2.3", "1Qi", "Mi", ".", "1e", "--1", "1 Gi"] {
            assert_eq!(
                Quantity::parse(text),
                Err(InvalidQuantity(text.to_string())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn quantities_add_up() {
        let mut sum = Quantity::parse("1").unwrap() + Quantity::parse("250m").unwrap();
        sum += Quantity::parse("0.75").unwrap();
        assert_eq!((sum.milli(), sum.value()), (2000, 2));
    }
}
