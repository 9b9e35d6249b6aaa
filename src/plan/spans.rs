//! FILE:LINE errors for the TOML files plans are read from (fault plans, topologies): the error
//! type, and the helper that turns a value's byte span into its line and parses spanned values.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::size::parse_size;

/// A problem in a file: `FILE:LINE: problem; fix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanFileError {
    pub file: PathBuf,
    pub line: usize,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for PlanFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ": {}; {}", self.problem, self.fix)
    }
}

/// A file's text, to place spans on lines.
pub(crate) struct Lines<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Lines<'_> {
    pub fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    pub fn err(&self, span: Range<usize>, problem: impl Into<String>, fix: &str) -> PlanFileError {
        PlanFileError {
            file: self.file.to_path_buf(),
            line: self.line_of(span),
            problem: problem.into(),
            fix: fix.to_string(),
        }
    }

    pub fn duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration, PlanFileError> {
        humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.err(
                v.span(),
                format!("{key}: '{}': {e}", v.get_ref()),
                "write it like \"500ms\", \"2s\" or \"1m\"",
            )
        })
    }

    pub fn size(&self, v: &Spanned<toml::Value>, key: &str) -> Result<u64, PlanFileError> {
        size_of(v.get_ref()).ok_or_else(|| {
            self.err(
                v.span(),
                format!("{key}: {} is not a size", v.get_ref()),
                "write a byte count like 65536 or \"64K\", \"16G\"",
            )
        })
    }
}

/// A size written as a byte count or a string with a K/M/G suffix.
pub(crate) fn size_of(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::String(s) => parse_size(s).ok(),
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}
