//! Category schemas: field types, constraints, validation of records, and the strict
//! identifier rule every name that reaches SQL text must pass.

/// Whether `s` may be used as a category or field name (and so, quoted, in SQL):
/// a lowercase letter, then lowercase letters, digits or `_`, at most 48 characters.
pub fn valid_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_')
        && s.len() <= 48
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_strict() {
        for ok in ["weather", "temp_c", "a1"] {
            assert!(super::valid_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Temp",
            "a-b",
            "a b",
            "x\"; drop table users; --",
            "é",
            &"a".repeat(49),
        ] {
            assert!(!super::valid_identifier(bad), "{bad}");
        }
    }
}
