//! A kir [`Program`] to a native object: each kernel translated by `kir.rs` into an
//! internal function (the signature of the graph path's kernels: its pointers, then the
//! pool's `pfor` and state), constant buffers as private 64-byte aligned globals, and
//! the C entry points with `run_threaded` generated from the program's schedule: calls
//! with buffer pointers, copies, `if` on a byte of a buffer and counted `loop`s that
//! copy their carried buffers after each iteration.
//!
//! This is how `dlc compile` builds a CPU artifact, from a graph (through
//! `dlc_lower::program`) or from a `.kir` file.
//!
//! A program with symbols (run-time dims) gets its schedule in `run_dims`, which reads
//! the dims from its `dims` array, checks each against its minimum, and computes arena
//! offsets, copy sizes and trip counts from them; kernels that mention a symbol take the
//! `dims` pointer after their own parameters. `workspace_size_dims` evaluates the arena
//! size; `run` and `run_threaded` return [`abi::STATUS_NEEDS_DIMS`]. A program without
//! symbols keeps its schedule in `run_threaded` exactly as before, and its `run_dims`
//! and `workspace_size_dims` ignore the dims.
use crate::kernel::Kb;
use crate::CodegenError;
use dlc_artifact::abi;
use dlc_kir::expr::Atom;
use dlc_kir::{BufKind, Expr, Program, Step};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::values::{FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use std::collections::HashMap;

type R<T> = Result<T, CodegenError>;

fn bad(msg: impl Into<String>) -> CodegenError {
    CodegenError::Llvm(msg.into())
}

fn constant(p: &Program, e: &Expr, what: &str) -> R<u64> {
    match e.as_const() {
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(bad(format!("program '{}': {what} is {n}", p.name))),
        None => Err(bad(format!(
            "program '{}': {what} is {e}, which needs run-time dims (symbolic programs are not compiled yet)",
            p.name
        ))),
    }
}

/// An atom of an expression with its operands replaced by their numbers in [`Values`].
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Sym(String),
    Div(u32, u32),
    Mod(u32, u32),
    Min(u32, u32),
    Max(u32, u32),
}

/// The index expressions of an entry point (over the program's symbols, floor division
/// and modulo as kir defines them), each distinct sub-expression built once. Sizes and
/// offsets nest one another (the arena's size is a maximum over every buffer's, whose
/// dims repeat the same floor divisions): built as trees, Swin-T's entry points came to
/// 55 million instructions and two minutes of LLVM. So every expression gets a number,
/// found by its shared storage first and by its structure (atoms over its operands'
/// numbers) otherwise, and its value is reused wherever it dominates: [`Values::enter`]
/// and [`Values::leave`] bracket a branch or a loop body, whose values end with it, and
/// [`Values::forget`] drops them all when a `bind` gives a symbol a new value.
struct Values<'ctx> {
    /// Storage address to number; the expression is kept so that its address stays its own.
    by_storage: HashMap<usize, (u32, Expr)>,
    /// Structure (monomials of keys, coefficients) to number.
    numbers: HashMap<Vec<(Vec<Key>, i64)>, u32>,
    /// Built values by scope, the innermost last: expressions by number, atoms by key.
    scopes: Vec<HashMap<Result<u32, Key>, IntValue<'ctx>>>,
}

impl Default for Values<'_> {
    /// No expressions yet, and the function's outermost scope.
    fn default() -> Self {
        Values { by_storage: HashMap::new(), numbers: HashMap::new(), scopes: vec![HashMap::new()] }
    }
}

impl<'ctx> Values<'ctx> {
    fn number(&mut self, e: &Expr) -> u32 {
        if let Some((n, _)) = self.by_storage.get(&e.storage_id()) {
            return *n;
        }
        let mut shape = Vec::new();
        for (atoms, c) in e.terms() {
            let mut keys = Vec::with_capacity(atoms.len());
            for a in atoms {
                keys.push(self.key(a));
            }
            shape.push((keys, c));
        }
        let next = self.numbers.len() as u32;
        let n = *self.numbers.entry(shape).or_insert(next);
        self.by_storage.insert(e.storage_id(), (n, e.clone()));
        n
    }

    fn key(&mut self, a: &Atom) -> Key {
        match a {
            Atom::Sym(s) => Key::Sym(s.clone()),
            Atom::Div(x, y) => Key::Div(self.number(x), self.number(y)),
            Atom::Mod(x, y) => Key::Mod(self.number(x), self.number(y)),
            Atom::Min(x, y) => Key::Min(self.number(x), self.number(y)),
            Atom::Max(x, y) => Key::Max(self.number(x), self.number(y)),
            // Loop variables and kernel values have no place in an entry point; the
            // builder reports them.
            Atom::Var(v) => Key::Sym(format!("%i{v}")),
            Atom::Val(v) => Key::Sym(format!("%v{v}")),
        }
    }

