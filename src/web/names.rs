//! The strings the API takes under a rule (a category name, a user or source name, a
//! token scope, a target…) as types that carry it: [`Checked<R>`] parses once at the
//! boundary, path, query, JSON or form alike, refuses what breaks the rule with the
//! rule's own message, and states the rule in the OpenAPI document as `pattern`,
//! `minLength` and `maxLength`, so generated clients and schemathesis see exactly
//! what the server enforces.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromMultipartField, ParseFromParameter, ParseResult, ToJSON,
    Type,
};
use serde_json::Value;

/// A rule a string must follow.
pub trait Rule: Send + Sync + 'static {
    /// The rule as an ECMA-262 regular expression (anchored), if it has one.
    const PATTERN: Option<&'static str> = None;
    /// Fewest characters.
    const MIN_LENGTH: usize = 1;
    /// Most characters.
    const MAX_LENGTH: usize;
    /// Why `s` breaks the rule, in words a user can act on; None when it follows it.
    fn check(s: &str) -> Option<String>;
}

/// A string that follows the rule `R`.
pub struct Checked<R: Rule>(String, PhantomData<R>);

impl<R: Rule> Checked<R> {
    /// `s` if it follows the rule, else why not.
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        match R::check(&s) {
            None => Ok(Checked(s, PhantomData)),
            Some(why) => Err(why),
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The string, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<R: Rule> std::ops::Deref for Checked<R> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<R: Rule> AsRef<str> for Checked<R> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<R: Rule> Clone for Checked<R> {
    fn clone(&self) -> Self {
        Checked(self.0.clone(), PhantomData)
    }
}

impl<R: Rule> std::fmt::Debug for Checked<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<R: Rule> std::fmt::Display for Checked<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<R: Rule> PartialEq<String> for Checked<R> {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl<R: Rule> PartialEq<str> for Checked<R> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// Bound to a query as the text it is.
impl<R: Rule> sqlx::Type<sqlx::Postgres> for Checked<R> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<R: Rule> sqlx::postgres::PgHasArrayType for Checked<R> {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

impl<'q, R: Rule> sqlx::Encode<'q, sqlx::Postgres> for Checked<R> {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.0.as_str(), buf)
    }
}

impl<R: Rule> Type for Checked<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut s = MetaSchema::new("string");
        s.pattern = R::PATTERN.map(str::to_string);
        s.min_length = (R::MIN_LENGTH > 0).then_some(R::MIN_LENGTH);
        s.max_length = Some(R::MAX_LENGTH);
        MetaSchemaRef::Inline(Box::new(s))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<R: Rule> ParseFromJSON for Checked<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Checked::new(s).map_err(ParseError::custom),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl<R: Rule> ParseFromParameter for Checked<R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Checked::new(value).map_err(ParseError::custom)
    }
}

impl<R: Rule> ParseFromMultipartField for Checked<R> {
    async fn parse_from_multipart(field: Option<poem::web::Field>) -> ParseResult<Self> {
        let text = String::parse_from_multipart(field)
            .await
            .map_err(ParseError::propagate)?;
        Checked::new(text).map_err(ParseError::custom)
    }
}

impl<R: Rule> ToJSON for Checked<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

fn length<R: Rule>(what: &str, s: &str) -> Option<String> {
    let n = s.chars().count();
    (n < R::MIN_LENGTH || n > R::MAX_LENGTH).then(|| {
        format!(
            "{what} must be {}..{} characters (it has {n})",
            R::MIN_LENGTH,
            R::MAX_LENGTH
        )
    })
}

/// Category names (and field names): a lowercase letter, then lowercase letters,
/// digits or `_`, at most 48: they become SQL identifiers.
pub struct CategoryRule;
impl Rule for CategoryRule {
    const PATTERN: Option<&'static str> = Some("^[a-z][a-z0-9_]*$");
    const MAX_LENGTH: usize = 48;
    fn check(s: &str) -> Option<String> {
        (!crate::model::schema::valid_identifier(s)).then(|| {
            format!(
                "category name `{s}` must be a lowercase letter then lowercase letters, digits or _ (at most 48)"
            )
        })
    }
}
/// A category name.
pub type CategoryName = Checked<CategoryRule>;

