//! Compute API microversions: parsing, comparing, and picking the one to
//! speak with a cloud (the highest it supports, up to what novaha wants).

use std::fmt;
use std::str::FromStr;

use crate::error::OpenStackError;

/// A compute API microversion, `2.53` = `Microversion(2, 53)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion(pub u16, pub u16);

impl Microversion {
    /// The base version every v2.1 cloud speaks.
    pub const BASE: Self = Self(2, 1);
    /// `PUT /os-services/force-down` (the old force-down form).
    pub const FORCE_DOWN_OLD: Self = Self(2, 11);
    /// Evacuate without `onSharedStorage`.
    pub const EVACUATE_NO_SHARED_STORAGE: Self = Self(2, 14);
    /// `migration_type` in migration records.
    pub const MIGRATION_TYPE: Self = Self(2, 23);
    /// Service ids are UUIDs and `PUT /os-services/{id}` replaces the old
    /// `force-down`, `disable-log-reason` and `enable` actions.
    pub const SERVICE_BY_ID: Self = Self(2, 53);
    /// `lock` takes a `locked_reason`.
    pub const LOCKED_REASON: Self = Self(2, 73);
    /// An evacuated server lands SHUTOFF (it must be started afterwards).
    pub const EVACUATE_LANDS_SHUTOFF: Self = Self(2, 95);
    /// The highest microversion novaha asks for.
    pub const WANTED: Self = Self(2, 95);

    /// Picks the version to speak with a cloud that supports
    /// `min..=max`: the highest of them not above `wanted`. `max = None` is
    /// a cloud without microversions (plain v2.1). Errors when the cloud's
    /// minimum is above what novaha wants.
    pub fn negotiate(
        wanted: Self,
        min: Option<Self>,
        max: Option<Self>,
    ) -> Result<Self, OpenStackError> {
        let max = max.unwrap_or(Self::BASE);
        let min = min.unwrap_or(Self::BASE);
        if min > wanted {
            return Err(OpenStackError::Unsupported {
                call: "nova version negotiation",
                needs: format!("at most {wanted}"),
                have: format!("at least {min}"),
            });
        }
        Ok(wanted.min(max))
    }

    /// Parses a version field; an empty string (no microversions) is `None`.
    pub fn parse_opt(s: &str) -> Result<Option<Self>, OpenStackError> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Read from config as a `"MAJOR.MINOR"` string (`max_microversion =
/// "2.94"`): a TOML float would make 2.10 equal 2.1.
impl<'de> serde::Deserialize<'de> for Microversion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Microversion {
    type Err = OpenStackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OpenStackError::Config(format!("microversion {s:?} is not MAJOR.MINOR"));
        let (a, b) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(Self(
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_numerically() {
        let v: Microversion = "2.53".parse().unwrap();
        assert_eq!(v, Microversion(2, 53));
        assert!(Microversion(2, 9) < Microversion(2, 10));
        assert_eq!(v.to_string(), "2.53");
        assert!("2".parse::<Microversion>().is_err());
        assert!("x.y".parse::<Microversion>().is_err());
        assert_eq!(Microversion::parse_opt("").unwrap(), None);
    }

    #[test]
    fn deserializes_from_a_string_only() {
        #[derive(serde::Deserialize)]
        struct T {
            v: Microversion,
        }
        let t: T = toml::from_str("v = \"2.94\"").unwrap();
        assert_eq!(t.v, Microversion(2, 94));
        let e = toml::from_str::<T>("v = \"2\"").err().unwrap();
        assert!(e.to_string().contains("not MAJOR.MINOR"), "{e}");
        assert!(toml::from_str::<T>("v = 2.94").is_err());
    }

    #[test]
    fn negotiation_picks_highest_supported_up_to_wanted() {
        let w = Microversion::WANTED;
        let n = |min, max| Microversion::negotiate(w, min, max);
        assert_eq!(
            n(Some(Microversion(2, 1)), Some(Microversion(2, 100))).unwrap(),
            w
        );
        assert_eq!(
            n(Some(Microversion(2, 1)), Some(Microversion(2, 42))).unwrap(),
            Microversion(2, 42)
        );
        assert_eq!(n(None, None).unwrap(), Microversion::BASE);
        assert!(n(Some(Microversion(2, 96)), Some(Microversion(2, 99))).is_err());
    }
}