    fn get(&self, k: &Result<u32, Key>) -> Option<IntValue<'ctx>> {
        self.scopes.iter().rev().find_map(|s| s.get(k).copied())
    }

    fn put(&mut self, k: Result<u32, Key>, v: IntValue<'ctx>) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(k, v);
        }
    }

    /// Values built from here on end at the matching [`Values::leave`].
    fn enter(&mut self) {
        self.scopes.push(HashMap::new());
    }

    /// Ends the innermost scope (never the function's outermost).
    fn leave(&mut self) {
        if self.scopes.len() > 1 {
            self.scopes.pop();
        }
    }

    /// A symbol's value changed: nothing built so far may be reused.
    fn forget(&mut self) {
        for s in &mut self.scopes {
            s.clear();
        }
    }

    /// `e` at the symbols' values `syms`, as an `i64`.
    fn build(
        &mut self,
        cx: &'ctx Context,
        b: &Builder<'ctx>,
        e: &Expr,
        syms: &HashMap<String, IntValue<'ctx>>,
    ) -> R<IntValue<'ctx>> {
        let i64t = cx.i64_type();
        if let Some(c) = e.as_const() {
            return Ok(i64t.const_int(c as u64, true));
        }
        let n = Ok(self.number(e));
        if let Some(v) = self.get(&n) {
            return Ok(v);
        }
        let mut acc: Option<IntValue<'ctx>> = None;
        for (atoms, c) in e.terms() {
            let mut t: Option<IntValue<'ctx>> = None;
            for a in atoms {
                let v = self.atom(cx, b, a, syms)?;
                t = Some(match t {
                    None => v,
                    Some(t) => b.build_int_mul(t, v, "")?,
                });
            }
            let c = i64t.const_int(c as u64, true);
            let t = match t {
                None => c,
                Some(t) if c.get_sign_extended_constant() == Some(1) => t,
                Some(t) => b.build_int_mul(t, c, "")?,
            };
            acc = Some(match acc {
                None => t,
                Some(acc) => b.build_int_add(acc, t, "")?,
            });
        }
        let v = acc.unwrap_or_else(|| i64t.const_zero());
        self.put(n, v);
        Ok(v)
    }

    /// Atom `a` (a symbol, a floor division, a modulo, a minimum or a maximum).
    fn atom(
        &mut self,
        cx: &'ctx Context,
        b: &Builder<'ctx>,
        a: &Atom,
        syms: &HashMap<String, IntValue<'ctx>>,
    ) -> R<IntValue<'ctx>> {
        let i64t = cx.i64_type();
        let (x, y) = match a {
            Atom::Sym(s) => {
                return syms.get(s).copied().ok_or_else(|| bad(format!("symbol {s} is not a run-time dim")));
            }
            Atom::Var(_) | Atom::Val(_) => return Err(bad(format!("{a:?}: loop variables outside a kernel"))),
            Atom::Div(x, y) | Atom::Mod(x, y) | Atom::Min(x, y) | Atom::Max(x, y) => (x, y),
        };
        let k = Err(self.key(a));
        if let Some(v) = self.get(&k) {
            return Ok(v);
        }
        let const_divisor = y.as_const().is_some_and(|c| c != 0);
        let (x, y) = (self.build(cx, b, x, syms)?, self.build(cx, b, y, syms)?);
        let v = match a {
            Atom::Div(..) | Atom::Mod(..) => {
                // A divisor of run-time dims may be 0 (computed dims are 0 when sizing the
                // workspace shape_values() fills in): 0, never a division fault.
                let zero = i64t.const_zero();
                let by_zero = b.build_int_compare(IntPredicate::EQ, y, zero, "")?;
                let y = if const_divisor {
                    y
                } else {
                    b.build_select(by_zero, i64t.const_int(1, false), y, "")?.into_int_value()
                };
                let q = b.build_int_signed_div(x, y, "")?;
                let r = b.build_int_signed_rem(x, y, "")?;
                let nz = b.build_int_compare(IntPredicate::NE, r, zero, "")?;
                let sr = b.build_int_compare(IntPredicate::SLT, r, zero, "")?;
                let sy = b.build_int_compare(IntPredicate::SLT, y, zero, "")?;
                let adj = b.build_and(nz, b.build_xor(sr, sy, "")?, "")?;
                let v = if matches!(a, Atom::Div(..)) {
                    b.build_int_sub(q, b.build_int_z_extend(adj, i64t, "")?, "")?
                } else {
                    b.build_select(adj, b.build_int_add(r, y, "")?, r, "")?.into_int_value()
                };
                if const_divisor {
                    v
                } else {
                    b.build_select(by_zero, zero, v, "")?.into_int_value()
                }
            }
            _ => {
                let pr = if matches!(a, Atom::Min(..)) { IntPredicate::SLT } else { IntPredicate::SGT };
                b.build_select(b.build_int_compare(pr, x, y, "")?, x, y, "")?.into_int_value()
            }
        };
        self.put(k, v);
        Ok(v)
    }
}

/// `e` (a size in bytes) at the run-time dims `syms`, and whether computing it overflowed
/// or gave a negative value: products and sums use LLVM's overflow intrinsics (inside
/// a division, minimum or maximum the operands are computed as by [`Values::build`]).
fn build_size_checked<'ctx>(
    cx: &'ctx Context,
    b: &Builder<'ctx>,
    module: &Module<'ctx>,
    e: &Expr,
    syms: &HashMap<String, IntValue<'ctx>>,
    values: &mut Values<'ctx>,
) -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
    let i64t = cx.i64_type();
    let op = |name: &str,
              x: IntValue<'ctx>,
              y: IntValue<'ctx>,
              ovf: IntValue<'ctx>|
     -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
        let f = inkwell::intrinsics::Intrinsic::find(name)
            .and_then(|i| i.get_declaration(module, &[i64t.into()]))
            .ok_or_else(|| bad(format!("no intrinsic {name}")))?;
        let r = b.build_call(f, &[x.into(), y.into()], "")?.try_as_basic_value().basic().ok_or_else(|| bad(name))?;
        let r = r.into_struct_value();
        let v = b.build_extract_value(r, 0, "")?.into_int_value();
        let o = b.build_extract_value(r, 1, "")?.into_int_value();
        Ok((v, b.build_or(ovf, o, "")?))
    };
    let mut ovf = cx.bool_type().const_zero();
    let mut acc = i64t.const_zero();
    for (atoms, c) in e.terms() {
        let mut t = i64t.const_int(c as u64, true);
        for a in atoms {
            let v = values.atom(cx, b, a, syms)?;
            (t, ovf) = op("llvm.smul.with.overflow", t, v, ovf)?;
        }
        (acc, ovf) = op("llvm.sadd.with.overflow", acc, t, ovf)?;
    }
    let neg = b.build_int_compare(IntPredicate::SLT, acc, i64t.const_zero(), "")?;
    Ok((acc, b.build_or(ovf, neg, "")?))
}

