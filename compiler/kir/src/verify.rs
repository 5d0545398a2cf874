//! The verifier: types every value, checks every operand is defined and in scope,
//! parameters and access modes, loop variables, and the schedule's buffer references.
//! Lowering runs it on every kernel it builds; translators may assume what it checks.
use crate::expr::{Atom, Expr};
use crate::ir::*;
use std::collections::HashMap;

/// A verifier error, naming the kernel and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel '{kernel}': {msg}")]
pub struct VerifyError {
    /// The kernel (or `schedule`).
    pub kernel: String,
    /// What is wrong.
    pub msg: String,
}

/// The types of a kernel's values and locals.
#[derive(Debug, Clone, Default)]
pub struct Types {
    /// Type of each `%vN`.
    pub vals: HashMap<ValId, Ty>,
    /// Type of each `%lN`.
    pub locals: HashMap<u32, Ty>,
}

impl Types {
    /// The type of value `v` (verified kernels define every value they use).
    pub fn of(&self, v: ValId) -> Ty {
        self.vals[&v]
    }
}

struct Cx<'k> {
    k: &'k Kernel,
    types: Types,
    /// Values, variables and locals in scope (a stack of scopes).
    scope_vals: Vec<Vec<ValId>>,
    scope_vars: Vec<u32>,
    scope_locals: Vec<Vec<u32>>,
    /// Inside a `threads` region: the depth of `scope_locals` where it starts.
    region: Option<usize>,
}

