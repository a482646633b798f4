//! The database error of either storage backend (shared by [`crate::db`] and [`crate::pg`]).

use std::fmt;

/// A database error of either backend, or a value this version cannot read.
#[derive(Debug)]
pub enum Error {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sqlite(e) => write!(f, "{e}"),
            Error::Postgres(e) => match e.as_db_error() {
                // Connection exceptions (08) and the server shutting down or restarting (57P).
                Some(db) if e.code().is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P")) => {
                    write!(f, "the database is unreachable (PostgreSQL: {})", db.message())
                }
                Some(db) => write!(f, "PostgreSQL: {}", db.message()),
                // The cause says why (refused, timed out, TLS required by the server, ...).
                None => match std::error::Error::source(e) {
                    Some(cause) => write!(f, "the database is unreachable ({e}: {cause})"),
                    None => write!(f, "the database is unreachable ({e})"),
                },
            },
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Sqlite(e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