/// Loads `dims[i]` for every symbol of `p` and branches to a block returning `fail`
/// (an `i32` or `i64` constant) when one is below its minimum or a constraint fails.
/// With `computed_zero`, computed symbols are 0 instead (the prologue, which computes
/// them, lays the arena out that way). Returns the symbols' values and the expressions
/// the checks built (which dominate the rest of the function).
fn load_dims<'ctx>(
    cx: &'ctx Context,
    b: &Builder<'ctx>,
    f: FunctionValue<'ctx>,
    p: &Program,
    dims: PointerValue<'ctx>,
    fail: inkwell::values::BasicValueEnum<'ctx>,
    computed_zero: bool,
) -> R<(HashMap<String, IntValue<'ctx>>, Values<'ctx>)> {
    let i64t = cx.i64_type();
    let mut values = Values::default();
    let mut syms = HashMap::new();
    let bad_dims = cx.append_basic_block(f, "bad_dims");
    for (i, s) in p.symbols.iter().enumerate() {
        if s.data.is_some() {
            // Bound by the schedule's `bind` steps.
            continue;
        }
        if s.computed && computed_zero {
            syms.insert(s.name.clone(), i64t.const_zero());
            continue;
        }
        let at = unsafe { b.build_in_bounds_gep(i64t, dims, &[i64t.const_int(i as u64, false)], "")? };
        let v = b.build_load(i64t, at, &s.name)?.into_int_value();
        let ok = b.build_int_compare(IntPredicate::SGE, v, i64t.const_int(s.min as u64, true), "")?;
        let next = cx.append_basic_block(f, "dim_ok");
        b.build_conditional_branch(ok, next, bad_dims)?;
        b.position_at_end(next);
        syms.insert(s.name.clone(), v);
    }
    for (lhs, rhs) in &p.constraints {
        if computed_zero && mentions_computed(p, lhs, rhs) {
            // The prologue computes those dims; the run checks the values it was given.
            continue;
        }
        let (l, r) = (values.build(cx, b, lhs, &syms)?, values.build(cx, b, rhs, &syms)?);
        let ok = b.build_int_compare(IntPredicate::EQ, l, r, "")?;
        let next = cx.append_basic_block(f, "constraint_ok");
        b.build_conditional_branch(ok, next, bad_dims)?;
        b.position_at_end(next);
    }
    let here = b.get_insert_block().ok_or_else(|| bad("no insert block"))?;
    b.position_at_end(bad_dims);
    b.build_return(Some(&fail))?;
    b.position_at_end(here);
    Ok((syms, values))
}

/// Whether a constraint `lhs == rhs` of `p` mentions a computed symbol.
fn mentions_computed(p: &Program, lhs: &Expr, rhs: &Expr) -> bool {
    let mut syms = Vec::new();
    lhs.symbols(&mut syms);
    rhs.symbols(&mut syms);
    syms.iter().any(|n| p.symbols.iter().any(|s| s.computed && &s.name == n))
}

