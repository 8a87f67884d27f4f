//! The line editor of the interactive shell: completion of keywords and of
//! source, sink and table names, and multi-line statements (a statement
//! ends with `;`; a `\` command with the line).

use std::borrow::Cow;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};
use sluice::SluiceSession;

/// SQL keywords offered for completion (Sluice's statements and DataFusion's).
const KEYWORDS: &[&str] = &[
    "ALL",
    "ANALYZE",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "CREATE",
    "CROSS",
    "DESC",
    "DISTINCT",
    "DROP",
    "ELSE",
    "END",
    "EXISTS",
    "EXPLAIN",
    "EXTERNAL",
    "FALSE",
    "FOR",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "HOP",
    "IF",
    "IN",
    "INNER",
    "INSERT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCATION",
    "NOT",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PARTITION",
    "QUERIES",
    "RIGHT",
    "SELECT",
    "SESSION",
    "SHOW",
    "SINK",
    "SOURCE",
    "STORED",
    "TABLE",
    "THEN",
    "TIMESTAMP",
    "TRUE",
    "TUMBLE",
    "UNION",
    "VALUES",
    "VIEW",
    "WATERMARK",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// Completion and multi-line input for the shell.
pub struct ShellHelper {
    session: SluiceSession,
}

impl ShellHelper {
    /// A helper completing the names `session` knows.
    pub fn new(session: SluiceSession) -> Self {
        Self { session }
    }

    /// Sources, sinks (queries) and tables, by name.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.session.sources().into_iter().map(|s| s.name).collect();
        names.extend(self.session.queries().iter().map(|q| q.name().to_string()));
        names.extend(table_names(&self.session));
        names.push("sluice_state".into());
        names.sort();
        names.dedup();
        names
    }
}

/// The tables of the session's default schema.
pub fn table_names(session: &SluiceSession) -> Vec<String> {
    let ctx = session.context();
    let state = ctx.state();
    let defaults = &state.config_options().catalog;
    ctx.catalog(&defaults.default_catalog)
        .and_then(|c| c.schema(&defaults.default_schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, vec![]));
        }
        let lower = word.to_ascii_lowercase();
        // Keywords in the case the user types them.
        let upper = word.chars().next().is_some_and(char::is_uppercase);
        let mut out: Vec<Pair> = KEYWORDS
            .iter()
            .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
            .map(|k| {
                let k = if upper { k.to_string() } else { k.to_ascii_lowercase() };
                Pair { display: k.clone(), replacement: k }
            })
            .collect();
        out.extend(
            self.names()
                .into_iter()
                .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
                .map(|n| Pair { display: n.clone(), replacement: n }),
        );
        Ok((start, out))
    }
}

/// Whether `input` is a whole statement (or a `\` command).
pub fn is_complete(input: &str) -> bool {
    let t = input.trim();
    t.is_empty() || t.starts_with('\\') || t.ends_with(';')
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if is_complete(ctx.input()) { ValidationResult::Valid(None) } else { ValidationResult::Incomplete })
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Helper for ShellHelper {}
