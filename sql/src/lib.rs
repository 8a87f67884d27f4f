//! # sluice-sql
//!
//! Sluice's SQL surface over DataFusion's: `CREATE SOURCE ... WITH`,
//! `CREATE SINK ... WITH (...) AS SELECT`, `DROP SINK`, `SHOW QUERIES`
//! (see SQL.md). The parser wraps DataFusion's `DFParser`; every other
//! statement is DataFusion's own.
#![warn(missing_docs)]

pub mod error;
pub mod execute;
pub mod parser;
pub mod windows;

pub use error::{Result, SqlError};
pub use execute::{execute_sql, execute_statement, StatementResult};
pub use parser::{parse_sql, SluiceStatement};