/// What the schedule's code needs while it is emitted.
struct Sched<'a, 'ctx> {
    cx: &'ctx Context,
    b: Builder<'ctx>,
    run: FunctionValue<'ctx>,
    p: &'a Program,
    kernels: Vec<FunctionValue<'ctx>>,
    /// Whether each kernel takes the `dims` pointer.
    takes_dims: Vec<bool>,
    bufs: Vec<PointerValue<'ctx>>,
    pool: [PointerValue<'ctx>; 2],
    /// The `dims` array kernels read (the caller's, or with data symbols a local copy
    /// that `bind` steps write) and the symbols' values (a program with symbols).
    dims: Option<PointerValue<'ctx>>,
    syms: std::cell::RefCell<HashMap<String, IntValue<'ctx>>>,
    /// The expressions built so far (see [`Values`]).
    values: std::cell::RefCell<Values<'ctx>>,
    /// The next `bind` step's site number (its failure status).
    site: std::cell::Cell<usize>,
    /// Whether this is the prologue (`shape_values`): computed symbols' binds store
    /// their values in the dims array only (the steps keep computing with 0); in the
    /// run, they check the value the caller gave.
    prologue: bool,
}

impl<'ctx> Sched<'_, 'ctx> {
    /// The pointer of every buffer of the program, computed at the function's entry:
    /// the caller's inputs and outputs (`outs` `None`: outputs are null, for the
    /// prologue), arena slices at their offsets, and the constants' globals.
    fn buffer_pointers(
        &self,
        ins: PointerValue<'ctx>,
        outs: Option<PointerValue<'ctx>>,
        ws: PointerValue<'ctx>,
        consts: &HashMap<usize, PointerValue<'ctx>>,
    ) -> R<Vec<PointerValue<'ctx>>> {
        let (b, i64t, i8t) = (&self.b, self.cx.i64_type(), self.cx.i8_type());
        let ptr = self.cx.ptr_type(AddressSpace::default());
        let slot = |arr: PointerValue<'ctx>, n: u32, name: &str| -> R<PointerValue<'ctx>> {
            let at = unsafe { b.build_in_bounds_gep(ptr, arr, &[i64t.const_int(n as u64, false)], name)? };
            Ok(b.build_load(ptr, at, name)?.into_pointer_value())
        };
        let mut bufs = Vec::with_capacity(self.p.buffers.len());
        for (i, buf) in self.p.buffers.iter().enumerate() {
            bufs.push(match &buf.kind {
                BufKind::Input(n) => slot(ins, *n, &format!("in{n}"))?,
                BufKind::Output(n) => match outs {
                    Some(o) => slot(o, *n, &format!("out{n}"))?,
                    None => ptr.const_null(),
                },
                BufKind::Arena(off) => {
                    let off = self.value(off, &format!("the arena offset of buffer '{}'", buf.name))?;
                    unsafe { b.build_in_bounds_gep(i8t, ws, &[off], "arena")? }
                }
                // A constant its kernels only read through packed copies: never touched.
                BufKind::Const(data) if data.is_empty() => ptr.const_null(),
                BufKind::Const(_) => consts[&i],
            });
        }
        Ok(bufs)
    }

    fn value(&self, e: &Expr, what: &str) -> R<IntValue<'ctx>> {
        if self.dims.is_none() {
            return Ok(self.cx.i64_type().const_int(constant(self.p, e, what)?, false));
        }
        self.values.borrow_mut().build(self.cx, &self.b, e, &self.syms.borrow())
    }

    /// A `bind` step: the kernel fills a result array; a nonzero code returns the
    /// site's status, otherwise the symbols take the values (in the local dims array
    /// that later kernels read, and in the values later steps compute with).
    fn bind(&self, kernel: u32, args: &[u32], names: &[String]) -> R<()> {
        let (cx, b) = (self.cx, &self.b);
        let i64t = cx.i64_type();
        let res = b.build_array_alloca(i64t, i64t.const_int(names.len() as u64 + 1, false), "bind")?;
        let mut a: Vec<inkwell::values::BasicMetadataValueEnum> =
            args.iter().map(|b| self.bufs[*b as usize].into()).collect();
        a.push(res.into());
        // A check binds nothing and may run in a program without symbols.
        let dims = || self.dims.ok_or_else(|| bad("a bind step in a program without symbols"));
        if self.takes_dims[kernel as usize] {
            a.push(dims()?.into());
        }
        a.push(self.pool[0].into());
        a.push(self.pool[1].into());
        b.build_call(self.kernels[kernel as usize], &a, "")?;
        let at = |j: usize| unsafe { b.build_in_bounds_gep(i64t, res, &[i64t.const_int(j as u64, false)], "") };
        let code = b.build_load(i64t, at(names.len())?, "code")?.into_int_value();
        let failed = b.build_int_compare(IntPredicate::NE, code, i64t.const_zero(), "")?;
        let (fail, ok) = (cx.append_basic_block(self.run, "bind_fail"), cx.append_basic_block(self.run, "bind_ok"));
        b.build_conditional_branch(failed, fail, ok)?;
        b.position_at_end(fail);
        let site = self.site.get();
        self.site.set(site + 1);
        let i32t = cx.i32_type();
        let fifteen = i64t.const_int(15, false);
        let big = b.build_int_compare(IntPredicate::UGT, code, fifteen, "")?;
        let reason = b.build_select(big, fifteen, code, "")?.into_int_value();
        let reason = b.build_int_truncate(reason, i32t, "")?;
        let base = i32t.const_int((abi::STATUS_BIND + 16 * site as i32) as u64, true);
        b.build_return(Some(&b.build_int_add(base, reason, "")?))?;
        b.position_at_end(ok);
        if names.is_empty() {
            return Ok(());
        }
        let dims = dims()?;
        for (j, name) in names.iter().enumerate().filter(|(_, n)| *n != "_") {
            let v = b.build_load(i64t, at(j)?, name)?.into_int_value();
            let i =
                self.p.symbols.iter().position(|s| &s.name == name).ok_or_else(|| bad(format!("bind of {name}")))?;
            if self.p.symbols[i].computed && !self.prologue {
                // The caller's value (from shape_values) sized the buffers: it must agree.
                let given = *self.syms.borrow().get(name).ok_or_else(|| bad(format!("computed dim {name}")))?;
                let same = b.build_int_compare(IntPredicate::EQ, v, given, "")?;
                let (differs, next) =
                    (cx.append_basic_block(self.run, "dims_differ"), cx.append_basic_block(self.run, "dims_agree"));
                b.build_conditional_branch(same, next, differs)?;
                b.position_at_end(differs);
                b.build_return(Some(&i32t.const_int(abi::STATUS_BAD_DIMS as u64, true)))?;
                b.position_at_end(next);
                continue;
            }
            let slot = unsafe { b.build_in_bounds_gep(i64t, dims, &[i64t.const_int(i as u64, false)], "")? };
            b.build_store(slot, v)?;
            if !self.p.symbols[i].computed {
                self.syms.borrow_mut().insert(name.clone(), v);
                self.values.borrow_mut().forget();
            }
        }
        Ok(())
    }

    fn copy(&self, dst: u32, src: u32) -> R<()> {
        let buf = &self.p.buffers[dst as usize];
        let n = self.value(&buf.bytes, &format!("the size of buffer '{}'", buf.name))?;
        self.b.build_memcpy(self.bufs[dst as usize], 1, self.bufs[src as usize], 1, n)?;
        Ok(())
    }

    fn steps(&self, steps: &[Step]) -> R<()> {
        let i64t = self.cx.i64_type();
        for s in steps {
            match s {
                Step::Call { kernel, args, .. } => {
                    let mut a: Vec<inkwell::values::BasicMetadataValueEnum> =
                        args.iter().map(|b| self.bufs[*b as usize].into()).collect();
                    if self.takes_dims[*kernel as usize] {
                        a.push(self.dims.ok_or_else(|| bad("a kernel takes run-time dims the program lacks"))?.into());
                    }
                    a.push(self.pool[0].into());
                    a.push(self.pool[1].into());
                    self.b.build_call(self.kernels[*kernel as usize], &a, "")?;
                }
                Step::Bind { kernel, args, syms, .. } => self.bind(*kernel, args, syms)?,
                Step::Copy { dst, src } => self.copy(*dst, *src)?,
                Step::If { cond, then, els } => {
                    let flag = self.b.build_load(self.cx.i8_type(), self.bufs[*cond as usize], "flag")?;
                    let zero = self.cx.i8_type().const_zero();
                    let c = self.b.build_int_compare(IntPredicate::NE, flag.into_int_value(), zero, "")?;
                    let (tb, eb, done) = (
                        self.cx.append_basic_block(self.run, "then"),
                        self.cx.append_basic_block(self.run, "else"),
                        self.cx.append_basic_block(self.run, "endif"),
                    );
                    self.b.build_conditional_branch(c, tb, eb)?;
                    self.b.position_at_end(tb);
                    self.values.borrow_mut().enter();
                    self.steps(then)?;
                    self.values.borrow_mut().leave();
                    self.b.build_unconditional_branch(done)?;
                    self.b.position_at_end(eb);
                    self.values.borrow_mut().enter();
                    self.steps(els)?;
                    self.values.borrow_mut().leave();
                    self.b.build_unconditional_branch(done)?;
                    self.b.position_at_end(done);
                }
                Step::Loop { count, index, cond, carried, scans, body } => {
                    let n = self.value(count, "a loop's trip count")?;
                    let pre = self.b.get_insert_block().ok_or_else(|| bad("no insert block"))?;
                    let (head, lb, done) = (
                        self.cx.append_basic_block(self.run, "loop"),
                        self.cx.append_basic_block(self.run, "body"),
                        self.cx.append_basic_block(self.run, "endloop"),
                    );
                    self.b.build_unconditional_branch(head)?;
                    self.b.position_at_end(head);
                    let i = self.b.build_phi(i64t, "iter")?;
                    i.add_incoming(&[(&i64t.const_zero(), pre)]);
                    let iv = i.as_basic_value().into_int_value();
                    let more = self.b.build_int_compare(IntPredicate::SLT, iv, n, "")?;
                    let more = match cond {
                        Some(c) => {
                            let flag = self.b.build_load(self.cx.i8_type(), self.bufs[*c as usize], "flag")?;
                            let zero = self.cx.i8_type().const_zero();
                            let go = self.b.build_int_compare(IntPredicate::NE, flag.into_int_value(), zero, "")?;
                            self.b.build_and(more, go, "")?
                        }
                        None => more,
                    };
                    self.b.build_conditional_branch(more, lb, done)?;
                    self.b.position_at_end(lb);
                    if let Some(b) = index {
                        self.b.build_store(self.bufs[*b as usize], iv)?;
                    }
                    self.values.borrow_mut().enter();
                    self.steps(body)?;
                    for (dst, src) in scans {
                        let buf = &self.p.buffers[*src as usize];
                        let size = self.value(&buf.bytes, &format!("the size of buffer '{}'", buf.name))?;
                        let at = self.b.build_int_mul(iv, size, "")?;
                        // SAFETY of the offset: `dst` holds `count` slots of `size` bytes
                        // (the lowering sizes it so), and `iv < count`.
                        let slot =
                            unsafe { self.b.build_gep(self.cx.i8_type(), self.bufs[*dst as usize], &[at], "slot")? };
                        self.b.build_memcpy(slot, 1, self.bufs[*src as usize], 1, size)?;
                    }
                    for (to, from) in carried {
                        self.copy(*to, *from)?;
                    }
                    self.values.borrow_mut().leave();
                    let next = self.b.build_int_add(iv, i64t.const_int(1, false), "")?;
                    let end = self.b.get_insert_block().ok_or_else(|| bad("no insert block"))?;
                    i.add_incoming(&[(&next, end)]);
                    self.b.build_unconditional_branch(head)?;
                    self.b.position_at_end(done);
                }
            }
        }
        Ok(())
    }
}