impl Cx<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, VerifyError> {
        Err(VerifyError { kernel: self.k.name.clone(), msg: msg.into() })
    }

    fn val(&self, v: ValId) -> Result<Ty, VerifyError> {
        if !self.scope_vals.iter().any(|s| s.contains(&v)) {
            return self.err(format!("%v{v} is used where it is not defined"));
        }
        Ok(self.types.vals[&v])
    }

    fn expr(&self, e: &Expr) -> Result<(), VerifyError> {
        let mut bad = None;
        e.visit_refs(&mut |a| match a {
            Atom::Var(n) if !self.scope_vars.contains(n) => {
                bad = Some(format!("%i{n} is not a loop variable in scope"))
            }
            Atom::Val(n) => match self.val(*n) {
                Ok(t) if t == Ty::scalar(Elem::I64) => {}
                Ok(t) => bad = Some(format!("%v{n} in an index is {t}, not i64")),
                Err(e) => bad = Some(e.msg),
            },
            Atom::Sym(s) if !valid_symbol(s) => bad = Some(format!("'{s}' is not a valid symbol name")),
            _ => {}
        });
        match bad {
            Some(m) => self.err(m),
            None => Ok(()),
        }
    }

    fn param(&self, p: u32, write: bool) -> Result<(), VerifyError> {
        match self.k.memory(p) {
            Some(Memory::Param(_)) if write && self.k.params[p as usize] == Access::Read => {
                self.err(format!("%p{p} is read-only and written"))
            }
            Some(Memory::Param(_)) => Ok(()),
            Some(Memory::Data(j)) if write => self.err(format!("constant array %d{j} is written")),
            Some(Memory::Data(j)) if self.k.data[j as usize].is_empty() => {
                self.err(format!("constant array %d{j} is empty"))
            }
            Some(Memory::Data(_)) => Ok(()),
            Some(Memory::Scratch(j)) if self.k.scratch[j as usize].len == 0 => {
                self.err(format!("scratch array %s{j} is empty"))
            }
            Some(Memory::Scratch(j)) if self.k.block.is_some() && self.region.is_none() => {
                self.err(format!("scratch array %s{j} is per thread: used outside a threads region"))
            }
            Some(Memory::Scratch(_)) => Ok(()),
            Some(Memory::Shared(j)) if self.k.shared[j as usize].len == 0 => {
                self.err(format!("shared array %h{j} is empty"))
            }
            Some(Memory::Shared(_)) => Ok(()),
            None => {
                let (np, nd) = (self.k.params.len() as u32, self.k.data.len() as u32);
                match p.checked_sub(np + nd) {
                    Some(j) if !self.k.scratch.is_empty() => self.err(format!("%s{j} is not a scratch array")),
                    _ => self.err(format!("%p{p} is not a parameter")),
                }
            }
        }
    }

    fn inst(&self, i: &Inst) -> Result<Ty, VerifyError> {
        use Inst::*;
        let int = |t: Ty| !t.elem.is_float();
        Ok(match i {
            Const { ty, lit } => {
                if matches!(lit, Lit::Float(_)) != ty.elem.is_float() {
                    return self.err(format!("constant {lit:?} does not fit {ty}"));
                }
                *ty
            }
            Index(e) => {
                self.expr(e)?;
                Ty::scalar(Elem::I64)
            }
            Load { ty, param, index, align, mask } => {
                self.param(*param, false)?;
                self.expr(index)?;
                if !align.is_power_of_two() {
                    return self.err(format!("alignment {align} is not a power of two"));
                }
                if let Some(m) = mask {
                    if self.val(*m)? != ty.with_elem(Elem::I1) {
                        return self.err(format!("the mask of a {ty} load must be i1x{}", ty.lanes));
                    }
                }
                *ty
            }
            Get(l) => match self.scope_locals.iter().any(|s| s.contains(l)) {
                true => self.types.locals[l],
                false => return self.err(format!("%l{l} is used where it is not declared")),
            },
            Bin(op, a, b) => {
                let (ta, tb) = (self.val(*a)?, self.val(*b)?);
                if ta != tb {
                    return self.err(format!("{} of {ta} and {tb}", op.name()));
                }
                let float_op = matches!(
                    op,
                    BinOp::FAdd
                        | BinOp::FSub
                        | BinOp::FMul
                        | BinOp::FDiv
                        | BinOp::FRem
                        | BinOp::FMin
                        | BinOp::FMax
                        | BinOp::CopySign
                );
                if float_op == int(ta) || (ta.elem == Elem::I1 && !matches!(op, BinOp::And | BinOp::Or | BinOp::Xor)) {
                    return self.err(format!("{} on {ta}", op.name()));
                }
                ta
            }
            Un(op, a) => {
                let t = self.val(*a)?;
                if matches!(op, UnOp::Neg | UnOp::Not) != int(t) {
                    return self.err(format!("{} on {t}", op.name()));
                }
                t
            }
            Fma(a, b, c) => {
                let t = self.val(*a)?;
                if self.val(*b)? != t || self.val(*c)? != t || int(t) {
                    return self.err("fma needs three operands of one float type");
                }
                t
            }
            Cmp(op, a, b) => {
                let (ta, tb) = (self.val(*a)?, self.val(*b)?);
                let float_op = op.name().starts_with('f');
                if ta != tb || float_op == int(ta) {
                    return self.err(format!("cmp {} of {ta} and {tb}", op.name()));
                }
                ta.with_elem(Elem::I1)
            }
            Select(c, a, b) => {
                let (tc, ta, tb) = (self.val(*c)?, self.val(*a)?, self.val(*b)?);
                if ta != tb || tc.elem != Elem::I1 || (tc.lanes != 1 && tc.lanes != ta.lanes) {
                    return self.err(format!("select {tc} between {ta} and {tb}"));
                }
                ta
            }
            Cast(op, a, to) => {
                let t = self.val(*a)?;
                let (fb, tb) = (t.elem.bits(), to.elem.bits());
                // A bitcast may regroup lanes (i32x8 to i8x32): the total width stays.
                let ok = if *op == CastOp::Bitcast {
                    fb * t.lanes == tb * to.lanes && t.elem != Elem::I1 && to.elem != Elem::I1
                } else {
                    t.lanes == to.lanes
                } && match op {
                    CastOp::Sext | CastOp::Zext => int(t) && int(*to) && tb > fb,
                    CastOp::Trunc => int(t) && int(*to) && tb < fb,
                    CastOp::FpExt => !int(t) && !int(*to) && tb > fb,
                    CastOp::FpTrunc => !int(t) && !int(*to) && tb < fb,
                    CastOp::FpToSiSat | CastOp::FpToUiSat | CastOp::FpToSi | CastOp::FpToUi => !int(t) && int(*to),
                    CastOp::SiToFp | CastOp::UiToFp => int(t) && !int(*to),
                    CastOp::Bitcast => true,
                };
                if !ok {
                    return self.err(format!("cast {} from {t} to {to}", op.name()));
                }
                *to
            }
            Splat(a, n) => {
                let t = self.val(*a)?;
                if t.lanes != 1 || *n == 0 {
                    return self.err(format!("splat of {t} x {n}"));
                }
                Ty::vec(t.elem, *n)
            }
            Extract(a, l) => {
                let t = self.val(*a)?;
                if *l >= t.lanes {
                    return self.err(format!("lane {l} of {t}"));
                }
                Ty::scalar(t.elem)
            }
            Insert(v, a, l) => {
                let (tv, ta) = (self.val(*v)?, self.val(*a)?);
                if *l >= tv.lanes || ta != Ty::scalar(tv.elem) {
                    return self.err(format!("insert {ta} into lane {l} of {tv}"));
                }
                tv
            }
            Shuffle(a, b, m) => {
                let (ta, tb) = (self.val(*a)?, self.val(*b)?);
                if ta != tb || m.is_empty() || m.iter().any(|&i| i >= 2 * ta.lanes) {
                    return self.err(format!("shuffle of {ta} and {tb} by {m:?}"));
                }
                Ty::vec(ta.elem, m.len() as u32)
            }
            Reduce(op, a) => {
                let t = self.val(*a)?;
                if matches!(op, ReduceOp::FAdd | ReduceOp::FMin | ReduceOp::FMax) == int(t) {
                    return self.err(format!("reduce {} of {t}", op.name()));
                }
                Ty::scalar(t.elem)
            }
            Call { args, ty, .. } => {
                for a in args {
                    self.val(*a)?;
                }
                *ty
            }
            Intrinsic { name, args, ty } => {
                let Some(known) = crate::intrinsic::find(name) else {
                    let names: Vec<&str> = crate::intrinsic::ALL.iter().map(|i| i.name).collect();
                    return self.err(format!("unknown intrinsic '{name}' (kir knows {})", names.join(", ")));
                };
                let got: Vec<Ty> = args.iter().map(|a| self.val(*a)).collect::<Result<_, _>>()?;
                if got != known.args || *ty != known.result {
                    let list = |t: &[Ty]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
                    return self.err(format!(
                        "intrinsic '{name}' takes ({}) -> {}, given ({}) -> {ty}",
                        list(known.args),
                        known.result,
                        list(&got)
                    ));
                }
                *ty
            }
            Opaque(a) => {
                let t = self.val(*a)?;
                if t != Ty::scalar(Elem::I64) {
                    return self.err(format!("opaque of {t} (i64 only)"));
                }
                t
            }
            BlockReduce { op, mem } => {
                let Some(b) = &self.k.block else { return self.err("blockreduce outside a block kernel") };
                if self.region.is_some() {
                    return self.err("blockreduce inside a threads region (it is block-uniform)");
                }
                if b.threads % 32 != 0 {
                    return self.err(format!("blockreduce over {} threads (a multiple of 32)", b.threads));
                }
                if !matches!(op, ReduceOp::FAdd | ReduceOp::FMin | ReduceOp::FMax) {
                    return self.err(format!("blockreduce {} (fadd, fmin or fmax)", op.name()));
                }
                match self.k.memory(*mem) {
                    Some(Memory::Scratch(j)) if self.k.scratch[j as usize].elem == Elem::F32 => Ty::scalar(Elem::F32),
                    _ => return self.err("blockreduce of a memory that is not an f32 scratch array"),
                }
            }
            Lookup { table, index } => {
                let t = self.val(*index)?;
                if t.lanes != 1 || t.elem.is_float() || t.elem == Elem::I1 {
                    return self.err(format!("lookup index of {t} (an integer scalar)"));
                }
                match self.k.tables.get(*table as usize) {
                    Some(tb) => Ty::scalar(tb.elem),
                    None => return self.err(format!("%t{table} is not a table of the kernel")),
                }
            }
        })
    }

    fn body(&mut self, b: &[Stmt]) -> Result<(), VerifyError> {
        self.scope_vals.push(Vec::new());
        self.scope_locals.push(Vec::new());
        for s in b {
            self.stmt(s)?;
        }
        self.scope_vals.pop();
        self.scope_locals.pop();
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), VerifyError> {
        match s {
            Stmt::Let(v, i) => {
                if self.types.vals.contains_key(v) {
                    return self.err(format!("%v{v} is defined twice"));
                }
                let t = self.inst(i)?;
                self.types.vals.insert(*v, t);
                self.scope_vals.last_mut().expect("scope").push(*v);
            }
            Stmt::Store { param, index, value, align, mask } => {
                self.param(*param, true)?;
                self.expr(index)?;
                let t = self.val(*value)?;
                if !align.is_power_of_two() {
                    return self.err(format!("alignment {align} is not a power of two"));
                }
                if let Some(m) = mask {
                    if self.val(*m)? != t.with_elem(Elem::I1) {
                        return self.err(format!("the mask of a {t} store must be i1x{}", t.lanes));
                    }
                }
            }
            Stmt::For { var, lo, hi, body, kind } => {
                self.expr(lo)?;
                self.expr(hi)?;
                if self.scope_vars.contains(var) {
                    return self.err(format!("%i{var} shadows an enclosing loop variable"));
                }
                match (kind, &self.k.block) {
                    (LoopKind::Threads, None) => return self.err("a threads loop outside a block kernel"),
                    (LoopKind::Threads, Some(_)) if self.region.is_some() => {
                        return self.err("a threads loop inside a threads region")
                    }
                    (LoopKind::Threads, Some(b))
                        if lo.as_const() != Some(0) || hi.as_const() != Some(b.threads as i64) =>
                    {
                        return self.err(format!("a threads loop runs from 0 to the block's {} threads", b.threads))
                    }
                    (LoopKind::Parallel | LoopKind::Each, Some(_)) => {
                        return self.err(format!("a {} loop in a block kernel", kind.name()))
                    }
                    _ => {}
                }
                let outer = self.region;
                if *kind == LoopKind::Threads {
                    self.region = Some(self.scope_locals.len());
                }
                self.scope_vars.push(*var);
                self.body(body)?;
                self.scope_vars.pop();
                self.region = outer;
            }
            Stmt::If { cond, then, els } => {
                if self.val(*cond)? != Ty::scalar(Elem::I1) {
                    return self.err(format!("the condition %v{cond} is not an i1"));
                }
                self.body(then)?;
                self.body(els)?;
            }
            Stmt::Local(l, ty, init) => {
                if self.types.locals.contains_key(l) {
                    return self.err(format!("%l{l} is declared twice"));
                }
                if self.val(*init)? != *ty {
                    return self.err(format!("%l{l} : {ty} initialised with a {}", self.val(*init)?));
                }
                self.types.locals.insert(*l, *ty);
                self.scope_locals.last_mut().expect("scope").push(*l);
            }
            Stmt::Set(l, v) => {
                let Some(depth) = self.scope_locals.iter().position(|s| s.contains(l)) else {
                    return self.err(format!("%l{l} is set where it is not declared"));
                };
                if self.region.is_some_and(|r| depth < r) {
                    return self.err(format!("%l{l} is block-uniform and set inside a threads region"));
                }
                if self.val(*v)? != self.types.locals[l] {
                    return self.err(format!("%l{l} set to a {}", self.val(*v)?));
                }
            }
            Stmt::Memcpy { dst, dst_off, src, src_off, bytes } => {
                self.param(*dst, true)?;
                self.param(*src, false)?;
                for e in [dst_off, src_off, bytes] {
                    self.expr(e)?;
                }
            }
        }
        Ok(())
    }
}

