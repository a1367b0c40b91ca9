//! Whose identity a job runs with: a workflow's `user:` and `run docker -u/--user` (Docker's
//! `NAME|UID[:GROUP|GID]`), or `user: host` / `--userns keep-id` (podman's word): the invoking user's own
//! ids, so that what the job writes into a host directory is the user's. The plan resolves the choice.

/// The job's user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UserChoice {
    /// The image's `USER` (root when it names none).
    #[default]
    Image,
    /// `NAME|UID[:GROUP|GID]`, names looked up in the image's `/etc/passwd` and `/etc/group`.
    Named(String),
    /// The invoking user's uid, gid and supplementary groups, mapped to themselves.
    Host,
}

/// The word that asks for the invoking user (a user of the image called `host` is given by its uid).
pub const HOST_USER: &str = "host";

impl UserChoice {
    /// A `user:` value: `host`, or Docker's `NAME|UID[:GROUP|GID]`. Errors say what to write.
    pub fn parse(text: &str) -> Result<UserChoice, String> {
        if text == HOST_USER {
            return Ok(UserChoice::Host);
        }
        UserChoice::parse_named(text)
    }

    /// Docker's `--user` value, `NAME|UID[:GROUP|GID]` (`host` there is a name).
    pub fn parse_named(text: &str) -> Result<UserChoice, String> {
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        let well_formed = |part: &str| {
            !part.is_empty()
                && !part
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        };
        if !well_formed(user) || group.is_some_and(|g| !well_formed(g)) {
            return Err(format!(
                "is {}: give `NAME`, `UID`, `NAME:GROUP` or `UID:GID` (Docker's `--user`), or `host` for your own ids",
                runtime::text::quote(text)
            ));
        }
        Ok(UserChoice::Named(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_forms_and_host_are_accepted() {
        assert_eq!(UserChoice::parse("host"), Ok(UserChoice::Host));
        assert_eq!(
            UserChoice::parse_named("host"),
            Ok(UserChoice::Named("host".into()))
        );
        for text in ["app", "1234", "1234:1234", "app:staff"] {
            assert_eq!(UserChoice::parse(text), Ok(UserChoice::Named(text.into())));
        }
    }

    #[test]
    fn malformed_users_are_refused() {
        for text in ["", ":", "app:", ":12", "a b", "1:2:3"] {
            assert!(UserChoice::parse(text).is_err(), "{text:?}");
        }
    }
}