/// The `shape_values` entry point: the program's prologue steps, with computed
/// symbols 0 for the arena's layout, writing the computed symbols into the caller's
/// `dims` (see [`abi::SHAPE_VALUES`]); a program without them returns 0 at once. `run`
/// is the finished run function (its kernels, pool and constants are shared).
fn emit_prologue<'ctx>(
    run: &Sched<'_, 'ctx>,
    module: &Module<'ctx>,
    prefix: &str,
    consts: &HashMap<usize, PointerValue<'ctx>>,
) -> R<()> {
    let (cx, p) = (run.cx, run.p);
    let (i32t, i64t) = (cx.i32_type(), cx.i64_type());
    let f =
        module.add_function(&abi::symbol(prefix, &abi::SHAPE_VALUES), crate::abi_fn_type(cx, &abi::SHAPE_VALUES), None);
    let b = cx.create_builder();
    b.position_at_end(cx.append_basic_block(f, "entry"));
    if p.prologue.is_empty() {
        b.build_return(Some(&i32t.const_zero()))?;
        return Ok(());
    }
    let param = |i: u32| -> R<PointerValue<'ctx>> {
        Ok(f.get_nth_param(i).ok_or_else(|| bad("shape_values parameter"))?.into_pointer_value())
    };
    let (ins, ws, caller, pool) = (param(0)?, param(1)?, param(2)?, [param(3)?, param(4)?]);
    let fail = i32t.const_int(abi::STATUS_BAD_DIMS as u64, true).into();
    let (syms, values) = load_dims(cx, &b, f, p, caller, fail, true)?;
    let n = i64t.const_int(p.symbols.len() as u64, false);
    let local = b.build_array_alloca(i64t, n, "dims")?;
    b.build_memcpy(local, 8, caller, 8, i64t.const_int(8 * p.symbols.len() as u64, false))?;
    let mut s = Sched {
        cx,
        b,
        run: f,
        p,
        kernels: run.kernels.clone(),
        takes_dims: run.takes_dims.clone(),
        bufs: Vec::new(),
        pool,
        dims: Some(local),
        syms: syms.into(),
        values: values.into(),
        site: std::cell::Cell::new(0),
        prologue: true,
    };
    // The prologue never touches the outputs (the caller has not sized them).
    s.bufs = s.buffer_pointers(ins, None, ws, consts)?;
    // Each step's first bind site, as the run numbers them.
    let mut site = 0;
    let mut first_site = Vec::with_capacity(p.schedule.len());
    fn binds(st: &Step) -> usize {
        match st {
            Step::Bind { .. } => 1,
            Step::If { then, els, .. } => then.iter().chain(els).map(binds).sum(),
            Step::Loop { body, .. } => body.iter().map(binds).sum(),
            _ => 0,
        }
    }
    for st in &p.schedule {
        first_site.push(site);
        site += binds(st);
    }
    for &i in &p.prologue {
        s.site.set(first_site[i as usize]);
        s.steps(std::slice::from_ref(&p.schedule[i as usize]))?;
    }
    for (i, sym) in p.symbols.iter().enumerate().filter(|(_, x)| x.computed) {
        let idx = [i64t.const_int(i as u64, false)];
        let v = s.b.build_load(i64t, unsafe { s.b.build_in_bounds_gep(i64t, local, &idx, "")? }, &sym.name)?;
        s.b.build_store(unsafe { s.b.build_in_bounds_gep(i64t, caller, &idx, "")? }, v)?;
    }
    s.b.build_return(Some(&i32t.const_zero()))?;
    Ok(())
}

