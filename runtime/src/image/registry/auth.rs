//! Bearer tokens: the token request URL, the token server's answer, and a cache per registry and scope
//! that forgets a token shortly before the server said it expires.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The lifetime the distribution spec assumes when a token server does not say.
const DEFAULT_EXPIRES_IN: u64 = 60;

/// How an endpoint wants to be authenticated, learnt from its last challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Scheme {
    #[default]
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A bearer token and when to stop using it. `Debug` never shows the token.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub use_until: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("use_until", &self.use_until)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token in a token server's JSON answer (`token` or `access_token`), to be used until a little before
/// `expires_in` (default 60 s) runs out, counted from `received`.
pub(crate) fn parse_token_answer(body: &[u8], received: Instant) -> Result<Token, String> {
    let answer: TokenAnswer = serde_json::from_slice(body)
        .map_err(|_| "its answer is not the JSON a token server sends".to_string())?;
    let value = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or("its answer holds neither \"token\" nor \"access_token\"")?;
    let lifetime = Duration::from_secs(
        answer
            .expires_in
            .filter(|&s| s > 0)
            .unwrap_or(DEFAULT_EXPIRES_IN),
    );
    // Stop a little early so a request does not start with a token about to lapse; the 401 path renews
    // whatever slips through.
    let margin = (lifetime / 10).min(Duration::from_secs(10));
    Ok(Token {
        value,
        use_until: received + lifetime - margin,
    })
}

/// `realm?service=...&scope=...&scope=...`, keeping any query the realm already has.
pub(crate) fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut params = Vec::new();
    if let Some(s) = service {
        params.push(format!("service={}", encode(s)));
    }
    for scope in scopes {
        params.push(format!("scope={}", encode(scope)));
    }
    if params.is_empty() {
        return realm.to_string();
    }
    let sep = if realm.contains('?') { '&' } else { '?' };
    format!("{realm}{sep}{}", params.join("&"))
}

/// Percent-encoding for a query value: everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The pull scope for a repository, as token servers expect it.
pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    realm: String,
    service: Option<String>,
    scope: String,
}

/// Tokens shared by all threads of a client, per token server, service and scope.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<Key, Token>>,
}

impl TokenCache {
    pub fn get(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        now: Instant,
    ) -> Option<String> {
        let key = Key {
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scope: scope.to_string(),
        };
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&key)
            .filter(|t| t.use_until > now)
            .map(|t| t.value.clone())
    }

    pub fn put(&self, realm: &str, service: Option<&str>, scope: &str, token: Token) {
        let key = Key {
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scope: scope.to_string(),
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(key, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_or_access_token_and_expiry() {
        let now = Instant::now();
        let t = parse_token_answer(
            br#"{"token":"abc","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.use_until, now + Duration::from_secs(290));
        let t = parse_token_answer(br#"{"access_token":"xyz"}"#, now).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.use_until, now + Duration::from_secs(54));
        let t = parse_token_answer(br#"{"token":"","access_token":"acc","expires_in":2}"#, now)
            .unwrap();
        assert_eq!(t.value, "acc");
        assert_eq!(t.use_until, now + Duration::from_millis(1800));
        assert!(parse_token_answer(br#"{"expires_in":5}"#, now).is_err());
        let e = parse_token_answer(b"<html>secret-ish</html>", now).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(!format!("{t:?}").contains("acc"));
    }

    #[test]
    fn token_urls_encode_scopes_and_keep_queries() {
        let scopes = vec!["repository:org/img:pull".to_string()];
        assert_eq!(
            token_url("https://auth.example/token", Some("reg example"), &scopes),
            "https://auth.example/token?service=reg%20example&scope=repository%3Aorg%2Fimg%3Apull"
        );
        assert_eq!(
            token_url("https://a/t?x=1", None, &["a".into(), "b".into()]),
            "https://a/t?x=1&scope=a&scope=b"
        );
        assert_eq!(token_url("https://a/t", None, &[]), "https://a/t");
        assert_eq!(
            pull_scope("library/ubuntu"),
            "repository:library/ubuntu:pull"
        );
    }

    #[test]
    fn cache_is_per_scope_and_forgets_expired_tokens() {
        let cache = TokenCache::default();
        let now = Instant::now();
        let token = |v: &str, secs| Token {
            value: v.to_string(),
            use_until: now + Duration::from_secs(secs),
        };
        cache.put("r", Some("s"), "repository:a:pull", token("ta", 10));
        cache.put("r", Some("s"), "repository:b:pull", token("tb", 0));
        assert_eq!(
            cache
                .get("r", Some("s"), "repository:a:pull", now)
                .as_deref(),
            Some("ta")
        );
        assert_eq!(cache.get("r", Some("s"), "repository:b:pull", now), None);
        assert_eq!(cache.get("r", None, "repository:a:pull", now), None);
        assert_eq!(
            cache.get(
                "r",
                Some("s"),
                "repository:a:pull",
                now + Duration::from_secs(11)
            ),
            None
        );
        assert!(!format!("{cache:?}").contains("ta\""));
    }
}
