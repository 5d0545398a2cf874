//! Text: ops on string tensors. A string tensor is two IR values (the ONNX frontend
//! splits it, see docs/strings.md): its element table, `i64[..., 2]` (each element's
//! start and end byte), and its bytes, `u8[n]` (UTF-8). Ops that only move elements
//! (Identity, Reshape, Gather, Compress...) act on the table alone; the ops here read
//! the bytes.
use super::{ensure, Infer, OpMeta};
use crate::{op, DType, Dim, IrError, Shape, TensorType};

op! {
    /// Whether strings are equal, element by element with numpy broadcasting: operands
    /// `a` table, `a` bytes, `b` table, `b` bytes; a bool tensor of the broadcast shape
    /// of the two tables without their last dim.
    StringEqual = "string_equal", operands 4..=4 {}
}

/// Checks that `t` is the element table of a string tensor and returns its element shape.
pub fn string_table_shape(t: &TensorType, node: &str, op: &'static str, what: &str) -> Result<Shape, IrError> {
    ensure(t.dtype == DType::I64 && t.shape.0.last() == Some(&Dim::Fixed(2)), node, op, || {
        format!("{what} must be a string element table i64[..., 2], got {t}")
    })?;
    Ok(Shape(t.shape.0[..t.shape.rank() - 1].to_vec()))
}

/// Checks that `t` is the bytes of a string tensor.
pub fn string_bytes_check(t: &TensorType, node: &str, op: &'static str, what: &str) -> Result<(), IrError> {
    ensure(t.dtype == DType::U8 && t.shape.rank() == 1, node, op, || {
        format!("{what} must be string bytes u8[n], got {t}")
    })
}

/// Checks the four operands of a binary string op (two tables and their bytes); returns
/// both element shapes and their broadcast shape.
fn binary_strings(inputs: &[TensorType], node: &str, op: &'static str) -> Result<(Shape, Shape, Shape), IrError> {
    let a = string_table_shape(&inputs[0], node, op, "operand 0")?;
    string_bytes_check(&inputs[1], node, op, "operand 1")?;
    let b = string_table_shape(&inputs[2], node, op, "operand 2")?;
    string_bytes_check(&inputs[3], node, op, "operand 3")?;
    let shape = super::broadcast_shapes(&a, &b).map_err(|m| IrError::shape(node, op, m))?;
    Ok((a, b, shape))
}

impl Infer for StringEqual {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (_, _, shape) = binary_strings(inputs, node, op)?;
        Ok(vec![TensorType { dtype: DType::Bool, shape }])
    }
}

op! {
    /// String concatenation, element by element with numpy broadcasting: operands `a`
    /// table, `a` bytes, `b` table, `b` bytes; results the table of the broadcast
    /// element shape and the bytes, `ra * na + rb * nb` long where `ra`, `rb` are how many
    /// times broadcasting repeats each element of `a`, `b` and `na`, `nb` their byte
    /// counts: room for every element's bytes when an operand's ranges do not overlap (as
    /// every table dlc builds); writes past it stop at its end. Unused bytes are 0.
    StringConcat = "string_concat", operands 4..=4 {}
}

impl Infer for StringConcat {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (a, b, shape) = binary_strings(inputs, node, op)?;
        let repeat = |x: &Shape| -> Result<Dim, IrError> {
            if x.0.len() == shape.0.len() && x.0 == shape.0 {
                return Ok(Dim::Fixed(1));
            }
            match (shape.numel(), x.numel()) {
                (Some(o), Some(n)) if n > 0 => Ok(Dim::Fixed(o / n)),
                (_, Some(1)) => Ok(Dim::product(&shape.0)),
                _ => Dim::quotient(&shape.0, &x.0)
                    .ok_or_else(|| IrError::shape(node, op, format!("broadcasting {x} to {shape} needs known dims"))),
            }
        };
        let (ra, rb) = (repeat(&a)?, repeat(&b)?);
        let n = Dim::sum(&[
            Dim::product(&[ra, inputs[1].shape.0[0].clone()]),
            Dim::product(&[rb, inputs[3].shape.0[0].clone()]),
        ]);
        let mut table = shape.clone();
        table.0.push(Dim::Fixed(2));
        Ok(vec![TensorType { dtype: DType::I64, shape: table }, TensorType { dtype: DType::U8, shape: Shape(vec![n]) }])
    }
}

op! {
    /// How many pieces StringSplit makes of each string (operands: table, bytes; an
    /// `i64` result of the element shape). `delimiter` empty: runs of ASCII whitespace
    /// separate pieces and none is empty (Python's `str.split()`); else every occurrence
    /// of it does. At most `maxsplit` splits (negative: no limit), the last piece keeping
    /// the rest. With `most`, one count instead, `i64[1]`: the largest (0 for none).
    StringSplitCount = "string_split_count", operands 2..=2 { delimiter: String, maxsplit: i64, most: bool }
}