/// Whether kernel `k` mentions a symbol (and so takes the `dims` pointer).
fn uses_symbols(k: &dlc_kir::Kernel) -> bool {
    let mut found = false;
    let mut see = |e: &Expr| {
        let mut v = Vec::new();
        e.symbols(&mut v);
        found |= !v.is_empty();
    };
    k.walk(&mut |s| match s {
        dlc_kir::Stmt::Let(_, dlc_kir::Inst::Index(e))
        | dlc_kir::Stmt::Let(_, dlc_kir::Inst::Load { index: e, .. }) => see(e),
        dlc_kir::Stmt::Store { index, .. } => see(index),
        dlc_kir::Stmt::For { lo, hi, .. } => {
            see(lo);
            see(hi)
        }
        dlc_kir::Stmt::Memcpy { dst_off, src_off, bytes, .. } => {
            see(dst_off);
            see(src_off);
            see(bytes)
        }
        _ => {}
    });
    found
}

/// The symbol of kernel `i` of `p` when it is defined in a module of its own: the
/// artifact's prefix (two models linked into one program keep theirs apart), its index
/// and its name (what a profiler shows), as C identifier characters.
pub(crate) fn kernel_symbol(prefix: &str, i: usize, k: &dlc_kir::Kernel) -> String {
    let name: String =
        k.name.chars().take(48).map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("{prefix}k{i}_{name}")
}

/// For each kernel of `p`, the first kernel with the same code (itself when none
/// before it has): everything but the name equal, so one function serves both. Models
/// repeat layers of one shape (ResNet-50's bottleneck blocks, a transformer's layers),
/// whose kernels differ only in the buffers `run` hands them: LLVM then optimises and
/// compiles each once (56 kernels to 43 in ResNet-50).
pub(crate) fn representatives(p: &Program) -> Vec<usize> {
    // Candidates share a cheap fingerprint; only they are compared in full.
    let mut seen: HashMap<(usize, usize, usize, usize), Vec<usize>> = HashMap::new();
    let mut rep = Vec::with_capacity(p.kernels.len());
    for (i, k) in p.kernels.iter().enumerate() {
        let key = k.code_fingerprint();
        let bucket = seen.entry(key).or_default();
        match bucket.iter().find(|&&j| p.kernels[j].same_code(k, true)) {
            Some(&j) => rep.push(j),
            None => {
                bucket.push(i);
                rep.push(i);
            }
        }
    }
    rep
}

/// The number of `dims` pointers kernel `k` of `p` takes after its buffers (1 when the
/// program has symbols and the kernel mentions one).
fn dims_params(p: &Program, k: &dlc_kir::Kernel) -> usize {
    (!p.symbols.is_empty() && uses_symbols(k)) as usize
}

/// Defines kernel `k` of `p` (whose symbols are named `syms`) as function `name` of
/// `module` with `linkage`: its kir translated, taking the `dims` pointer when it
/// mentions a run-time dim.
fn define_kernel<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    p: &Program,
    syms: &[String],
    k: &dlc_kir::Kernel,
    name: &str,
    linkage: Linkage,
) -> R<FunctionValue<'ctx>> {
    let dims = dims_params(p, k);
    let kb = Kb::new(cx, module, name, k.params.len() + dims, linkage);
    if dims == 1 {
        crate::kir::emit_symbolic(&kb, k, syms)?;
    } else {
        crate::kir::emit(&kb, k)?;
    }
    kb.finish()
}

/// Defines kernels `which` of `p` (each its own [`representatives`]) in `module` with
/// external, hidden linkage under [`kernel_symbol`] names: the part of the program one
/// thread compiles when `run` is in another module ([`emit`] with `kernels_elsewhere`).
pub(crate) fn emit_kernels<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    p: &Program,
    prefix: &str,
    which: &[usize],
) -> R<()> {
    let syms: Vec<String> = p.symbols.iter().map(|s| s.name.clone()).collect();
    for &i in which {
        let k = &p.kernels[i];
        define_kernel(cx, module, p, &syms, k, &kernel_symbol(prefix, i, k), Linkage::External)?;
    }
    Ok(())
}

