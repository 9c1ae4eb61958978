//! Secrets kept out of logs and errors.

/// `url` with its password (and user) hidden, for logs and errors.
pub fn redact_url(url: &str) -> String {
    // A query may carry the password too (`unix:///run/redis.sock?pass=...`): it is hidden whole.
    let (url, query) = match url.split_once('?') {
        Some((url, _)) => (url, "?***"),
        None => (url, ""),
    };
    let url = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        // Not even a scheme: whatever follows an `@` is the host, whatever precedes it may be a
        // password.
        None => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    };
    url + query
}
