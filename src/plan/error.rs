//! Errors found in a plan file: where (line, column, key), what is wrong, and what is valid.

use std::fmt;
use std::path::{Path, PathBuf};

use super::node::Location;

/// One problem in a plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub at: Location,
    /// The key the problem is about, as a path: `servers[1].name`, `drain.timeout`.
    /// Empty for the document itself.
    pub key: String,
    pub message: String,
    /// What would be valid, when the message alone does not say it.
    pub help: Option<String>,
}

impl PlanError {
    pub fn new(at: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError {
            at,
            key: key.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one plan file, with the text needed to show them in context.
#[derive(Debug)]
pub struct PlanErrors {
    pub file: PathBuf,
    pub text: String,
    pub errors: Vec<PlanError>,
}

impl PlanErrors {
    pub fn new(file: &Path, text: &str, mut errors: Vec<PlanError>) -> Self {
        errors.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.key.cmp(&b.key)));
        PlanErrors {
            file: file.to_owned(),
            text: text.to_owned(),
            errors,
        }
    }

    /// The source line an error points at, if the file has it.
    pub fn source_line(&self, error: &PlanError) -> Option<&str> {
        let index = usize::try_from(error.at.line).ok()?.checked_sub(1)?;
        self.text.lines().nth(index)
    }
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(
            formatter,
            "{} has {count} error{}",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for PlanErrors {}

/// A plan file that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read plan file {}", file.display())]
pub struct ReadError {
    pub file: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Why a plan could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Invalid(#[from] PlanErrors),
}