impl Infer for StringSplitCount {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let shape = string_table_shape(&inputs[0], node, op, "operand 0")?;
        string_bytes_check(&inputs[1], node, op, "operand 1")?;
        let shape = if self.most { Shape(vec![Dim::Fixed(1)]) } else { shape };
        Ok(vec![TensorType { dtype: DType::I64, shape }])
    }
}

op! {
    /// StringSplit's pieces (as [`StringSplitCount`] counts them): a table of the element
    /// shape and `pieces` more (a dim expression, at least every element's count), each
    /// element's pieces first and empty strings after; the bytes are the operand's.
    StringSplit = "string_split", operands 2..=2 { delimiter: String, maxsplit: i64, pieces: String }
}

impl Infer for StringSplit {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let mut shape = string_table_shape(&inputs[0], node, op, "operand 0")?;
        string_bytes_check(&inputs[1], node, op, "operand 1")?;
        let k = dlc_sym::parse(&self.pieces)
            .ok()
            .and_then(Dim::from_expr)
            .ok_or_else(|| IrError::shape(node, op, format!("pieces '{}' is not a dim", self.pieces)))?;
        shape.0.push(k);
        shape.0.push(Dim::Fixed(2));
        Ok(vec![TensorType { dtype: DType::I64, shape }])
    }
}

/// The pieces of `s` as StringSplit makes them (byte ranges into `s`): the reference the
/// interpreter runs and the kernel is tested against.
pub fn split_ranges(s: &[u8], delimiter: &[u8], maxsplit: i64) -> Vec<(usize, usize)> {
    let limit = if maxsplit < 0 { usize::MAX } else { maxsplit as usize };
    let mut out = Vec::new();
    if delimiter.is_empty() {
        let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | 0x1C..=0x1F);
        let mut i = 0;
        while i < s.len() {
            if ws(s[i]) {
                i += 1;
                continue;
            }
            if out.len() == limit {
                out.push((i, s.len()));
                return out;
            }
            let start = i;
            while i < s.len() && !ws(s[i]) {
                i += 1;
            }
            out.push((start, i));
        }
        return out;
    }
    let (mut start, mut i) = (0, 0);
    while i + delimiter.len() <= s.len() {
        if out.len() < limit && &s[i..i + delimiter.len()] == delimiter {
            out.push((start, i));
            i += delimiter.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push((start, s.len()));
    out
}

op! {
    /// The case change of string bytes (`u8[n]` to `u8[n]`, the element table unchanged):
    /// every character of one or two UTF-8 bytes (U+0000..U+07FF: Latin, Greek, Cyrillic,
    /// Armenian...) whose simple upper- or lowercase mapping is one character of as many
    /// bytes is replaced by it ([`case_table`]); with `ascii` (the C locale) only ASCII
    /// letters change. Other characters are kept (docs/strings.md).
    StringCase = "string_case", operands 1..=1 { upper: bool, ascii: bool }
}

impl Infer for StringCase {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        string_bytes_check(&inputs[0], node, Self::INFO.mnemonic, "the operand")?;
        Ok(vec![inputs[0].clone()])
    }
}

/// Code points below this take one or two UTF-8 bytes: [`StringCase`] maps those.
pub const CASE_TABLE_LEN: usize = 0x800;

/// [`StringCase`]'s mapping of the code points below [`CASE_TABLE_LEN`]: each to its
/// simple upper- (or lower-) case mapping when that is one character of the same UTF-8
/// length (and, with `ascii`, only for ASCII letters), else to itself.
pub fn case_table(upper: bool, ascii: bool) -> Vec<u32> {
    (0..CASE_TABLE_LEN as u32)
        .map(|cp| {
            let Some(c) = char::from_u32(cp) else { return cp };
            if ascii {
                let m = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
                return m as u32;
            }
            let mut m: Vec<char> = if upper { c.to_uppercase().collect() } else { c.to_lowercase().collect() };
            match m.pop() {
                Some(one) if m.is_empty() && one.len_utf8() == c.len_utf8() => one as u32,
                _ => cp,
            }
        })
        .collect()
}

