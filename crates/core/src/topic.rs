//! Topics and interest patterns.
//!
//! A topic is dot-separated tokens (`market.btc.trades`). A pattern matches topics token by token:
//! `*` matches exactly one token, `>` (only as the last token) matches one or more remaining tokens,
//! and the whole pattern `all` is an alias of `>` (every topic), as in the seed SyncBus.

use crate::error::CoreError;

/// A validated interest pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    tokens: Vec<PatternToken>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PatternToken {
    Literal(String),
    One,
    Rest,
}

fn check_token(what: &'static str, whole: &str, token: &str) -> Result<(), CoreError> {
    if token.is_empty() {
        return Err(CoreError::invalid(
            what,
            format!("'{whole}' has an empty token (two dots in a row, or a leading or trailing dot)"),
        ));
    }
    if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(CoreError::invalid(
            what,
            format!("'{whole}' contains {c:?}; tokens may not contain spaces or control characters"),
        ));
    }
    Ok(())
}

fn check_len(what: &'static str, text: &str, max_len: usize) -> Result<(), CoreError> {
    if text.is_empty() {
        return Err(CoreError::invalid(what, "must not be empty"));
    }
    if text.len() > max_len {
        return Err(CoreError::invalid(what, format!("is {} bytes; the limit is {max_len}", text.len())));
    }
    Ok(())
}

/// Checks a topic a message is published on: non-empty, at most `max_len` bytes, no wildcards.
pub fn validate_topic(topic: &str, max_len: usize) -> Result<(), CoreError> {
    check_len("topic", topic, max_len)?;
    for token in topic.split('.') {
        check_token("topic", topic, token)?;
        if token.contains(['*', '>']) {
            return Err(CoreError::invalid(
                "topic",
                format!(
                    "'{topic}' contains a wildcard; wildcards belong in interest patterns, not in published topics"
                ),
            ));
        }
    }
    Ok(())
}

impl Pattern {
    /// Parses and validates a pattern.
    pub fn parse(text: &str, max_len: usize) -> Result<Pattern, CoreError> {
        check_len("interest pattern", text, max_len)?;
        if text == "all" {
            return Ok(Pattern { text: text.to_owned(), tokens: vec![PatternToken::Rest] });
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            check_token("interest pattern", text, part)?;
            let token = match *part {
                "*" => PatternToken::One,
                ">" if i + 1 == parts.len() => PatternToken::Rest,
                ">" => {
                    return Err(CoreError::invalid(
                        "interest pattern",
                        format!("'{text}': `>` may only be the last token"),
                    ));
                }
                p if p.contains(['*', '>']) => {
                    return Err(CoreError::invalid(
                        "interest pattern",
                        format!("'{text}': wildcards must be whole tokens (`a.*.c`, `a.>`), not part of one ('{p}')"),
                    ));
                }
                p => PatternToken::Literal(p.to_owned()),
            };
            tokens.push(token);
        }
        Ok(Pattern { text: text.to_owned(), tokens })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` (a valid topic) matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for token in &self.tokens {
            match token {
                PatternToken::Rest => return parts.next().is_some(),
                PatternToken::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                PatternToken::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// Whether every topic `other` matches is also matched by this pattern (so that a permission
    /// to subscribe to `self` admits a subscription to `other`). Token by token: `>` covers
    /// whatever remains (one token or more), `*` covers one token of any kind but `>`, a literal
    /// only the same literal.
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.tokens.iter();
        for token in &self.tokens {
            let Some(their) = theirs.next() else { return false };
            match (token, their) {
                (PatternToken::Rest, _) => return true,
                (PatternToken::One, PatternToken::Rest) => return false,
                (PatternToken::One, _) => {}
                (PatternToken::Literal(a), PatternToken::Literal(b)) if a == b => {}
                (PatternToken::Literal(_), _) => return false,
            }
        }
        theirs.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s, 256).unwrap()
    }

    #[test]
    fn a_pattern_covers_the_patterns_whose_topics_it_matches() {
        assert!(p(">").covers(&p("a.b")));
        assert!(p("all").covers(&p("a.>")));
        assert!(p("a.>").covers(&p("a.b.>")));
        assert!(p("a.>").covers(&p("a.*")));
        assert!(!p("a.>").covers(&p(">")));
        assert!(!p("a.>").covers(&p("a")));
        assert!(p("a.*").covers(&p("a.b")));
        assert!(p("a.*").covers(&p("a.*")));
        assert!(!p("a.*").covers(&p("a.>")));
        assert!(!p("a.*").covers(&p("a.b.c")));
        assert!(p("a.b").covers(&p("a.b")));
        assert!(!p("a.b").covers(&p("a.*")));
        assert!(!p("a.b.c").covers(&p("a.b")));
    }

    #[test]
    fn literal_patterns_match_exactly() {
        assert!(p("market.btc").matches("market.btc"));
        assert!(!p("market.btc").matches("market.eth"));
        assert!(!p("market.btc").matches("market.btc.trades"));
        assert!(!p("market.btc").matches("market"));
    }

    #[test]
    fn star_matches_one_token() {
        assert!(p("market.*.trades").matches("market.btc.trades"));
        assert!(!p("market.*.trades").matches("market.trades"));
        assert!(!p("market.*").matches("market.btc.trades"));
        assert!(p("*").matches("anything"));
        assert!(!p("*").matches("two.tokens"));
    }

    #[test]
    fn rest_matches_one_or_more_tokens() {
        assert!(p("market.>").matches("market.btc"));
        assert!(p("market.>").matches("market.btc.trades"));
        assert!(!p("market.>").matches("market"));
        assert!(p(">").matches("x"));
        assert!(p("all").matches("risk.metrics"));
    }

    #[test]
    fn invalid_patterns_are_refused_with_reasons() {
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a.b*", "a b", "x>"] {
            assert!(Pattern::parse(bad, 256).is_err(), "{bad:?} should be refused");
        }
        assert!(Pattern::parse(&"a".repeat(300), 256).is_err());
    }

    #[test]
    fn topics_are_validated() {
        validate_topic("market.btc.trades", 256).unwrap();
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(validate_topic(bad, 256).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_topic(&"a".repeat(257), 256).is_err());
    }
}
