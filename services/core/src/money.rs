//! Money in integer minor units with an ISO 4217 currency.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code: exactly three ASCII upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code such as `CNY`.
    ///
    /// # Errors
    /// When the code is not three upper-case ASCII letters.
    pub fn parse(code: &str) -> Result<Self, String> {
        let b = code.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([b[0], b[1], b[2]]))
        } else {
            Err(format!(
                "currency {code:?} is not an ISO 4217 code (three upper-case letters)"
            ))
        }
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Construction guarantees ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-negative amount of money in minor units (fen, cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMoney")]
pub struct Money {
    /// Amount in minor units, never negative.
    pub minor: i64,
    /// ISO 4217 currency.
    pub currency: Currency,
}

#[derive(Deserialize)]
struct RawMoney {
    minor: i64,
    currency: Currency,
}

impl TryFrom<RawMoney> for Money {
    type Error = String;
    fn try_from(r: RawMoney) -> Result<Self, String> {
        if r.minor < 0 {
            return Err(format!("money minor {} is negative", r.minor));
        }
        Ok(Self {
            minor: r.minor,
            currency: r.currency,
        })
    }
}

impl Money {
    /// Zero in the given currency.
    #[must_use]
    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    /// `self - other`, floored at zero.
    #[must_use]
    pub fn saturating_sub(self, other: Money) -> Money {
        Money {
            minor: (self.minor - other.minor).max(0),
            currency: self.currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:02} {}",
            self.minor / 100,
            self.minor % 100,
            self.currency
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_money_is_refused() {
        let r: Result<Money, _> = serde_json::from_str(r#"{"minor":-1,"currency":"CNY"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn lowercase_currency_is_refused() {
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("CNY").is_ok());
    }

    #[test]
    fn money_displays_major_units() {
        let m = Money {
            minor: 123_456,
            currency: Currency::parse("CNY").expect("valid"),
        };
        assert_eq!(m.to_string(), "1234.56 CNY");
    }
}