/// [`StringCase`] on bytes (the reference: the interpreter and the frontend's constant
/// stopwords use it; the kernel is tested against it).
pub fn map_case(bytes: &[u8], table: &[u32]) -> Vec<u8> {
    let lead = |b: u8| b & 0xE0 == 0xC0;
    let cont = |b: u8| b & 0xC0 == 0x80;
    let code = |l: u8, c: u8| ((u32::from(l) & 0x1F) << 6) | (u32::from(c) & 0x3F);
    (0..bytes.len())
        .map(|i| {
            let b = bytes[i];
            let next = bytes.get(i + 1).copied().filter(|&n| cont(n));
            let prev = i.checked_sub(1).map(|p| bytes[p]).filter(|&p| lead(p));
            if b < 0x80 {
                table[b as usize] as u8
            } else if let (true, Some(n)) = (lead(b), next) {
                0xC0 | (table[code(b, n) as usize] >> 6) as u8
            } else if let (true, Some(p)) = (cont(b), prev) {
                0x80 | (table[code(p, b) as usize] & 0x3F) as u8
            } else {
                b
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_as_python_does() {
        let py = |s: &str, d: &str, m: i64| -> Vec<String> {
            split_ranges(s.as_bytes(), d.as_bytes(), m).iter().map(|&(a, b)| s[a..b].to_string()).collect()
        };
        assert_eq!(py("a,b,,c", ",", -1), ["a", "b", "", "c"]);
        assert_eq!(py("a,b,,c", ",", 2), ["a", "b", ",c"]);
        assert_eq!(py("", ",", -1), [""]);
        assert_eq!(py("a<>b<><>", "<>", -1), ["a", "b", "", ""]);
        assert_eq!(py("  a \t b  c ", "", -1), ["a", "b", "c"]);
        assert_eq!(py("  a \t b  c ", "", 1), ["a", "b  c "]);
        assert_eq!(py("   ", "", -1), Vec::<String>::new());
        assert_eq!(py("ab", "", 0), ["ab"]);
    }

    #[test]
    fn case_mapping_keeps_byte_lengths() {
        let (up, down) = (case_table(true, false), case_table(false, false));
        let s = |x: &str, t: &[u32]| String::from_utf8(map_case(x.as_bytes(), t)).unwrap();
        assert_eq!(s("straße àéîõü ÿ ω Ωmega Жук µ x×y", &up), "STRAßE ÀÉÎÕÜ Ÿ Ω ΩMEGA ЖУК Μ X×Y");
        assert_eq!(s("ÀÉÎ Ÿ ΣΑΣ ЖУК İ K", &down), "àéî ÿ σασ жук İ k");
        // The C locale: ASCII letters only.
        assert_eq!(s("àbc", &case_table(true, true)), "àBC");
        // Malformed UTF-8 is kept as it is.
        assert_eq!(map_case(&[0xC3, b'a', 0xA9, 0xE2, 0x82, 0xAC], &up), vec![0xC3, b'A', 0xA9, 0xE2, 0x82, 0xAC]);
    }
}

op! {
    /// RegexFullMatch: whether each element of a string tensor (its table and bytes) is
    /// matched by `pattern` as a whole, with RE2's meaning (as ONNX specifies and ONNX
    /// Runtime runs it: [`re2_pattern`]); a bool of the element shape. The kernel walks
    /// [`regex_dfa`]'s table over each element's bytes.
    StringRegexMatch = "string_regex_match", operands 2..=2 { pattern: String }
}

impl Infer for StringRegexMatch {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let shape = string_table_shape(&inputs[0], node, op, "operand 0")?;
        string_bytes_check(&inputs[1], node, op, "operand 1")?;
        // Parsing only (cheap; the DFA is built where the kernel is made).
        regex_automata::util::syntax::parse(&re2_pattern(&self.pattern))
            .map_err(|e| IrError::shape(node, op, format!("pattern '{}' does not parse: {e}", self.pattern)))?;
        Ok(vec![TensorType { dtype: DType::Bool, shape }])
    }
}

/// `pattern` (RE2 syntax) as the `regex` crate must read it to mean what RE2 means:
/// the same syntax, except that RE2's Perl classes and word boundaries are ASCII
/// (`\w` is `[0-9A-Za-z_]`, `\d` `[0-9]`, `\s` `[\t\n\f\r ]`, `\b` between `\w` and
/// not), where the crate's are Unicode; so those escapes become their ASCII forms (POSIX
/// classes inside brackets). Everything else (`.` and `\p{..}` over UTF-8 characters,
/// repetitions, groups) is passed as it is.
pub fn re2_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    // Bracket depth: 0 outside a class (nested `[` opens `[:name:]` or a nested class).
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let inside = depth > 0;
                let ascii = match (e, inside) {
                    ('w', false) => Some("[[:word:]]"),
                    ('W', false) => Some("[[:^word:]]"),
                    ('d', false) => Some("[[:digit:]]"),
                    ('D', false) => Some("[[:^digit:]]"),
                    ('s', false) => Some("[\\t\\n\\x0C\\r ]"),
                    ('S', false) => Some("[^\\t\\n\\x0C\\r ]"),
                    ('b', false) => Some("(?-u:\\b)"),
                    ('B', false) => Some("(?-u:\\B)"),
                    ('w', true) => Some("[:word:]"),
                    ('W', true) => Some("[:^word:]"),
                    ('d', true) => Some("[:digit:]"),
                    ('D', true) => Some("[:^digit:]"),
                    ('s', true) => Some("\\t\\n\\x0C\\r "),
                    _ => None,
                };
                match ascii {
                    Some(a) => out.push_str(a),
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            '[' => {
                out.push('[');
                if depth > 0 && chars.peek() == Some(&':') {
                    // A POSIX class `[:name:]`: copied to its `:]`.
                    while let Some(x) = chars.next() {
                        out.push(x);
                        if x == ':' && chars.peek() == Some(&']') {
                            out.push(chars.next().expect("peeked"));
                            break;
                        }
                    }
                    continue;
                }
                depth += 1;
                // A leading `^` and a first `]` belong to the class.
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().expect("peeked"));
                }
                if chars.peek() == Some(&']') {
                    out.push(chars.next().expect("peeked"));
                }
            }
            ']' if depth > 0 => {
                depth -= 1;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// A deterministic automaton over bytes for a whole-string match: from state `start`,
/// byte `c` moves state `s` to `trans[s * 256 + c]`; the string matches when the state
/// after its last byte has `accept` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexDfa {
    /// The transitions, 256 per state.
    pub trans: Vec<u32>,
    /// Whether the input may end in each state.
    pub accept: Vec<bool>,
    /// The state before the first byte.
    pub start: u32,
}

/// Most states a [`RegexDfa`] may have (its table is 1 KiB per state).
pub const REGEX_MAX_STATES: usize = 1 << 14;

/// The automaton of `pattern` matching whole strings: regex-automata's dense DFA of
/// `(?:pattern)\z` anchored at the start, its reachable states renumbered from 0, each
/// state's end-of-input transition folded into `accept`. An error (naming the pattern)
/// when it does not parse, uses what a DFA cannot (Unicode word boundaries), or needs
/// more than [`REGEX_MAX_STATES`] states.
pub fn regex_dfa(pattern: &str) -> Result<RegexDfa, String> {
    use regex_automata::dfa::{dense, Automaton, StartKind};
    use regex_automata::{Anchored, Input};
    let limit = REGEX_MAX_STATES * 1024;
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(limit)),
        )
        .build(&format!("(?:{})\\z", re2_pattern(pattern)))
        .map_err(|e| format!("pattern '{pattern}' is not supported: {e}"))?;
    let start = dfa
        .start_state_forward(&Input::new("").anchored(Anchored::Yes))
        .map_err(|e| format!("pattern '{pattern}': {e}"))?;
    let mut ids = std::collections::HashMap::new();
    let mut order = vec![start];
    ids.insert(start, 0u32);
    let (mut trans, mut accept) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < order.len() {
        let s = order[i];
        accept.push(dfa.is_match_state(dfa.next_eoi_state(s)));
        for c in 0..=255u8 {
            let t = dfa.next_state(s, c);
            let id = match ids.get(&t) {
                Some(&id) => id,
                None => {
                    if order.len() >= REGEX_MAX_STATES {
                        return Err(format!("pattern '{pattern}' needs more than {REGEX_MAX_STATES} DFA states"));
                    }
                    ids.insert(t, order.len() as u32);
                    order.push(t);
                    order.len() as u32 - 1
                }
            };
            trans.push(id);
        }
        i += 1;
    }
    Ok(RegexDfa { trans, accept, start: 0 })
}

