//! Tokens of the model language, each with its byte span. `#` starts a comment that
//! runs to the end of the line; whitespace (newlines included) only separates tokens.

/// A byte range in the source.
pub type Span = std::ops::Range<usize>;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// One of `( ) [ ] { } , : = + - * / @` or `->`.
    Punct(&'static str),
    Eof,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "'{s}'"),
            Tok::Int(v) => write!(f, "{v}"),
            Tok::Float(v) => write!(f, "{v}"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Punct(p) => write!(f, "'{p}'"),
            Tok::Eof => f.write_str("the end of the file"),
        }
    }
}

/// A lexical error: what and where.
#[derive(Debug, Clone, PartialEq)]
pub struct LexError {
    pub message: String,
    pub span: Span,
    pub help: &'static str,
}

/// Splits `src` into tokens (ending with `Eof`) and the errors met on the way (the
/// offending characters are skipped, so lexing always reaches the end).
pub fn lex(src: &str) -> (Vec<(Tok, Span)>, Vec<LexError>) {
    let b = src.as_bytes();
    let (mut toks, mut errs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push((Tok::Ident(src[s..i].to_string()), s..i));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let save = i;
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                if i < b.len() && b[i].is_ascii_digit() {
                    float = true;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = save;
                }
            }
            let text = &src[s..i];
            // A float literal must be finite as an f64 (`1e400` would silently be inf).
            let tok = if float {
                text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Tok::Float)
            } else {
                text.parse().ok().map(Tok::Int)
            };
            match tok {
                Some(t) => toks.push((t, s..i)),
                None => errs.push(LexError {
                    message: format!("number '{text}' is out of range"),
                    span: s..i,
                    help: if float { "floats must be finite (at most about 1.8e308)" } else { "integers are 64-bit" },
                }),
            }
        } else if c == b'"' {
            let s = i;
            i += 1;
            let mut text = String::new();
            let mut closed = false;
            while i < b.len() && b[i] != b'\n' {
                if b[i] == b'"' {
                    closed = true;
                    i += 1;
                    break;
                }
                if b[i] == b'\\' && i + 1 < b.len() {
                    // The escaped character may be several bytes long.
                    let esc = src[i + 1..].chars().next().unwrap_or('?');
                    text.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    i += 1 + esc.len_utf8();
                    continue;
                }
                let ch = src[i..].chars().next().unwrap_or('?');
                text.push(ch);
                i += ch.len_utf8();
            }
            if closed {
                toks.push((Tok::Str(text), s..i));
            } else {
                errs.push(LexError {
                    message: "unterminated string".into(),
                    span: s..i,
                    help: "close the string with '\"' on the same line",
                });
            }
        } else {
            const PUNCT: &[&str] = &["->", "(", ")", "[", "]", "{", "}", ",", ":", "=", "+", "-", "*", "/", "@"];
            match PUNCT.iter().find(|p| src[i..].starts_with(**p)) {
                Some(p) => {
                    toks.push((Tok::Punct(p), i..i + p.len()));
                    i += p.len();
                }
                None => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    errs.push(LexError {
                        message: format!("unexpected character '{ch}'"),
                        span: i..i + ch.len_utf8(),
                        help: "comments start with '#'; operators are + - * / @",
                    });
                    i += ch.len_utf8();
                }
            }
        }
    }
    toks.push((Tok::Eof, b.len()..b.len()));
    (toks, errs)
}
