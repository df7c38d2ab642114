//! How values are written to columns and read back, the same in every backend: enums by
//! their serde spelling, JSON as text, paging positions as the databases' `i64`.

use crate::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Ids are never above `i64::MAX`: any larger `after` is past the end.
pub(crate) fn page_start(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

pub(crate) fn page_size(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// An enum's serde spelling, which is also how it is stored.
pub(crate) fn text<T: Serialize>(value: T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(StoreError::Database(format!(
            "cannot store {other:?} as a column value"
        ))),
    }
}

/// An enum from its stored serde spelling.
pub(crate) fn parse<T: DeserializeOwned>(
    s: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| {
        StoreError::Corrupt {
            what: format!("{}: {e}", what()),
        }
    })
}

pub(crate) fn parse_json(
    s: &str,
    what: impl FnOnce() -> String,
) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what: format!("{} is not JSON: {e}", what()),
    })
}
