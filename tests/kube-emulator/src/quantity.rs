//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `1e3`) as exact
//! numbers, for everything that adds up and compares requests: admission
//! (LimitRange, ResourceQuota), the scheduler and the kubelet's admission
//! against a node's allocatable resources. Printed in the canonical form
//! the real server prints them in (`1500m`, `2Gi`, `3k`).
//!
//! A quantity is kept in thousandths of its unit, as the real `MilliValue`
//! does, rounded up; [`Quantity::value`] rounds up to whole units as
//! `Value` does (memory in bytes, pods in pods).

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use serde_json::Value;

/// A quantity in thousandths, and whether it was written with a binary
/// suffix (which its canonical form keeps, and which equality ignores:
/// `1Gi` equals `1073741824`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    milli: i128,
    binary: bool,
}

const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL: [(&str, i32); 9] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

impl Quantity {
    pub const ZERO: Quantity = Quantity {
        milli: 0,
        binary: false,
    };

    /// A count of whole things (`pods=3`).
    pub fn count(n: i64) -> Self {
        Quantity {
            milli: i128::from(n) * 1000,
            binary: false,
        }
    }

    /// Parses a quantity, or says why it is not one. Fractions below a
    /// thousandth round up, as the real server rounds them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {text:?})")
        };
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if (whole.is_empty() && fraction.is_empty())
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
            || fraction.len() > 30
            || whole.len() > 30
        {
            return Err(bad());
        }
        // the value as an integer over 10^scale
        let mantissa: i128 = format!("{whole}{fraction}").parse().map_err(|_| bad())?;
        let scale = fraction.len() as i32;
        let (factor_exponent, binary_shift, binary) = match suffix {
            "" => (0, 0, false),
            s => match (
                BINARY.iter().find(|(b, _)| *b == s),
                DECIMAL.iter().find(|(d, _)| *d == s),
            ) {
                (Some((_, shift)), _) => (0, *shift, true),
                (_, Some((_, exponent))) => (*exponent, 0, false),
                _ => match s.strip_prefix(['e', 'E']).map(str::parse::<i32>) {
                    Some(Ok(exponent)) => (exponent, 0, false),
                    _ => return Err(bad()),
                },
            },
        };
        // milli = mantissa * 2^shift * 10^(exponent + 3 - scale), rounded up
        let mut value = mantissa.checked_shl(binary_shift).ok_or_else(bad)?;
        let exponent = factor_exponent + 3 - scale;
        if exponent >= 0 {
            value = value
                .checked_mul(10i128.checked_pow(exponent as u32).ok_or_else(bad)?)
                .ok_or_else(bad)?;
        } else {
            let divisor = 10i128.checked_pow((-exponent) as u32).ok_or_else(bad)?;
            value = (value + divisor - 1) / divisor;
        }
        Ok(Quantity {
            milli: if negative { -value } else { value },
            binary,
        })
    }

    /// The quantity a JSON field holds (a string or a number), if any.
    pub fn of(value: &Value) -> Option<Result<Self, String>> {
        match value {
            Value::String(text) => Some(Self::parse(text)),
            Value::Number(n) => Some(Self::parse(&n.to_string())),
            _ => None,
        }
    }

    /// Thousandths of the unit (millicores for cpu).
    pub fn milli(self) -> i128 {
        self.milli
    }

    /// Whole units, rounded up (bytes for memory).
    pub fn value(self) -> i128 {
        self.milli.div_euclid(1000) + i128::from(self.milli.rem_euclid(1000) != 0)
    }

    pub fn is_zero(self) -> bool {
        self.milli == 0
    }
}

impl Add for Quantity {
    type Output = Quantity;
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            milli: self.milli + other.milli,
            binary: self.binary || (self.milli == 0 && other.binary),
        }
    }
}

impl AddAssign for Quantity {
    fn add_assign(&mut self, other: Quantity) {
        *self = *self + other;
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::ZERO
    }
}

impl Sub for Quantity {
    type Output = Quantity;
    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            milli: self.milli - other.milli,
            binary: self.binary,
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.milli.cmp(&other.milli)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 != 0 {
            return write!(f, "{}m", self.milli);
        }
        let units = self.milli / 1000;
        if units == 0 {
            return write!(f, "0");
        }
        if self.binary {
            let suffix = BINARY
                .iter()
                .rev()
                .find(|(_, shift)| units % (1i128 << shift) == 0);
            if let Some((suffix, shift)) = suffix {
                return write!(f, "{}{suffix}", units >> shift);
            }
        }
        let suffix = DECIMAL
            .iter()
            .rev()
            .filter(|(_, exponent)| *exponent > 0)
            .find(|(_, exponent)| units % 10i128.pow(*exponent as u32) == 0);
        match suffix {
            Some((suffix, exponent)) => {
                write!(f, "{}{suffix}", units / 10i128.pow(*exponent as u32))
            }
            None => write!(f, "{units}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for (text, printed) in [
            ("500m", "500m"),
            ("1.5", "1500m"),
            ("2", "2"),
            ("2000", "2k"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("0", "0"),
            ("1e3", "1k"),
            ("100M", "100M"),
        ] {
            assert_eq!(
                Quantity::parse(text).unwrap().to_string(),
                printed,
                "{text}"
            );
        }
        let sum = Quantity::parse("512Mi").unwrap() + Quantity::parse("512Mi").unwrap();
        assert_eq!(sum.to_string(), "1Gi");
        assert!(Quantity::parse("12x").is_err());
        assert!(Quantity::parse("").is_err());
        assert!(Quantity::parse("1.2.3").is_err());
    }

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
            let error = Quantity::parse(text).unwrap_err();
            assert!(error.contains("regular expression"), "{text:?}: {error}");
        }
    }

    #[test]
    fn quantities_add_up() {
        let mut sum = Quantity::parse("1").unwrap() + Quantity::parse("250m").unwrap();
        sum += Quantity::parse("0.75").unwrap();
        assert_eq!((sum.milli(), sum.value()), (2000, 2));
    }
}
