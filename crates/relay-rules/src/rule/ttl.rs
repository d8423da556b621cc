//! The IP time to live an output writes: a fixed value, or the incoming one less one.

use std::fmt;
use std::str::FromStr;

/// The IP time to live of an output's datagrams.
///
/// In a file or message it is a number (`ttl = 8`) or the word `"decrement"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// This TTL on every datagram (0 is refused by validation: it would never leave the host).
    Fixed(u8),
    /// The incoming datagram's TTL less one, as a router does: a datagram that arrives with a
    /// TTL of 1 or 0 is dropped and counted (`ttl_expired`), so that relays that feed each
    /// other by mistake pass a datagram around only as often as its TTL allows.
    Decrement,
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ttl::Fixed(ttl) => write!(f, "{ttl}"),
            Ttl::Decrement => f.write_str("decrement"),
        }
    }
}

/// A TTL that is neither a number from 0 to 255 nor `decrement`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TTL {0:?} is neither a number from 1 to 255 nor \"decrement\"")]
pub struct BadTtl(pub String);

impl FromStr for Ttl {
    type Err = BadTtl;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "decrement" {
            return Ok(Ttl::Decrement);
        }
        text.parse()
            .map(Ttl::Fixed)
            .map_err(|_| BadTtl(text.to_owned()))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Ttl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Ttl::Fixed(ttl) => serializer.serialize_u8(*ttl),
            Ttl::Decrement => serializer.serialize_str("decrement"),
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Ttl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Ttl;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TTL from 1 to 255 or \"decrement\"")
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Ttl, E> {
                u8::try_from(value)
                    .map(Ttl::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Ttl, E> {
                u8::try_from(value)
                    .map(Ttl::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Ttl, E> {
                match value {
                    "decrement" => Ok(Ttl::Decrement),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(value), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_forms() {
        assert_eq!("8".parse(), Ok(Ttl::Fixed(8)));
        assert_eq!("decrement".parse(), Ok(Ttl::Decrement));
        assert_eq!("256".parse::<Ttl>(), Err(BadTtl("256".into())));
        assert_eq!(Ttl::Fixed(8).to_string(), "8");
        assert_eq!(Ttl::Decrement.to_string(), "decrement");
    }
}
