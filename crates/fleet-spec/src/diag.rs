//! Diagnostics: what went wrong, where (file:line:column), and what to do about it.
//!
//! Every error the fleet file can produce is a [`Diagnostic`]. They are collected, never
//! thrown one at a time, and rendered either as text with the offending line and a caret
//! or as JSON for machines.

use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// A position range inside one source file. Lines are 1-based, columns are 1-based and count
/// characters (not bytes), as editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
pub struct Span {
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
}

impl Span {
    /// A span covering a single point, for errors about "here" rather than a token.
    pub fn point(line: u32, column: u32) -> Self {
        Span {
            line,
            column,
            end_line: line,
            end_column: column + 1,
        }
    }
}

/// A loaded source file: its display name and its text, kept so diagnostics can quote lines.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: Arc<str>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    fn line(&self, line: u32) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)? as usize)
    }
}

/// How bad a diagnostic is. Errors make the file invalid; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a fleet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where; `None` only for problems with the file as a whole (unreadable, empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// A short note printed under the caret ("did you mean `command`?").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message, span)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic the way compilers do: message, location, the quoted line with a
    /// caret under the offending part, then the help.
    pub fn render(&self, source: &Source) -> String {
        let mut out = String::new();
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{kind}: {}", self.message);
        let Some(span) = self.span else {
            let _ = writeln!(out, "  --> {}", source.name);
            if let Some(help) = &self.help {
                let _ = writeln!(out, "  = help: {help}");
            }
            return out;
        };
        // A parser error at the very end points past the last line: show the last line.
        let quoted = source
            .line(span.line)
            .map(|t| (span.line, t, span))
            .or_else(|| {
                let (index, last) = source.text.lines().enumerate().last()?;
                let end = last.chars().count() as u32 + 1;
                let line = index as u32 + 1;
                Some((
                    line,
                    last,
                    Span {
                        line,
                        column: end,
                        end_line: line,
                        end_column: end + 1,
                    },
                ))
            });
        let at = quoted.map_or(span, |(_, _, s)| s);
        let _ = writeln!(out, "  --> {}:{}:{}", source.name, at.line, at.column);
        if let Some((line, text, span)) = quoted {
            let number = line.to_string();
            let pad = " ".repeat(number.len());
            let width = text.chars().count() as u32;
            let start = span.column.saturating_sub(1).min(width);
            let end = if span.end_line == span.line {
                span.end_column.saturating_sub(1)
            } else {
                width
            };
            let carets = end.saturating_sub(start).max(1);
            // Tabs keep their width under the caret so it lines up in any terminal.
            let lead: String = text
                .chars()
                .take(start as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let shown: String = text.chars().take(200).collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {shown}");
            let label = self
                .label
                .as_deref()
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{pad} | {lead}{}{label}",
                "^".repeat(carets.min(200) as usize)
            );
            if let Some(help) = &self.help {
                let _ = writeln!(out, "{pad} = help: {help}");
            }
        } else if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }
}

/// Renders every diagnostic followed by a one-line summary.
pub fn render_all(diagnostics: &[Diagnostic], source: &Source) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.render(source));
        out.push('\n');
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let _ = match (errors, warnings) {
        (0, 0) => Ok(()),
        (0, w) => writeln!(out, "{}: {w} warning{}", source.name, plural(w)),
        (e, 0) => writeln!(out, "{}: {e} error{}", source.name, plural(e)),
        (e, w) => writeln!(
            out,
            "{}: {e} error{}, {w} warning{}",
            source.name,
            plural(e),
            plural(w)
        ),
    };
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance where swapping two neighbouring letters counts as one edit (optimal string
/// alignment), since transposed letters are the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut d: Vec<usize> = vec![0; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["command", "args", "env", "cwd"];
        assert_eq!(did_you_mean("comand", keys), Some("command"));
        assert_eq!(did_you_mean("arg", keys), Some("args"));
        assert_eq!(did_you_mean("replicas", keys), None);
        assert_eq!(
            did_you_mean("sevrers", ["secrets", "servers"]),
            Some("servers")
        );
    }
}
