//! The dlc model language (`.dlc` files): lexer, parser with error recovery, and a
//! checker that lowers a model into the same `dlc_ir::Graph` the ONNX frontend makes.
//! Every syntax, name, type and shape error of a file is reported, each with the file
//! name, line and column, the span underlined and a help line (rendered by miette).
//! docs/dsl.md describes the language.
#![warn(missing_docs)]

#[allow(missing_docs)]
pub mod ast;
#[allow(missing_docs)]
pub mod lexer;
mod lower;
#[allow(missing_docs)]
pub mod parser;

use lexer::Span;
use std::collections::HashMap;
use std::path::Path;

/// One diagnostic: what is wrong, where, and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Diag {
    /// What is wrong.
    pub message: String,
    /// Where (byte range in the file).
    pub span: Span,
    /// The label under the span.
    pub label: String,
    /// What to do about it.
    pub help: String,
}

/// The errors of one file, rendered by `Display` the way the CLI prints them.
#[derive(Debug, Clone)]
pub struct DslError {
    /// The file's name as given.
    pub file: String,
    /// Its text.
    pub source: String,
    /// Every error found, in source order.
    pub diags: Vec<Diag>,
}

impl std::error::Error for DslError {}

/// One diagnostic with its source, for miette's renderer.
#[derive(Debug)]
struct Rendered<'a> {
    diag: &'a Diag,
    src: miette::NamedSource<String>,
}

impl std::fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diag.message)
    }
}
impl std::error::Error for Rendered<'_> {}
impl miette::Diagnostic for Rendered<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        (!self.diag.help.is_empty()).then(|| Box::new(&self.diag.help) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let s = &self.diag.span;
        let label = miette::LabeledSpan::new(Some(self.diag.label.clone()), s.start, s.end.saturating_sub(s.start));
        Some(Box::new(std::iter::once(label)))
    }
}

impl std::fmt::Display for DslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.diags.len();
        writeln!(f, "{}: {n} error{}", self.file, if n == 1 { "" } else { "s" })?;
        let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_context_lines(1);
        for d in &self.diags {
            let r = Rendered { diag: d, src: miette::NamedSource::new(&self.file, self.source.clone()) };
            let mut out = String::new();
            handler.render_report(&mut out, &r).map_err(|_| std::fmt::Error)?;
            // The line:column of the span, for tools that read the first line only.
            write!(f, "{out}")?;
        }
        Ok(())
    }
}

/// Where the file's line and column of byte `offset` are (1-based).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Reads and lowers a `.dlc` file; `weights "..."` paths are relative to its folder.
pub fn import(path: &Path) -> Result<dlc_ir::Graph, DslError> {
    import_with(path, &HashMap::new())
}

/// [`import`] with some inputs' shapes pinned (`--input-shape x=1x3x224x224`): each
/// symbolic dim of a pinned input takes the given size everywhere it appears (outputs
/// and parameters included).
pub fn import_with(path: &Path, pins: &HashMap<String, Vec<u64>>) -> Result<dlc_ir::Graph, DslError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| DslError {
        file: name.clone(),
        source: String::new(),
        diags: vec![Diag {
            message: format!("cannot read the file: {e}"),
            span: 0..0,
            label: "here".into(),
            help: "check the path".into(),
        }],
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    import_source_with(&name, &source, dir, pins)
}

/// The most diagnostics one error report shows (a file of junk would otherwise print
/// one per token).
pub const MAX_DIAGNOSTICS: usize = 50;

/// Lowers the text of a `.dlc` file named `file`, reading weights from `dir`.
pub fn import_source(file: &str, source: &str, dir: &Path) -> Result<dlc_ir::Graph, DslError> {
    import_source_with(file, source, dir, &HashMap::new())
}

/// [`import_source`] with pinned input shapes (see [`import_with`]).
pub fn import_source_with(
    file: &str,
    source: &str,
    dir: &Path,
    pins: &HashMap<String, Vec<u64>>,
) -> Result<dlc_ir::Graph, DslError> {
    let (toks, lex_errs) = lexer::lex(source);
    let (ast, parse_errs) = parser::parse(&toks);
    let mut diags: Vec<Diag> = lex_errs
        .into_iter()
        .map(|e| Diag { message: e.message, span: e.span, label: "here".into(), help: e.help.into() })
        .chain(parse_errs.into_iter().map(|e| Diag {
            message: e.message,
            span: e.span,
            label: "here".into(),
            help: e.help,
        }))
        .collect();
    // Name, type and shape checks only on a file that parsed: a half-parsed one would
    // report follow-on errors.
    let graph = if diags.is_empty() { lower::lower(&ast, dir, pins, &mut diags) } else { None };
    diags.sort_by_key(|d| d.span.start);
    if diags.len() > MAX_DIAGNOSTICS {
        let more = diags.len() - MAX_DIAGNOSTICS;
        diags.truncate(MAX_DIAGNOSTICS);
        let at = diags.last().map_or(0..0, |d| d.span.clone());
        diags.push(Diag {
            message: format!("... and {more} more error(s) not shown"),
            span: at,
            label: "the last one shown".into(),
            help: "fix the ones above first".into(),
        });
    }
    match graph {
        Some(g) if diags.is_empty() => Ok(g),
        _ => Err(DslError { file: file.to_string(), source: source.to_string(), diags }),
    }
}
