//! Where a key is, as `genq.api_keys.state` records it (and the table
//! CHECKs): in use, cooling down after a 429 or a failure streak, or
//! disabled until re-tested or enabled.

use serde::{Deserialize, Serialize};

/// A key's state. Stored as text; a `sqlx::Type` through `as_str` and `FromStr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Takes calls (within its buckets).
    Active,
    /// Takes nothing until its `cooldown_until`.
    Cooling,
    /// Takes nothing until it passes a re-test or an operator enables it.
    Disabled,
}

impl KeyState {
    pub const ALL: [KeyState; 3] = [KeyState::Active, KeyState::Cooling, KeyState::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Cooling => "cooling",
            KeyState::Disabled => "disabled",
        }
    }
}

/// A state word genq does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key state {0:?}; one of active, cooling, disabled")]
pub struct UnknownKeyState(pub String);

impl std::str::FromStr for KeyState {
    type Err = UnknownKeyState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownKeyState(s.to_string()))
    }
}

crate::store::text_enum!(KeyState);

#[cfg(test)]
mod tests {
    use super::KeyState;

    #[test]
    fn states_round_trip_and_unknown_is_refused() {
        for state in KeyState::ALL {
            assert_eq!(state.as_str().parse::<KeyState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert!("paused".parse::<KeyState>().is_err());
    }
}
