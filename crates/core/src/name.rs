//! Names of things (namespaces, agents, roles, capabilities, sync points): what a valid one is.
//!
//! A name is 1 to 128 bytes of ASCII letters, digits and `_ - . : @ /`. That keeps names safe to
//! print, to use in topics' neighbours, file names and URLs, and cheap to compare.

use crate::error::CoreError;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The namespace used when a client names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Checks `value` is a valid name; `what` names the field in the error ("agent id", "role"...).
pub fn validate(what: &'static str, value: &str) -> Result<(), CoreError> {
    if value.is_empty() {
        return Err(CoreError::invalid(what, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(CoreError::invalid(
            what,
            format!(
                "'{}…' is {} bytes; the limit is {MAX_NAME_LEN}",
                value.chars().take(16).collect::<String>(),
                value.len()
            ),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.:@/".contains(*c))) {
        return Err(CoreError::invalid(
            what,
            format!("'{value}' contains {bad:?}; use letters, digits and _ - . : @ /"),
        ));
    }
    Ok(())
}

/// The namespace a request means: its own, or the default one when empty.
pub fn namespace_or_default(ns: &str) -> Result<&str, CoreError> {
    if ns.is_empty() {
        Ok(DEFAULT_NAMESPACE)
    } else {
        validate("namespace", ns).map(|()| ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["a", "agent-1", "risk_sentinel", "org/team:worker@3", "x.y"] {
            validate("agent id", n).unwrap();
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_names() {
        assert!(validate("agent id", "").is_err());
        assert!(validate("agent id", &"a".repeat(129)).is_err());
        let e = validate("agent id", "bad name").unwrap_err();
        assert!(e.to_string().contains("' '"), "{e}");
        assert!(validate("agent id", "é").is_err());
        // A long name made of multi-byte characters must not split a character in the message.
        assert!(validate("agent id", &"é".repeat(100)).is_err());
    }

    #[test]
    fn empty_namespace_means_default() {
        assert_eq!(namespace_or_default("").unwrap(), "default");
        assert_eq!(namespace_or_default("prod").unwrap(), "prod");
        assert!(namespace_or_default("a b").is_err());
    }
}
