//! Database URLs as they may appear in logs and errors: with the password
//! replaced by `***`.

/// Removes the password from a libpq URL (`postgres://u:pw@h/db` ->
/// `postgres://u:***@h/db`) and any `password=` query parameter, for logs
/// and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let patched = crate::source::conninfo::with_placeholder_host(url);
    let placeholder = matches!(patched, std::borrow::Cow::Owned(_));
    match url::Url::parse(&patched) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            let s = u.to_string();
            if placeholder {
                s.replacen("@localhost", "@", 1)
            } else {
                s
            }
        }
        Err(_) => "<unparseable database URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords_of_unix_socket_urls() {
        assert_eq!(
            redact_url("postgres://app:hunter2@/db?host=/cloudsql/p:r:i"),
            "postgres://app:***@/db?host=%2Fcloudsql%2Fp%3Ar%3Ai"
        );
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert!(!redact_url("postgres://u@h/db?password=pw").contains("pw&"));
        assert!(!redact_url("postgres://u@h/db?password=pw").contains("=pw"));
    }
}
