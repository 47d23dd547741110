//! Card UIDs in their one canonical form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 14443-A card UID: 4, 7 or 10 raw bytes, never empty and never all zero.
///
/// Written as uppercase hex, two digits a byte, no separators (`046B2F91C45A80`). Input may use
/// colons, dashes, spaces or lowercase (`04:6b:2f:91:c4:5a:80`) and is normalised.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardUid(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardUidError {
    #[error("card UID {0:?} is empty")]
    Empty(String),
    #[error("card UID {input:?} has a character that is not hex: {bad:?}")]
    NotHex { input: String, bad: char },
    #[error("card UID {0:?} has an odd number of hex digits")]
    OddDigits(String),
    #[error("card UID {input:?} has {len} bytes; a UID has 4, 7 or 10")]
    BadLength { input: String, len: usize },
    #[error("card UID {0:?} is all zero, which no card has")]
    AllZero(String),
}

impl CardUid {
    /// A UID from raw bytes, as a reader returns them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CardUidError> {
        let shown = || hex(bytes);
        if bytes.is_empty() {
            return Err(CardUidError::Empty(shown()));
        }
        if !matches!(bytes.len(), 4 | 7 | 10) {
            return Err(CardUidError::BadLength {
                input: shown(),
                len: bytes.len(),
            });
        }
        if bytes.iter().all(|b| *b == 0) {
            return Err(CardUidError::AllZero(shown()));
        }
        Ok(CardUid(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02X}");
    }
    out
}

impl FromStr for CardUid {
    type Err = CardUidError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut digits = Vec::with_capacity(input.len());
        for c in input.chars() {
            match c {
                ':' | '-' | ' ' => continue,
                c if c.is_ascii_hexdigit() => digits.push(c as u8),
                bad => {
                    return Err(CardUidError::NotHex {
                        input: input.to_string(),
                        bad,
                    })
                }
            }
        }
        if digits.is_empty() {
            return Err(CardUidError::Empty(input.to_string()));
        }
        if digits.len() % 2 != 0 {
            return Err(CardUidError::OddDigits(input.to_string()));
        }
        let nibble = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
        let bytes: Vec<u8> = digits
            .chunks(2)
            .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
            .collect();
        CardUid::from_bytes(&bytes).map_err(|e| match e {
            CardUidError::BadLength { len, .. } => CardUidError::BadLength {
                input: input.to_string(),
                len,
            },
            CardUidError::AllZero(_) => CardUidError::AllZero(input.to_string()),
            other => other,
        })
    }
}

impl fmt::Display for CardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for CardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardUid({self})")
    }
}

impl Serialize for CardUid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CardUid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_case_normalise_to_one_form() {
        let a: CardUid = "04:6b:2f:91:c4:5a:80".parse().unwrap();
        let b: CardUid = "04 6B 2F 91 C4 5A 80".parse().unwrap();
        let c: CardUid = "046B2F91C45A80".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_string(), "046B2F91C45A80");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"046B2F91C45A80\"");
    }

    #[test]
    fn lengths_other_than_4_7_10_are_rejected() {
        for (input, len) in [("DEADBE", 3), ("DEADBEEF01", 5), ("0102030405060708", 8)] {
            assert_eq!(
                input.parse::<CardUid>(),
                Err(CardUidError::BadLength {
                    input: input.into(),
                    len
                })
            );
        }
        assert!("DEADBEEF".parse::<CardUid>().is_ok());
        assert!("01020304050607".parse::<CardUid>().is_ok());
        assert!("0102030405060708090A".parse::<CardUid>().is_ok());
    }

    #[test]
    fn empty_zero_odd_and_non_hex_uids_are_errors() {
        assert!(matches!("".parse::<CardUid>(), Err(CardUidError::Empty(_))));
        assert!(matches!(
            " : ".parse::<CardUid>(),
            Err(CardUidError::Empty(_))
        ));
        assert!(matches!(
            "00000000".parse::<CardUid>(),
            Err(CardUidError::AllZero(_))
        ));
        assert!(matches!(
            "DEADBEE".parse::<CardUid>(),
            Err(CardUidError::OddDigits(_))
        ));
        assert!(matches!(
            "DEADBEEG".parse::<CardUid>(),
            Err(CardUidError::NotHex { bad: 'G', .. })
        ));
        assert!(CardUid::from_bytes(&[]).is_err());
        assert!(CardUid::from_bytes(&[0; 7]).is_err());
    }
}