/// Emits program `p` into `module`: its kernels (or, with `kernels_elsewhere`, their
/// declarations: [`emit_kernels`] defines them in other modules; `rep` is
/// [`representatives`] of `p`, kernels sharing one function), constants and the C
/// entry points (symbols prefixed by `prefix`). Returns the number of compute kernels
/// (those only `bind` steps run, which compute shapes or check indices, are not
/// counted).
pub(crate) fn emit<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    p: &Program,
    prefix: &str,
    signature: &str,
    rep: &[usize],
    kernels_elsewhere: bool,
) -> R<usize> {
    dlc_kir::verify::program(p).map_err(|e| bad(format!("program '{}' does not verify: {e}", p.name)))?;
    let symbolic = !p.symbols.is_empty();
    let syms: Vec<String> = p.symbols.iter().map(|s| s.name.clone()).collect();
    let arena = if symbolic { 0 } else { constant(p, &p.arena_bytes, "the arena size")? };
    let (i32t, i64t) = (cx.i32_type(), cx.i64_type());
    let b = cx.create_builder();

    crate::emit_metadata(cx, module, prefix, arena, signature)?;

    // Constants first (as the graph path always laid them out), then the kernels.
    let mut consts = std::collections::HashMap::new();
    for (i, buf) in p.buffers.iter().enumerate() {
        if let BufKind::Const(data) = &buf.kind {
            let init = cx.const_string(data, false);
            let g = module.add_global(init.get_type(), None, &format!("c{i}"));
            g.set_initializer(&init);
            g.set_constant(true);
            g.set_linkage(Linkage::Private);
            g.set_alignment(64);
            g.set_unnamed_addr(true);
            consts.insert(i, g.as_pointer_value());
        }
    }

    // The entry point is declared before the kernels it calls (the module's order).
    let entry_fn = if symbolic { &abi::RUN_DIMS } else { &abi::RUN_THREADED };
    let run = module.add_function(&abi::symbol(prefix, entry_fn), crate::abi_fn_type(cx, entry_fn), None);
    let mut kernels = Vec::with_capacity(p.kernels.len());
    let mut takes_dims = Vec::with_capacity(p.kernels.len());
    for (i, k) in p.kernels.iter().enumerate() {
        let dims = dims_params(p, k);
        kernels.push(if rep[i] != i {
            // The same code as an earlier kernel: its function.
            kernels[rep[i]]
        } else if kernels_elsewhere {
            Kb::declare(cx, module, &kernel_symbol(prefix, i, k), k.params.len() + dims, Linkage::External)
        } else {
            define_kernel(cx, module, p, &syms, k, &k.name, Linkage::Internal)?
        });
        takes_dims.push(dims == 1);
    }

    let entry = cx.append_basic_block(run, "entry");
    b.position_at_end(entry);
    let param = |i: u32| -> R<PointerValue<'ctx>> {
        Ok(run.get_nth_param(i).ok_or_else(|| bad("entry point parameter"))?.into_pointer_value())
    };
    let (ins, outs, ws) = (param(0)?, param(1)?, param(2)?);
    let (dims, pool) =
        if symbolic { (Some(param(3)?), [param(4)?, param(5)?]) } else { (None, [param(3)?, param(4)?]) };
    let (sym_vals, values) = match dims {
        Some(d) => load_dims(cx, &b, run, p, d, i32t.const_int(abi::STATUS_BAD_DIMS as u64, true).into(), false)?,
        None => (HashMap::new(), Values::default()),
    };
    // With data symbols, kernels read a local copy of the dims that `bind` steps write;
    // it is copied back to the caller's array at the end.
    let data_syms = p.symbols.iter().any(|s| s.data.is_some());
    let caller_dims = dims;
    let dims = match dims {
        Some(d) if data_syms => {
            let n = i64t.const_int(p.symbols.len() as u64, false);
            let local = b.build_array_alloca(i64t, n, "dims")?;
            b.build_memcpy(local, 8, d, 8, i64t.const_int(8 * p.symbols.len() as u64, false))?;
            Some(local)
        }
        d => d,
    };
    let mut s = Sched {
        cx,
        b,
        run,
        p,
        kernels,
        takes_dims,
        bufs: Vec::new(),
        pool,
        dims,
        syms: sym_vals.into(),
        values: values.into(),
        site: std::cell::Cell::new(0),
        prologue: false,
    };
    s.bufs = s.buffer_pointers(ins, Some(outs), ws, &consts)?;
    s.steps(&p.schedule)?;
    if let (Some(local), Some(caller), true) = (s.dims, caller_dims, data_syms) {
        for (i, sym) in p.symbols.iter().enumerate().filter(|(_, x)| x.data.is_some()) {
            let idx = [i64t.const_int(i as u64, false)];
            let v = s.b.build_load(i64t, unsafe { s.b.build_in_bounds_gep(i64t, local, &idx, "")? }, &sym.name)?;
            s.b.build_store(unsafe { s.b.build_in_bounds_gep(i64t, caller, &idx, "")? }, v)?;
        }
    }
    s.b.build_return(Some(&i32t.const_zero()))?;
    emit_prologue(&s, module, prefix, &consts)?;

    let b = &s.b;
    if symbolic {
        // run_threaded and run refuse; workspace_size_dims evaluates the arena size.
        let rt = module.add_function(
            &abi::symbol(prefix, &abi::RUN_THREADED),
            crate::abi_fn_type(cx, &abi::RUN_THREADED),
            None,
        );
        b.position_at_end(cx.append_basic_block(rt, "entry"));
        b.build_return(Some(&i32t.const_int(abi::STATUS_NEEDS_DIMS as u64, true)))?;
        crate::emit_run(cx, module, prefix, rt)?;
        let wf = module.add_function(
            &abi::symbol(prefix, &abi::WORKSPACE_SIZE_DIMS),
            crate::abi_fn_type(cx, &abi::WORKSPACE_SIZE_DIMS),
            None,
        );
        b.position_at_end(cx.append_basic_block(wf, "entry"));
        let d = wf.get_nth_param(0).ok_or_else(|| bad("workspace_size_dims parameter"))?.into_pointer_value();
        let (vals, mut values) = load_dims(cx, b, wf, p, d, i64t.const_all_ones().into(), false)?;
        let (n, ovf) = build_size_checked(cx, b, module, &p.arena_bytes, &vals, &mut values)?;
        let n = b.build_select(ovf, i64t.const_all_ones(), n, "")?;
        b.build_return(Some(&n))?;
    } else {
        crate::emit_run(cx, module, prefix, run)?;
        let wf = module.add_function(
            &abi::symbol(prefix, &abi::WORKSPACE_SIZE_DIMS),
            crate::abi_fn_type(cx, &abi::WORKSPACE_SIZE_DIMS),
            None,
        );
        b.position_at_end(cx.append_basic_block(wf, "entry"));
        b.build_return(Some(&i64t.const_int(arena, false)))?;
        let rd =
            module.add_function(&abi::symbol(prefix, &abi::RUN_DIMS), crate::abi_fn_type(cx, &abi::RUN_DIMS), None);
        b.position_at_end(cx.append_basic_block(rd, "entry"));
        let mut args: Vec<inkwell::values::BasicMetadataValueEnum> = Vec::new();
        for i in [0, 1, 2, 4, 5] {
            args.push(rd.get_nth_param(i).ok_or_else(|| bad("run_dims parameter"))?.into());
        }
        let status = b
            .build_call(run, &args, "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| bad("run_threaded returns a status"))?;
        b.build_return(Some(&status))?;
    }
    Ok(kernels_run(p))
}

