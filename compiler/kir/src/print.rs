//! The canonical text form (see docs/kir.md). Printing is deterministic and
//! [`crate::parse`] reads back exactly what it writes.
use crate::ir::*;
use std::fmt::{self, Write};

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lanes == 1 {
            f.write_str(self.elem.name())
        } else {
            write!(f, "{}x{}", self.elem.name(), self.lanes)
        }
    }
}

macro_rules! names {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// Every variant, in text order.
            pub const ALL: &'static [$t] = &[$(<$t>::$v),*];
            /// The text name.
            pub fn name(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
    };
}

names!(BinOp {
    Add = "add", Sub = "sub", Mul = "mul", SDiv = "sdiv", UDiv = "udiv", SRem = "srem", URem = "urem",
    And = "and", Or = "or", Xor = "xor", Shl = "shl", LShr = "lshr", AShr = "ashr", SMin = "smin",
    SMax = "smax", UMin = "umin", UMax = "umax", FAdd = "fadd", FSub = "fsub", FMul = "fmul", FDiv = "fdiv",
    FRem = "frem", FMin = "fmin", FMax = "fmax", CopySign = "copysign",
});
names!(UnOp {
    Neg = "neg", Not = "not", FNeg = "fneg", FAbs = "fabs", Sqrt = "sqrt", Floor = "floor", Ceil = "ceil",
    Trunc = "trunc", RoundEven = "roundeven",
});
names!(CmpOp {
    Eq = "eq", Ne = "ne", Slt = "slt", Sle = "sle", Sgt = "sgt", Sge = "sge", Ult = "ult", Ule = "ule",
    Ugt = "ugt", Uge = "uge", FOeq = "foeq", FOne = "fone", FOlt = "folt", FOle = "fole", FOgt = "fogt",
    FOge = "foge", FUno = "funo", FUne = "fune", FUlt = "fult",
    FUgt = "fugt",
});
names!(CastOp {
    Sext = "sext", Zext = "zext", Trunc = "trunc", FpExt = "fpext", FpTrunc = "fptrunc",
    FpToSiSat = "fptosi.sat", FpToUiSat = "fptoui.sat", FpToSi = "fptosi", FpToUi = "fptoui", SiToFp = "sitofp", UiToFp = "uitofp",
    Bitcast = "bitcast",
});
names!(ReduceOp { Add = "add", FAdd = "fadd", FMin = "fmin", FMax = "fmax", SMin = "smin", SMax = "smax" });
names!(LoopKind { Serial = "serial", Each = "each", Parallel = "parallel", Threads = "threads" });

/// A string literal: `"` and `\` escaped, other non-printing characters as `\u{..}`.
pub(crate) fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{{{:x}}}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn lit(l: &Lit) -> String {
    match l {
        Lit::Int(i) => i.to_string(),
        // `{:?}` is the shortest text that parses back to the same f64 (`inf`, `NaN`).
        Lit::Float(x) => format!("{x:?}"),
    }
}

fn vals(v: &[ValId]) -> String {
    v.iter().map(|v| format!("%v{v}")).collect::<Vec<_>>().join(", ")
}

/// How a kernel numbers its memories: `np` parameters, then `nd` constant arrays, then
/// scratch arrays.
#[derive(Clone, Copy)]
struct Mems {
    np: u32,
    nd: u32,
    ns: u32,
}

/// A memory reference: parameter `%pK`, constant array `%dJ` or scratch array `%sJ`.
fn mem(np: Mems, m: u32) -> String {
    if m < np.np {
        format!("%p{m}")
    } else if m < np.np + np.nd {
        format!("%d{}", m - np.np)
    } else if m < np.np + np.nd + np.ns {
        format!("%s{}", m - np.np - np.nd)
    } else {
        format!("%h{}", m - np.np - np.nd - np.ns)
    }
}

