//! What went wrong with the line database, and what the caller does next: degrade and retry
//! later (the database is away or slow), or stop and fix the configuration.

/// What a caller does about a [`LineError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database is away, slow or busy: the tap uses what the station knows, the
    /// replicator retries later with backoff. Nothing is wrong with this station.
    Degrade,
    /// Retrying cannot help until someone changes something: the URL, the password, the
    /// certificate, the passenger key, the schema or the database role's rights.
    Fatal,
}

/// An error of the line store. Never holds a password, a passenger key or a URL with secrets.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The database did not answer within the budget.
    #[error("line database did not answer {what} within {after_ms} ms")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// The budget.
        after_ms: u64,
    },
    /// The database cannot be reached or is shutting down, restarting or overloaded.
    #[error("line database unavailable ({what}): {detail}")]
    Unavailable {
        /// The operation.
        what: &'static str,
        /// What the driver said.
        detail: String,
    },
    /// The settings are wrong (URL, password file, CA file, TLS).
    #[error("line database configuration: {0}")]
    Config(String),
    /// The server refused the credentials or the role lacks a right it needs.
    #[error("line database refused this station: {0}")]
    Auth(String),
    /// This gate's passenger key is not the line's.
    #[error(
        "this gate's passenger key (fingerprint {ours}) is not the line's (fingerprint {line}, \
         registered by station {registered_by}): every gate of a line must hash PANs with the \
         same key; install the line's key file on this gate (see the key rollout in \
         docs/operations.md)"
    )]
    KeyMismatch {
        /// Short form of the line's fingerprint.
        line: String,
        /// Short form of this gate's fingerprint.
        ours: String,
        /// The station that registered the line's key.
        registered_by: String,
    },
    /// The database's schema is newer than this build knows.
    #[error(
        "line database schema is version {found}, this tapgate knows up to {supported}: \
         upgrade tapgate on this gate"
    )]
    NewerSchema {
        /// Version found.
        found: i32,
        /// Newest version this build knows.
        supported: i32,
    },
    /// The schema is older than this build needs and this role may not migrate it.
    #[error(
        "line database schema is version {found}, this tapgate needs {needed}: run `tapgate \
         journeys migrate` with a role that owns the schema ({detail})"
    )]
    NotMigrated {
        /// Version found.
        found: i32,
        /// Version needed.
        needed: i32,
        /// Why migrating failed.
        detail: String,
    },
    /// The caller passed something the store cannot hold (empty id, a fare too large).
    #[error("line event refused: {0}")]
    Invalid(String),
    /// Any other database error: a bug or a schema changed by hand.
    #[error("line database error ({what}): {detail}")]
    Database {
        /// The operation.
        what: &'static str,
        /// SQLSTATE and message.
        detail: String,
    },
}

impl LineError {
    /// What the caller does next.
    pub fn class(&self) -> ErrorClass {
        match self {
            LineError::Timeout { .. } | LineError::Unavailable { .. } => ErrorClass::Degrade,
            LineError::Config(_)
            | LineError::Auth(_)
            | LineError::KeyMismatch { .. }
            | LineError::NewerSchema { .. }
            | LineError::NotMigrated { .. }
            | LineError::Invalid(_)
            | LineError::Database { .. } => ErrorClass::Fatal,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Degrade
    }

    /// Classifies a driver error met while doing `what`.
    pub fn from_pg(what: &'static str, e: &tokio_postgres::Error) -> LineError {
        if let Some(db) = e.as_db_error() {
            let detail = format!("{} {}", db.code().code(), db.message());
            return match sqlstate_class(db.code().code()) {
                SqlClass::Retry => LineError::Unavailable { what, detail },
                SqlClass::Auth => LineError::Auth(detail),
                SqlClass::Config => LineError::Config(detail),
                SqlClass::Other => LineError::Database { what, detail },
            };
        }
        if let Some(tls) = find_tls_error(e) {
            return LineError::Config(format!(
                "TLS to the line database failed: {tls} (is ca_file the CA that issued the \
                 server's certificate, and does the certificate name the host in the url?)"
            ));
        }
        let detail = e.to_string();
        // The driver's own configuration errors, e.g. the server asked for a password and
        // none was configured.
        if detail.starts_with("invalid configuration") {
            return LineError::Config(detail);
        }
        // Everything else without a server error is the connection: refused, reset, closed,
        // a connect timeout.
        LineError::Unavailable { what, detail }
    }

    /// Classifies a pool error met while doing `what`.
    pub fn from_pool(what: &'static str, e: deadpool_postgres::PoolError) -> LineError {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(pg) => LineError::from_pg(what, &pg),
            PoolError::Timeout(_) => LineError::Unavailable {
                what,
                detail: "no connection to the line database became available in time".into(),
            },
            other => LineError::Database {
                what,
                detail: other.to_string(),
            },
        }
    }
}

/// What an SQLSTATE means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlClass {
    /// Try again later: connection trouble, shutdown, overload, a serialization conflict, a
    /// read-only standby after a failover.
    Retry,
    /// Credentials or rights.
    Auth,
    /// Wrong database name.
    Config,
    /// A bug or a schema changed by hand.
    Other,
}

/// Classifies an SQLSTATE (PostgreSQL's appendix A).
pub fn sqlstate_class(code: &str) -> SqlClass {
    match code {
        // admin_shutdown, crash_shutdown, cannot_connect_now: a restart or failover.
        "57P01" | "57P02" | "57P03" => SqlClass::Retry,
        // query_canceled (statement_timeout), serialization_failure, deadlock_detected.
        "57014" | "40001" | "40P01" => SqlClass::Retry,
        // read_only_sql_transaction: connected to a standby, the primary moved.
        "25006" => SqlClass::Retry,
        "42501" => SqlClass::Auth,
        "3D000" => SqlClass::Config,
        _ if code.starts_with("08") || code.starts_with("53") => SqlClass::Retry,
        _ if code.starts_with("28") => SqlClass::Auth,
        _ => SqlClass::Other,
    }
}

/// A rustls error anywhere in the error's chain (tokio-rustls wraps it in an io::Error, whose
/// `source` skips it, so each io::Error is opened by hand).
fn find_tls_error(e: &tokio_postgres::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(t.to_string());
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_what_to_do_next() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "25006", "57014",
        ] {
            assert_eq!(sqlstate_class(code), SqlClass::Retry, "{code}");
        }
        for code in ["28P01", "28000", "42501"] {
            assert_eq!(sqlstate_class(code), SqlClass::Auth, "{code}");
        }
        assert_eq!(sqlstate_class("3D000"), SqlClass::Config);
        for code in ["42P01", "23505", "22003"] {
            assert_eq!(sqlstate_class(code), SqlClass::Other, "{code}");
        }
    }

    #[test]
    fn timeouts_and_unavailability_degrade_everything_else_is_fatal() {
        let t = LineError::Timeout {
            what: "find_open",
            after_ms: 50,
        };
        assert_eq!(t.class(), ErrorClass::Degrade);
        assert!(t.is_retryable());
        let u = LineError::Unavailable {
            what: "find_open",
            detail: "refused".into(),
        };
        assert_eq!(u.class(), ErrorClass::Degrade);
        for e in [
            LineError::Config("x".into()),
            LineError::Auth("x".into()),
            LineError::KeyMismatch {
                line: "a".into(),
                ours: "b".into(),
                registered_by: "BLM".into(),
            },
            LineError::NewerSchema {
                found: 9,
                supported: 1,
            },
        ] {
            assert_eq!(e.class(), ErrorClass::Fatal, "{e}");
        }
    }
}
