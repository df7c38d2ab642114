//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1G`, `1e3`) as numbers, for
//! comparing what a fleet requests with what a ResourceQuota leaves. Precision beyond an
//! f64 does not matter for that comparison.

use std::fmt;

/// A quantity in base units (cores, bytes, pods).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(crate) struct Quantity(pub(crate) f64);

impl Quantity {
    /// Parses the Kubernetes quantity syntax; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let factor = match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024.0,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
        };
        Some(Quantity(number * factor))
    }
}

impl fmt::Display for Quantity {
    /// The shortest exact binary form for large values (`16Gi`), millis for fractions
    /// (`500m`), else the plain number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sums of parsed decimals carry float noise (3 × 0.35 = 1.0499…): round first.
        let whole = |n: f64| (n - n.round()).abs() < 1e-6;
        let value = self.0;
        for (suffix, factor) in [
            ("Gi", 1024f64.powi(3)),
            ("Mi", 1024f64.powi(2)),
            ("Ki", 1024.0),
        ] {
            if value >= factor && whole(value / factor) {
                return write!(f, "{}{suffix}", (value / factor).round());
            }
        }
        match value * 1000.0 {
            millis if whole(millis / 1000.0) => write!(f, "{}", (millis / 1000.0).round()),
            millis if whole(millis) => write!(f, "{}m", millis.round()),
            _ => write!(f, "{value}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Quantity;

    #[test]
    fn quantities_parse_in_every_suffix_kubernetes_accepts() {
        for (text, want) in [
            ("2", 2.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("16Gi", 16.0 * 1024f64.powi(3)),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("250k", 250_000.0),
        ] {
            assert_eq!(Quantity::parse(text), Some(Quantity(want)), "{text}");
        }
        assert_eq!(Quantity::parse("lots"), None);
        assert_eq!(Quantity::parse("1Zi"), None);
    }

    #[test]
    fn quantities_print_as_people_write_them() {
        for text in ["16Gi", "512Mi", "500m", "2", "50"] {
            assert_eq!(Quantity::parse(text).unwrap().to_string(), text);
        }
    }
}