/// The kernels of `p` but those that `bind` steps call (checks).
pub(crate) fn kernels_run(p: &Program) -> usize {
    let mut checks = std::collections::HashSet::new();
    p.visit_steps(&mut |st| {
        if let Step::Bind { kernel, .. } = st {
            checks.insert(*kernel);
        }
    });
    p.kernels.len() - checks.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An expression that mentions each sub-expression twice, e(k+1) = floordiv(e(k), 2)
    /// plus max(floordiv(e(k), 3), 1): twenty levels write out a million leaves, as the
    /// arena sizes of a deep model nest their buffers' sizes.
    fn nested(levels: usize) -> Expr {
        let mut e = &Expr::sym("N") + &Expr::c(7);
        for _ in 0..levels {
            e = &e.floor_div(&Expr::c(2)) + &e.floor_div(&Expr::c(3)).max_with(&Expr::c(1));
        }
        e
    }

    /// A module with a function `size(N: i64) -> i64`, a builder at its entry and `N`
    /// as the symbols' values.
    fn function_of_n(cx: &Context) -> (Module<'_>, FunctionValue<'_>, Builder<'_>, HashMap<String, IntValue<'_>>) {
        let module = cx.create_module("t");
        let i64t = cx.i64_type();
        let f = module.add_function("size", i64t.fn_type(&[i64t.into()], false), None);
        let b = cx.create_builder();
        b.position_at_end(cx.append_basic_block(f, "entry"));
        let syms = HashMap::from([("N".to_string(), f.get_nth_param(0).unwrap().into_int_value())]);
        (module, f, b, syms)
    }

    /// Each distinct sub-expression is built once (about 20 instructions a level, not a
    /// million), and the value is the expression's: at constant dims the builder folds
    /// it to the number kir's evaluator gives.
    #[test]
    fn shared_sub_expressions_are_built_once_and_keep_their_value() {
        let e = nested(20);
        let cx = Context::create();
        let (module, f, b, syms) = function_of_n(&cx);
        let i64t = cx.i64_type();
        let v = Values::default().build(&cx, &b, &e, &syms).unwrap();
        b.build_return(Some(&v)).unwrap();
        let count: usize = f.get_basic_blocks().iter().map(|bb| bb.get_instructions().count()).sum();
        assert!(count <= 20 * 24, "{count} instructions for 20 levels");
        module.verify().unwrap();
        for n in [1i64, 5, 1000, 123_456] {
            let syms = HashMap::from([("N".to_string(), i64t.const_int(n as u64, true))]);
            let v = Values::default().build(&cx, &b, &e, &syms).unwrap();
            let want = e.eval(&BTreeMap::from([("N".to_string(), n)])).unwrap();
            assert_eq!(v.get_sign_extended_constant(), Some(want), "N = {n}");
        }
    }

    /// A value built inside a branch is not reused after it (it would not dominate the
    /// use); one built before the branch is.
    #[test]
    fn values_of_a_branch_end_with_it() {
        let e = nested(2);
        let cx = Context::create();
        let (_module, _f, b, syms) = function_of_n(&cx);
        let mut values = Values::default();
        let before = values.build(&cx, &b, &e, &syms).unwrap();
        values.enter();
        assert_eq!(values.build(&cx, &b, &e, &syms).unwrap(), before);
        let inner = values.build(&cx, &b, &(&e + &Expr::sym("N")), &syms).unwrap();
        values.leave();
        assert_ne!(values.build(&cx, &b, &(&e + &Expr::sym("N")), &syms).unwrap(), inner);
        values.forget();
        assert_ne!(values.build(&cx, &b, &e, &syms).unwrap(), before);
    }
}