fn inst(i: &Inst, np: Mems) -> String {
    match i {
        Inst::Const { ty, lit: l } => format!("const {ty} {}", lit(l)),
        Inst::Index(e) => format!("index {e}"),
        Inst::Load { ty, param, index, align, mask } => {
            let m = mask.map(|m| format!(" mask %v{m}")).unwrap_or_default();
            format!("load {ty}, {}[{index}] align {align}{m}", mem(np, *param))
        }
        Inst::Get(l) => format!("get %l{l}"),
        Inst::Bin(op, a, b) => format!("{} %v{a}, %v{b}", op.name()),
        Inst::Un(op, a) => format!("{} %v{a}", op.name()),
        Inst::Fma(a, b, c) => format!("fma %v{a}, %v{b}, %v{c}"),
        Inst::Cmp(op, a, b) => format!("cmp {} %v{a}, %v{b}", op.name()),
        Inst::Select(c, a, b) => format!("select %v{c}, %v{a}, %v{b}"),
        Inst::Cast(op, a, to) => format!("cast {} %v{a} to {to}", op.name()),
        Inst::Splat(a, n) => format!("splat %v{a} x {n}"),
        Inst::Extract(a, l) => format!("extract %v{a}, {l}"),
        Inst::Insert(v, a, l) => format!("insert %v{v}, %v{a}, {l}"),
        Inst::Shuffle(a, b, m) => {
            format!("shuffle %v{a}, %v{b} [{}]", m.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
        }
        Inst::Reduce(op, a) => format!("reduce {} %v{a}", op.name()),
        Inst::Call { func, args, ty } => format!("call {}({}) : {ty}", quote(func), vals(args)),
        Inst::Intrinsic { name, args, ty } => format!("intrinsic {}({}) : {ty}", quote(name), vals(args)),
        Inst::Opaque(a) => format!("opaque %v{a}"),
        Inst::Lookup { table, index } => format!("lookup %t{table}[%v{index}]"),
        Inst::BlockReduce { op, mem: m } => format!("blockreduce {} {}", op.name(), mem(np, *m)),
    }
}

fn body(out: &mut String, b: &[Stmt], depth: usize, np: Mems) {
    for s in b {
        stmt(out, s, depth, np);
    }
}

fn stmt(out: &mut String, s: &Stmt, depth: usize, np: Mems) {
    let pad = "  ".repeat(depth);
    match s {
        Stmt::Let(v, i) => {
            let _ = writeln!(out, "{pad}%v{v} = {}", inst(i, np));
        }
        Stmt::Store { param, index, value, align, mask } => {
            let m = mask.map(|m| format!(" mask %v{m}")).unwrap_or_default();
            let _ = writeln!(out, "{pad}store {}[{index}], %v{value} align {align}{m}", mem(np, *param));
        }
        Stmt::For { var, lo, hi, kind, body: b } => {
            let _ = writeln!(out, "{pad}for %i{var} in {lo} .. {hi} {} {{", kind.name());
            body(out, b, depth + 1, np);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::If { cond, then, els } => {
            let _ = writeln!(out, "{pad}if %v{cond} {{");
            body(out, then, depth + 1, np);
            if els.is_empty() {
                let _ = writeln!(out, "{pad}}}");
            } else {
                let _ = writeln!(out, "{pad}}} else {{");
                body(out, els, depth + 1, np);
                let _ = writeln!(out, "{pad}}}");
            }
        }
        Stmt::Local(l, ty, init) => {
            let _ = writeln!(out, "{pad}local %l{l} : {ty} = %v{init}");
        }
        Stmt::Set(l, v) => {
            let _ = writeln!(out, "{pad}set %l{l}, %v{v}");
        }
        Stmt::Memcpy { dst, dst_off, src, src_off, bytes } => {
            let _ = writeln!(out, "{pad}memcpy {}[{dst_off}], {}[{src_off}], {bytes}", mem(np, *dst), mem(np, *src));
        }
    }
}

/// Bytes as hex digits.
fn hex(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
}

/// Constants written to a sidecar file instead of inline: 64-byte aligned, identical
/// ones stored once.
struct Sidecar {
    min: usize,
    bytes: Vec<u8>,
    at: std::collections::HashMap<Vec<u8>, usize>,
}

/// Writes `bytes` inline as hex, or with a sidecar (when they are at least its `min`)
/// as ` at OFFSET` into it.
fn blob(out: &mut String, bytes: &[u8], sidecar: &mut Option<&mut Sidecar>, sep: &str) {
    match sidecar {
        Some(s) if bytes.len() >= s.min => {
            let off = match s.at.get(bytes) {
                Some(&o) => o,
                None => {
                    s.bytes.resize(s.bytes.len().next_multiple_of(64), 0);
                    let o = s.bytes.len();
                    s.bytes.extend_from_slice(bytes);
                    s.at.insert(bytes.to_vec(), o);
                    o
                }
            };
            let _ = write!(out, " at {off}");
        }
        _ => {
            out.push_str(sep);
            hex(out, bytes);
        }
    }
}

/// The text of one kernel.
pub fn kernel(k: &Kernel) -> String {
    kernel_with(k, &mut None)
}

fn kernel_with(k: &Kernel, sidecar: &mut Option<&mut Sidecar>) -> String {
    let params: Vec<String> = k
        .params
        .iter()
        .enumerate()
        .map(|(i, a)| format!("%p{i}: {}", if *a == Access::Read { "read" } else { "write" }))
        .collect();
    let mut out = format!("kernel @{}({})", quote(&k.name), params.join(", "));
    for (i, t) in k.tables.iter().enumerate() {
        let v: Vec<String> = t.values.iter().map(lit).collect();
        let _ = write!(out, "\n  table %t{i} {} : {} [{}]", quote(&t.name), t.elem.name(), v.join(", "));
    }
    for (j, d) in k.data.iter().enumerate() {
        let _ = write!(out, "\n  data %d{j} {} : {}[{}]", quote(&d.name), d.elem.name(), d.len());
        blob(&mut out, &d.bytes, sidecar, " ");
    }
    for (j, sc) in k.scratch.iter().enumerate() {
        let _ = write!(out, "\n  scratch %s{j} : {}[{}]", sc.elem.name(), sc.len);
    }
    if let Some(b) = &k.block {
        let [x, y, z] = &b.grid;
        let [vx, vy, vz] = b.vars;
        let _ = write!(out, "\n  block %i{vx}, %i{vy}, %i{vz} in [{x}, {y}, {z}] threads {}", b.threads);
    }
    for (j, sh) in k.shared.iter().enumerate() {
        let _ = write!(out, "\n  shared %h{j} : {}[{}]", sh.elem.name(), sh.len);
    }
    let decls = k.tables.is_empty() && k.data.is_empty() && k.scratch.is_empty() && k.block.is_none();
    out.push_str(if decls { " {\n" } else { "\n{\n" });
    body(&mut out, &k.body, 1, Mems { np: k.params.len() as u32, nd: k.data.len() as u32, ns: k.scratch.len() as u32 });
    out.push_str("}\n");
    out
}

fn steps(out: &mut String, st: &[Step], depth: usize, kernels: &[Kernel]) {
    let pad = "  ".repeat(depth);
    for s in st {
        match s {
            Step::Call { kernel, args, label } => {
                let a: Vec<String> = args.iter().map(|b| format!("%b{b}")).collect();
                let name = kernels.get(*kernel as usize).map(|k| quote(&k.name)).unwrap_or_else(|| kernel.to_string());
                let label = label.as_deref().map(|l| format!(" label {}", quote(l))).unwrap_or_default();
                let _ = writeln!(out, "{pad}call @{name}({}){label}", a.join(", "));
            }
            Step::Bind { kernel, args, syms, label } => {
                let a: Vec<String> = args.iter().map(|b| format!("%b{b}")).collect();
                let name = kernels.get(*kernel as usize).map(|k| quote(&k.name)).unwrap_or_else(|| kernel.to_string());
                let label = label.as_deref().map(|l| format!(" label {}", quote(l))).unwrap_or_default();
                let _ = writeln!(out, "{pad}bind @{name}({}) -> ({}){label}", a.join(", "), syms.join(", "));
            }
            Step::Copy { dst, src } => {
                let _ = writeln!(out, "{pad}copy %b{dst}, %b{src}");
            }
            Step::If { cond, then, els } => {
                let _ = writeln!(out, "{pad}if %b{cond} {{");
                steps(out, then, depth + 1, kernels);
                let _ = writeln!(out, "{pad}}} else {{");
                steps(out, els, depth + 1, kernels);
                let _ = writeln!(out, "{pad}}}");
            }
            Step::Loop { count, index, cond, carried, scans, body } => {
                let c: Vec<String> = carried.iter().map(|(t, f)| format!("%b{t} <- %b{f}")).collect();
                let mut head = format!("{pad}loop {count}");
                if let Some(i) = index {
                    let _ = write!(head, " index %b{i}");
                }
                if let Some(c) = cond {
                    let _ = write!(head, " while %b{c}");
                }
                let _ = write!(head, " carry ({})", c.join(", "));
                if !scans.is_empty() {
                    let sc: Vec<String> = scans.iter().map(|(d, s)| format!("%b{d} <- %b{s}")).collect();
                    let _ = write!(head, " scan ({})", sc.join(", "));
                }
                let _ = writeln!(out, "{head} {{");
                steps(out, body, depth + 1, kernels);
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }
}

/// The text of a program. Constant buffers and kernels' constant arrays are written
/// inline as hex.
pub fn program(p: &Program) -> String {
    program_with(p, None)
}

/// The text of a program whose constants (buffers and kernels' arrays) of at least
/// `min` bytes are in a sidecar file named `file` (the program says `weights "FILE"`,
/// and each such constant `at OFFSET` into it), and that file's bytes: each constant
/// 64-byte aligned, identical ones stored once. With no such constant the text is
/// [`program`]'s and the bytes are empty. [`crate::parse::program_with_weights`] reads
/// it back.
pub fn program_split(p: &Program, file: &str, min: usize) -> (String, Vec<u8>) {
    let mut s = Sidecar { min: min.max(1), bytes: Vec::new(), at: Default::default() };
    let mut text = program_with(p, Some(&mut s));
    if !s.bytes.is_empty() {
        let header = text.find('\n').map_or(text.len(), |i| i + 1);
        text.insert_str(header, &format!("weights {}\n", quote(file)));
    }
    (text, s.bytes)
}

fn program_with(p: &Program, mut sidecar: Option<&mut Sidecar>) -> String {
    let mut out = format!("program {}\n", quote(&p.name));
    for s in &p.symbols {
        if let Some(max) = &s.data {
            let _ = writeln!(out, "symbol {} data max [{max}]", s.name);
        } else if s.computed {
            let _ = writeln!(out, "symbol {} computed", s.name);
        } else {
            let _ = writeln!(out, "symbol {} min {}", s.name, s.min);
        }
    }
    for (a, b) in &p.constraints {
        let _ = writeln!(out, "require [{a}] == [{b}]");
    }
    let _ = writeln!(out, "arena {}", p.arena_bytes);
    for (i, b) in p.buffers.iter().enumerate() {
        let kind = match &b.kind {
            BufKind::Input(n) => format!("input {n}"),
            BufKind::Output(n) => format!("output {n}"),
            BufKind::Arena(off) => format!("arena [{off}]"),
            BufKind::Const(_) => "const".to_string(),
        };
        let ty = b.ty.as_ref().map(|t| format!(" type {}", quote(t))).unwrap_or_default();
        let _ = write!(out, "buffer %b{i} {} {kind}{ty} bytes [{}]", quote(&b.name), b.bytes);
        if let BufKind::Const(data) = &b.kind {
            blob(&mut out, data, &mut sidecar, " data ");
        }
        out.push('\n');
    }
    for k in &p.kernels {
        let _ = write!(out, "\n{}", kernel_with(k, &mut sidecar));
    }
    if !p.prologue.is_empty() {
        let steps: Vec<String> = p.prologue.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(out, "prologue {}", steps.join(" "));
    }
    out.push_str("\nschedule {\n");
    steps(&mut out, &p.schedule, 1, &p.kernels);
    out.push_str("}\n");
    out
}
