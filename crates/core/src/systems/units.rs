//! Units of the measurements a sync event carries, and their conversion to one canonical unit
//! per quantity: durations (drift, latency) to milliseconds, counts (records moved) to records,
//! sizes (bytes moved) to bytes. An unknown unit is refused with the list of the known ones, and
//! a negative or non-finite value is refused whatever its unit: nothing is guessed.

use serde::{Deserialize, Serialize};

use super::SystemsError;

/// What a measurement measures; each has one canonical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quantity {
    /// Canonical unit: milliseconds (`ms`).
    Duration,
    /// Canonical unit: records (`records`).
    Count,
    /// Canonical unit: bytes (`B`).
    Size,
}

/// Every accepted unit name per quantity, with its factor to the canonical unit. Names are
/// matched exactly (case matters: `MB` is 10^6 bytes, `MiB` 2^20).
const UNITS: &[(Quantity, &str, f64)] = &[
    (Quantity::Duration, "ms", 1.0),
    (Quantity::Duration, "s", 1_000.0),
    (Quantity::Duration, "min", 60_000.0),
    (Quantity::Duration, "h", 3_600_000.0),
    (Quantity::Count, "records", 1.0),
    (Quantity::Count, "rows", 1.0),
    (Quantity::Size, "B", 1.0),
    (Quantity::Size, "KB", 1e3),
    (Quantity::Size, "MB", 1e6),
    (Quantity::Size, "GB", 1e9),
    (Quantity::Size, "TB", 1e12),
    (Quantity::Size, "KiB", 1024.0),
    (Quantity::Size, "MiB", 1_048_576.0),
    (Quantity::Size, "GiB", 1_073_741_824.0),
];

impl Quantity {
    /// The canonical unit's name.
    pub fn canonical(self) -> &'static str {
        match self {
            Quantity::Duration => "ms",
            Quantity::Count => "records",
            Quantity::Size => "B",
        }
    }

    /// The accepted unit names, in the documented order.
    pub fn known(self) -> Vec<&'static str> {
        UNITS.iter().filter(|(q, _, _)| *q == self).map(|(_, name, _)| *name).collect()
    }

    fn field(self) -> &'static str {
        match self {
            Quantity::Duration => "a duration",
            Quantity::Count => "a count",
            Quantity::Size => "a size",
        }
    }
}

/// A value with the unit its reporter gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub value: f64,
    /// Empty means the canonical unit.
    pub unit: String,
}

impl Measure {
    pub fn new(value: f64, unit: &str) -> Self {
        Measure { value, unit: unit.to_owned() }
    }
}

/// `measure` of `field` (its name in errors) converted to `quantity`'s canonical unit.
pub fn normalise(field: &'static str, quantity: Quantity, measure: &Measure) -> Result<f64, SystemsError> {
    if !measure.value.is_finite() || measure.value < 0.0 {
        return Err(SystemsError::BadMeasurement {
            field,
            value: measure.value.to_string(),
            why: "a measurement is a finite number ≥ 0".into(),
        });
    }
    let unit = if measure.unit.is_empty() { quantity.canonical() } else { measure.unit.as_str() };
    let factor = UNITS.iter().find(|(q, name, _)| *q == quantity && *name == unit).map(|(_, _, f)| *f);
    let Some(factor) = factor else {
        return Err(SystemsError::UnknownUnit {
            field,
            unit: measure.unit.clone(),
            quantity: quantity.field(),
            known: quantity.known().join(", "),
        });
    };
    let value = measure.value * factor;
    // A finite value times a finite factor can still overflow to infinity.
    if !value.is_finite() {
        return Err(SystemsError::BadMeasurement {
            field,
            value: measure.value.to_string(),
            why: format!("too large once converted to {}", quantity.canonical()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_counts_and_sizes_convert_to_their_canonical_unit() {
        assert_eq!(normalise("latency", Quantity::Duration, &Measure::new(1.5, "s")).unwrap(), 1500.0);
        assert_eq!(normalise("latency", Quantity::Duration, &Measure::new(2.0, "min")).unwrap(), 120_000.0);
        assert_eq!(normalise("latency", Quantity::Duration, &Measure::new(7.0, "")).unwrap(), 7.0);
        assert_eq!(normalise("records", Quantity::Count, &Measure::new(10.0, "rows")).unwrap(), 10.0);
        assert_eq!(normalise("bytes", Quantity::Size, &Measure::new(2.0, "KiB")).unwrap(), 2048.0);
        assert_eq!(normalise("bytes", Quantity::Size, &Measure::new(3.0, "MB")).unwrap(), 3e6);
    }

    #[test]
    fn an_unknown_unit_is_refused_with_the_known_ones() {
        let e = normalise("latency", Quantity::Duration, &Measure::new(1.0, "fortnight")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("'fortnight'") && text.contains("ms, s, min, h"), "{text}");
        // A unit of another quantity is unknown here too.
        assert!(matches!(
            normalise("records", Quantity::Count, &Measure::new(1.0, "MB")),
            Err(SystemsError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn negative_non_finite_and_overflowing_values_are_refused() {
        for v in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = normalise("drift", Quantity::Duration, &Measure::new(v, "ms")).unwrap_err();
            assert!(matches!(e, SystemsError::BadMeasurement { field: "drift", .. }), "{v}");
        }
        let e = normalise("bytes", Quantity::Size, &Measure::new(f64::MAX, "GiB")).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
