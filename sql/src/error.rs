//! Errors of the SQL layer.

use sluice_engine::SluiceError;

/// Result alias.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// An error from parsing or running a statement.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Syntax error.
    #[error("SQL syntax error: {0}")]
    Parse(String),
    /// An engine error.
    #[error("{0}")]
    Engine(#[from] SluiceError),
    /// A DataFusion error.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// DataFusion's planning errors in the words of the user's SQL: an unknown
/// table lists the known ones (and the closest), Arrow type names become
/// SQL ones, and each says what to do. Anything else is passed on as is.
pub fn explain_datafusion_error(e: datafusion::error::DataFusionError, known_tables: &[String]) -> SqlError {
    use datafusion::error::DataFusionError;
    let root = e.find_root();
    if let DataFusionError::SQL(parse, _) = root {
        return SqlError::Parse(parse.to_string());
    }
    let text = root.strip_backtrace();
    if let Some(name) = not_found_table(&text) {
        let known = if known_tables.is_empty() { "(none)".to_string() } else { known_tables.join(", ") };
        let hint = closest(&name, known_tables).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
        return SqlError::Engine(SluiceError::plan(format!(
            "no source or table named '{name}'{hint}; known: {known}. Declare it with CREATE SOURCE or CREATE TABLE"
        )));
    }
    if let DataFusionError::NotImplemented(msg) = root {
        if let Some(t) = msg.strip_prefix("Unsupported SQL type ") {
            return SqlError::Engine(SluiceError::plan(format!(
                "unsupported column type {t}; use one of BOOLEAN, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), VARCHAR, \
                 DATE, TIMESTAMP"
            )));
        }
    }
    if text.contains("Cannot coerce") || text.contains("Cannot infer common") || text.contains("Cast error") {
        return SqlError::Engine(SluiceError::plan(format!(
            "type mismatch: {}; CAST one side to the other's type (e.g. CAST(x AS BIGINT))",
            sql_type_names(text.trim_start_matches("Error during planning: "))
        )));
    }
    SqlError::DataFusion(e)
}

/// The table name of DataFusion's "table 'catalog.schema.name' not found".
fn not_found_table(text: &str) -> Option<String> {
    let start = text.find("table '")? + "table '".len();
    let rest = &text[start..];
    let end = rest.find("' not found")?;
    Some(rest[..end].rsplit('.').next().unwrap_or(&rest[..end]).to_string())
}

/// The known name closest to `name` by edit distance, if close enough.
fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Arrow type names in a message, as SQL names.
fn sql_type_names(text: &str) -> String {
    [
        ("Utf8View", "VARCHAR"),
        ("LargeUtf8", "VARCHAR"),
        ("Utf8", "VARCHAR"),
        ("Int64", "BIGINT"),
        ("Int32", "INT"),
        ("Int16", "SMALLINT"),
        ("Int8", "TINYINT"),
        ("Float64", "DOUBLE"),
        ("Float32", "FLOAT"),
        ("Boolean", "BOOLEAN"),
        ("Date32", "DATE"),
    ]
    .iter()
    .fold(text.to_string(), |t, (arrow, sql)| t.replace(arrow, sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_table_suggests_the_closest() {
        let e = datafusion::error::DataFusionError::Plan("table 'datafusion.public.ordrs' not found".into());
        let msg = explain_datafusion_error(e, &["orders".into(), "items".into()]).to_string();
        assert!(msg.contains("'ordrs'") && msg.contains("did you mean 'orders'") && msg.contains("items"), "{msg}");
    }
}