/// Whether `s` can be a symbol's name in the text form.
pub fn valid_symbol(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(s, "floordiv" | "mod" | "min" | "max")
}

/// Verifies a kernel and returns the types of its values.
pub fn kernel(k: &Kernel) -> Result<Types, VerifyError> {
    let mut cx = Cx {
        k,
        types: Types::default(),
        scope_vals: Vec::new(),
        scope_vars: Vec::new(),
        scope_locals: Vec::new(),
        region: None,
    };
    for (i, t) in k.tables.iter().enumerate() {
        if t.elem == Elem::I1 || t.values.iter().any(|v| matches!(v, Lit::Float(_)) != t.elem.is_float()) {
            return cx.err(format!("table %t{i} '{}' holds literals that are not {}", t.name, t.elem.name()));
        }
        if k.tables[..i].iter().any(|o| o.name == t.name) {
            return cx.err(format!("table name '{}' is declared twice", t.name));
        }
    }
    match &k.block {
        Some(b) => {
            for e in &b.grid {
                cx.expr(e)?;
            }
            if !(1..=1024).contains(&b.threads) {
                return cx.err(format!("{} threads per block (1 to 1024)", b.threads));
            }
            if b.vars.iter().enumerate().any(|(i, v)| b.vars[..i].contains(v)) {
                return cx.err("the block's index variables must differ");
            }
            cx.scope_vars.extend(b.vars);
        }
        None if !k.shared.is_empty() => return cx.err("shared arrays outside a block kernel"),
        None => {}
    }
    cx.body(&k.body)?;
    Ok(cx.types)
}