#[cfg(test)]
mod regex_tests {
    use super::regex_dfa;

    fn full(p: &str, s: &str) -> bool {
        let d = regex_dfa(p).unwrap();
        let st = s.bytes().fold(d.start, |st, c| d.trans[st as usize * 256 + c as usize]);
        d.accept[st as usize]
    }

    #[test]
    fn whole_strings_only() {
        assert!(full("a+b", "aaab"));
        assert!(!full("a+b", "aaabx") && !full("a+b", "xaab") && !full("a+b", ""));
        assert!(full("", "") && !full("", "a"));
        assert!(full(r"[\w.]+@example\.com", "jo.doe@example.com"));
        assert!(full(r"\p{Greek}+", "αβγ") && !full(r"\p{Greek}+", "abc"));
        // RE2's classes and boundaries are ASCII.
        assert!(full(r"\w+", "abc_9") && !full(r"\w+", "é"));
        assert!(full(r"[\w.]+", "a.b") && !full(r"[\w.]+", "aé") && full(r"[^\d]+", "ab"));
        assert!(full(r"www\.[\w.-]+\.\bcom\b", "www.example.com"));
        assert!(full(r"\s\S", " x") && !full(r"\s", "\u{a0}"));
        assert!(full("é.", "éé"));
        assert!(full("(?i)hello", "HeLLo"));
        assert!(regex_dfa("(").is_err());
    }
}