/// User and source names (and the `{key}` of a source or alert rule: a name or an
/// id): 1..63 lowercase letters, digits, `_`, `.`, `-`, starting with a letter or
/// digit (as the tables' CHECK constraints).
pub struct NameRule;
impl Rule for NameRule {
    const PATTERN: Option<&'static str> = Some("^[a-z0-9][a-z0-9_.-]*$");
    const MAX_LENGTH: usize = 63;
    fn check(s: &str) -> Option<String> {
        (!crate::model::schema::valid_name(s)).then(|| {
            format!(
                "`{s}` is not a valid name: 1..63 lowercase letters, digits, `_`, `.`, `-`, starting with a letter or digit"
            )
        })
    }
}
/// A user or source name, or the key (name or id) of a source or alert rule.
pub type Name = Checked<NameRule>;

/// Token scopes: `admin`, `read:CATEGORY`, `write:CATEGORY` (`*` for every category).
pub struct ScopeRule;
impl Rule for ScopeRule {
    const PATTERN: Option<&'static str> = Some("^(admin|(read|write):(\\*|[a-z][a-z0-9_]{0,47}))$");
    const MAX_LENGTH: usize = 54;
    fn check(s: &str) -> Option<String> {
        crate::model::access::Scope::parse(s).err()
    }
}
/// A token scope.
pub type ScopeName = Checked<ScopeRule>;

/// Free text with a length limit (token and alert rule names): 1..100 characters.
pub struct LabelRule;
impl Rule for LabelRule {
    const MAX_LENGTH: usize = 100;
    fn check(s: &str) -> Option<String> {
        length::<Self>("the name", s)
    }
}
/// A token or alert rule name.
pub type Label = Checked<LabelRule>;

/// A record's target: 1..200 characters.
pub struct TargetRule;
impl Rule for TargetRule {
    const MAX_LENGTH: usize = 200;
    fn check(s: &str) -> Option<String> {
        length::<Self>("target", s)
    }
}
/// A record's target.
pub type Target = Checked<TargetRule>;

/// New passwords: at least 10 characters (at most 1024, so hashing stays cheap).
pub struct PasswordRule;
impl Rule for PasswordRule {
    const MIN_LENGTH: usize = 10;
    const MAX_LENGTH: usize = 1024;
    fn check(s: &str) -> Option<String> {
        length::<Self>("the password", s)
    }
}
/// A new password.
pub type Password = Checked<PasswordRule>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's pattern and length state what `check` enforces, for a sample of
    /// strings near every edge of each rule.
    fn agrees<R: Rule>(samples: &[&str]) {
        let re = R::PATTERN.map(|p| regex::Regex::new(p).unwrap());
        for s in samples {
            let n = s.chars().count();
            let by_schema = re.as_ref().is_none_or(|r| r.is_match(s))
                && n >= R::MIN_LENGTH
                && n <= R::MAX_LENGTH;
            assert_eq!(
                by_schema,
                R::check(s).is_none(),
                "rule and schema disagree on {s:?}"
            );
        }
    }

    #[test]
    fn the_schema_states_each_rule_exactly() {
        let long48 = "a".repeat(48);
        let long49 = "a".repeat(49);
        let common = [
            "", "a", "A", "1a", "a1", "a_b", "a-b", "a.b", "_a", "é", "a b", "a\n",
        ];
        let mut cat: Vec<&str> = common.to_vec();
        cat.extend([long48.as_str(), long49.as_str()]);
        agrees::<CategoryRule>(&cat);
        let long63 = "a".repeat(63);
        let long64 = "a".repeat(64);
        let mut names: Vec<&str> = common.to_vec();
        names.extend([
            long63.as_str(),
            long64.as_str(),
            "0d6a9a2e-0f2b-4c4b-9a55-1f3e3c9b2f10",
        ]);
        agrees::<NameRule>(&names);
        agrees::<ScopeRule>(&[
            "admin",
            "read:*",
            "write:x_1",
            "read:",
            "read:X",
            "admin:x",
            "write:1",
            "delete:x",
        ]);
        let l100 = "é".repeat(100);
        let l101 = "é".repeat(101);
        agrees::<LabelRule>(&["", "x", &l100, &l101]);
        agrees::<PasswordRule>(&["", "123456789", "1234567890", "ééééééééééé"]);
        assert_eq!(
            CategoryName::new("Bad").unwrap_err(),
            "category name `Bad` must be a lowercase letter then lowercase letters, digits or _ (at most 48)"
        );
    }
}