/// Verifies every kernel and the schedule of a program.
pub fn program(p: &Program) -> Result<(), VerifyError> {
    let err = |msg: String| Err(VerifyError { kernel: "schedule".into(), msg });
    for s in &p.symbols {
        if !valid_symbol(&s.name) {
            return err(format!("'{}' is not a valid symbol name", s.name));
        }
    }
    // Computed symbols are bound by top-level `bind` steps of the prologue.
    if p.prologue.windows(2).any(|w| w[0] >= w[1]) || p.prologue.iter().any(|&i| i as usize >= p.schedule.len()) {
        return err(format!("prologue steps {:?} must ascend within the schedule's {}", p.prologue, p.schedule.len()));
    }
    for s in p.symbols.iter().filter(|s| s.computed) {
        if s.data.is_some() {
            return err(format!("{} is both a computed and a bounded data symbol", s.name));
        }
        let binds = |st: &Step| matches!(st, Step::Bind { syms, .. } if syms.contains(&s.name));
        let at = p.schedule.iter().position(binds);
        if !at.is_some_and(|i| p.prologue.contains(&(i as u32))) {
            return err(format!("computed symbol {} is not bound by a top-level bind step of the prologue", s.name));
        }
    }
    let mut names = std::collections::HashSet::new();
    for k in &p.kernels {
        kernel(k)?;
        if !names.insert(&k.name) {
            return err(format!("two kernels are named '{}'", k.name));
        }
    }
    fn steps(p: &Program, st: &[Step]) -> Result<(), String> {
        let buf = |b: u32| match p.buffers.get(b as usize) {
            Some(_) => Ok(()),
            None => Err(format!("%b{b} is not a buffer")),
        };
        for s in st {
            match s {
                Step::Call { kernel, args, .. } => {
                    let k = p.kernels.get(*kernel as usize).ok_or(format!("no kernel {kernel}"))?;
                    if k.params.len() != args.len() {
                        return Err(format!(
                            "'{}' takes {} buffers, called with {}",
                            k.name,
                            k.params.len(),
                            args.len()
                        ));
                    }
                    for (a, acc) in args.iter().zip(&k.params) {
                        buf(*a)?;
                        let kind = &p.buffers[*a as usize].kind;
                        if *acc == Access::Write && matches!(kind, BufKind::Input(_) | BufKind::Const(_)) {
                            return Err(format!("'{}' writes %b{a}, an input or constant", k.name));
                        }
                    }
                }
                Step::Bind { kernel, args, syms, .. } => {
                    let k = p.kernels.get(*kernel as usize).ok_or(format!("no kernel {kernel}"))?;
                    if k.params.len() != args.len() + 1 || k.params.last() != Some(&Access::Write) {
                        return Err(format!(
                            "bind: '{}' must take {} buffers and write a result array last",
                            k.name,
                            args.len() + 1
                        ));
                    }
                    for a in args {
                        buf(*a)?;
                    }
                    for s in syms.iter().filter(|s| *s != "_") {
                        if !p.symbols.iter().any(|x| (x.data.is_some() || x.computed) && x.name == *s) {
                            return Err(format!("bind: {s} is not a data symbol of the program"));
                        }
                    }
                }
                Step::Copy { dst, src } => {
                    buf(*dst)?;
                    buf(*src)?;
                }
                Step::If { cond, then, els } => {
                    buf(*cond)?;
                    steps(p, then)?;
                    steps(p, els)?;
                }
                Step::Loop { index, cond, carried, scans, body, .. } => {
                    for b in index.iter().chain(cond) {
                        buf(*b)?;
                    }
                    for (t, f) in carried.iter().chain(scans) {
                        buf(*t)?;
                        buf(*f)?;
                    }
                    steps(p, body)?;
                }
            }
        }
        Ok(())
    }
    steps(p, &p.schedule).or_else(err)
}
