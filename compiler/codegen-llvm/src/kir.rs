//! kir -> LLVM IR: translates a verified [`dlc_kir::Kernel`] into the kernel function a
//! [`Kb`] is building, one kir construct to its LLVM counterpart. Knows nothing of ops.
//!
//! A body that is one nest of `each` loops (a per-element kernel) is handed to a
//! [`Drive`]: the CPU's is a loop nest ([`nest`]), the CUDA kernels' one element per
//! thread, so the same kir kernel serves both. `parallel` loops become pool tasks
//! ([`Kb::parallel_for`]). Index arithmetic is `nsw`, as the hand-written lowerings'
//! was, so constant extents give the same code they gave.
//!
//! A block kernel ([`emit_block`]) is translated for the GPU or its host simulation
//! ([`Gpu`]): a `threads` region is the thread's code then `bar.sync` on the GPU, a loop
//! over the block's threads in the simulation; scratch arrays are per thread (a stack
//! array each on the GPU, one slot per thread in the simulation); shared arrays are
//! `.shared` globals or a stack array of the block call; `blockreduce` is warp
//! butterflies (`shfl.sync.bfly`), modelled lane by lane in the simulation in the same
//! order, so both give the bits the interpreter gives.
use crate::kernel::{Kb, R};
use crate::lower::elementwise::{nest, Drive};
use crate::CodegenError;
use dlc_kir::expr::Atom;
use dlc_kir::verify::Types;
use dlc_kir::{
    BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, ReduceOp, Stmt, Ty, UnOp, ValId,
};
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicMetadataValueEnum, BasicValue, BasicValueEnum, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

/// A float builder call on two scalars or two vectors.
macro_rules! fop {
    ($b:expr, $m:ident, $x:expr, $y:expr) => {
        match ($x, $y) {
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => $b.$m(x, y, "")?.as_basic_value_enum(),
            (x, y) => $b.$m(x.into_float_value(), y.into_float_value(), "")?.as_basic_value_enum(),
        }
    };
}

/// An integer builder call on two scalars or two vectors.
macro_rules! iop {
    ($b:expr, $m:ident, $x:expr, $y:expr $(, $extra:expr)?) => {
        match ($x, $y) {
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => $b.$m(x, y, $($extra,)? "")?.as_basic_value_enum(),
            (x, y) => $b.$m(x.into_int_value(), y.into_int_value(), $($extra,)? "")?.as_basic_value_enum(),
        }
    };
}

/// A one-operand builder call on a scalar or a vector, with a destination type.
macro_rules! conv {
    ($b:expr, $m:ident, $x:expr, $tt:expr, $scalar:ident, $into:ident) => {
        match $x {
            BasicValueEnum::VectorValue(x) => $b.$m(x, $tt.into_vector_type(), "")?.as_basic_value_enum(),
            x => $b.$m(x.$scalar(), $tt.$into(), "")?.as_basic_value_enum(),
        }
    };
}

/// An integer comparison of two scalars or two vectors.
fn icmp<'ctx>(
    kb: &Kb<'_, 'ctx>,
    p: IntPredicate,
    x: BasicValueEnum<'ctx>,
    y: BasicValueEnum<'ctx>,
) -> R<BasicValueEnum<'ctx>> {
    Ok(match (x, y) {
        (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => {
            kb.b.build_int_compare(p, x, y, "")?.as_basic_value_enum()
        }
        (x, y) => kb.b.build_int_compare(p, x.into_int_value(), y.into_int_value(), "")?.as_basic_value_enum(),
    })
}

fn bad(k: &Kernel, msg: impl std::fmt::Display) -> CodegenError {
    CodegenError::Llvm(format!("kir kernel '{}': {msg}", k.name))
}

/// The values, loop variables and locals in scope while translating.
#[derive(Clone, Default)]
struct Env<'ctx> {
    vals: HashMap<ValId, BasicValueEnum<'ctx>>,
    vars: HashMap<u32, IntValue<'ctx>>,
    locals: HashMap<u32, PointerValue<'ctx>>,
    /// The scratch arrays of the function being built, by memory index.
    scratch: HashMap<u32, PointerValue<'ctx>>,
    /// The kernel's constant arrays (module globals, seen by every function of the
    /// kernel), by memory index.
    data: HashMap<u32, PointerValue<'ctx>>,
    /// Loop variables known to be non-negative (their loop starts at a non-negative
    /// bound): floor division and modulo of such indices by a positive constant are
    /// LLVM's unsigned ones.
    nonneg: std::collections::HashSet<u32>,
    /// In a block kernel: how it is compiled.
    gpu: Option<Gpu<'ctx>>,
    /// Inside a `threads` region: the thread.
    tid: Option<IntValue<'ctx>>,
    /// In the simulation of a block kernel: the bytes of each thread's slot of each
    /// scratch array (by memory index).
    per_thread: HashMap<u32, u64>,
    /// The program's run-time dims, loaded at the function's entry.
    syms: HashMap<String, IntValue<'ctx>>,
    /// Index subterms (a floor division, a modulo, a min or max, a product of atoms)
    /// already built where the code being built can use them: a nested scope gets a
    /// copy, so what it adds goes with it. Kernels over run-time dims repeat the same
    /// `floordiv(mod(%i0, 4*%v2), 4)` in every address; building each once keeps the
    /// module LLVM is given several times smaller (ResNet-50 over run-time dims: 748k
    /// lines of IR before, see docs/performance.md).
    memo: std::cell::RefCell<HashMap<Vec<Atom>, IntValue<'ctx>>>,
}

/// How a block kernel is compiled.
#[derive(Clone, Copy)]
pub(crate) struct Gpu<'ctx> {
    /// For the GPU (else its host simulation, called once per block).
    pub ptx: bool,
    /// Threads per block.
    pub threads: u32,
    /// On the GPU, the thread index (`tid.x`, i64).
    pub tid: Option<IntValue<'ctx>>,
    /// The block index along x, y, z (i64).
    pub bid: [IntValue<'ctx>; 3],
}

impl<'ctx> Gpu<'ctx> {
    /// Runs `body(kb, tid)` on every thread of the block, then a barrier (see the
    /// module doc).
    pub fn region(&self, kb: &Kb<'_, 'ctx>, body: impl FnOnce(&Kb<'_, 'ctx>, IntValue<'ctx>) -> R<()>) -> R<()> {
        match self.tid {
            Some(t) if self.ptx => {
                body(kb, t)?;
                // `bar.sync 0`: every thread of the block, all arriving at the same point.
                let bar = kb.intrinsic("llvm.nvvm.barrier.cta.sync.aligned.all", &[])?;
                kb.b.build_call(bar, &[kb.cx.i32_type().const_zero().into()], "")?;
                Ok(())
            }
            _ => kb.for_n(self.threads as u64, body),
        }
    }

    /// `f32` shared memory of `bytes` bytes named `name` (a generic pointer to it).
    fn shared(&self, kb: &Kb<'_, 'ctx>, name: &str, bytes: u64) -> R<PointerValue<'ctx>> {
        let ty = kb.cx.i8_type().array_type(bytes as u32);
        if !self.ptx {
            let p = kb.alloca(ty.into())?;
            if let Some(i) = p.as_instruction_value() {
                i.set_alignment(16).map_err(|e| CodegenError::Llvm(e.to_string()))?;
            }
            return Ok(p);
        }
        let gv = kb.m.add_global(ty, Some(inkwell::AddressSpace::from(3u16)), name);
        gv.set_linkage(inkwell::module::Linkage::Internal);
        gv.set_initializer(&ty.get_undef());
        gv.set_alignment(16);
        Ok(gv.as_pointer_value().const_address_space_cast(kb.cx.ptr_type(inkwell::AddressSpace::default())))
    }
}

/// The bytes of shared memory a block kernel declares: its shared arrays and 33 f32 per
/// `blockreduce`.
pub(crate) fn shared_bytes(k: &Kernel) -> u64 {
    let mut reduces = 0;
    k.walk(&mut |s| {
        if let Stmt::Let(_, Inst::BlockReduce { .. }) = s {
            reduces += 1;
        }
    });
    k.shared.iter().map(|s| s.len * s.elem.bytes() as u64).sum::<u64>() + reduces * 33 * 4
}

/// Translates block kernel `k` into `kb` (whose parameters are the kernel's), compiled
/// as `gpu` says.
pub(crate) fn emit_block<'ctx>(kb: &Kb<'_, 'ctx>, k: &Kernel, gpu: Gpu<'ctx>) -> R<()> {
    let types = dlc_kir::verify::kernel(k).map_err(|e| bad(k, e))?;
    let Some(block) = &k.block else { return Err(bad(k, "not a block kernel")) };
    let tr = Tr { k, types, syms: &[] };
    let mut env = Env { data: tr.data(kb)?, gpu: Some(gpu), ..Env::default() };
    let fname = kb.f.get_name().to_string_lossy().into_owned();
    let np = (k.params.len() + k.data.len()) as u32;
    for (j, sc) in k.scratch.iter().enumerate() {
        let bytes = sc.len * sc.elem.bytes() as u64;
        let total = if gpu.ptx { bytes } else { bytes * gpu.threads as u64 };
        let p = kb.alloca(kb.cx.i8_type().array_type(total as u32).into())?;
        if let Some(i) = p.as_instruction_value() {
            i.set_alignment(16).map_err(|e| bad(k, e))?;
        }
        env.scratch.insert(np + j as u32, p);
        if !gpu.ptx {
            env.per_thread.insert(np + j as u32, bytes);
        }
    }
    let nh = np + k.scratch.len() as u32;
    for (j, sh) in k.shared.iter().enumerate() {
        let p = gpu.shared(kb, &format!("{fname}.shared{j}"), sh.len * sh.elem.bytes() as u64)?;
        env.scratch.insert(nh + j as u32, p);
    }
    for (v, b) in block.vars.iter().zip(gpu.bid) {
        env.vars.insert(*v, b);
        env.nonneg.insert(*v);
    }
    tr.body(kb, &k.body, &mut env)
}

/// Whether `e` is non-negative for every value of the loop variables in `vars`: a sum of
/// non-negative multiples of such variables, of non-negative quotients, remainders,
/// minima and maxima of them, and a non-negative constant.
fn nonneg(e: &Expr, vars: &std::collections::HashSet<u32>) -> bool {
    e.terms().all(|(atoms, c)| {
        c >= 0
            && atoms.iter().all(|a| match a {
                Atom::Var(v) => vars.contains(v),
                Atom::Div(x, y) | Atom::Mod(x, y) => nonneg(x, vars) && y.as_const().is_some_and(|y| y > 0),
                Atom::Min(x, y) | Atom::Max(x, y) => nonneg(x, vars) && nonneg(y, vars),
                Atom::Sym(_) | Atom::Val(_) => false,
            })
    })
}

struct Tr<'k> {
    k: &'k Kernel,
    types: Types,
    /// The program's symbols in the order of the `dims` array the kernel gets as its
    /// parameter after its own (empty: the kernel takes no dims).
    syms: &'k [String],
}

/// The extents of a per-element kernel's element space: `Some` when its body is a
/// perfect nest of `each` loops from 0 to constants.
pub(crate) fn each_dims(k: &Kernel) -> Option<Vec<u64>> {
    let mut dims = Vec::new();
    let mut body: &[Stmt] = &k.body;
    while let [Stmt::For { lo, hi, kind: LoopKind::Each, body: inner, .. }] = body {
        match (lo.as_const(), hi.as_const()) {
            (Some(0), Some(n)) if n >= 0 => dims.push(n as u64),
            _ => return None,
        }
        body = inner;
    }
    (!dims.is_empty()).then_some(dims)
}

/// Turns every `each` loop of `body` into a serial loop (the same iterations in order).
fn each_as_serial(body: &mut [Stmt]) {
    for s in body {
        match s {
            Stmt::For { kind, body, .. } => {
                if *kind == LoopKind::Each {
                    *kind = LoopKind::Serial;
                }
                each_as_serial(body);
            }
            Stmt::If { then, els, .. } => {
                each_as_serial(then);
                each_as_serial(els);
            }
            Stmt::Let(..) | Stmt::Local(..) | Stmt::Set(..) | Stmt::Store { .. } | Stmt::Memcpy { .. } => {}
        }
    }
}

/// Translates kernel `k` into `kb` (whose parameters are the kernel's), iterating a
/// per-element body with `drive`.
pub(crate) fn emit_with<'ctx>(kb: &Kb<'_, 'ctx>, k: &Kernel, drive: Drive<'_, 'ctx>, syms: &[String]) -> R<()> {
    let types = dlc_kir::verify::kernel(k).map_err(|e| bad(k, e))?;
    let tr = Tr { k, types, syms };
    let data = tr.data(kb)?;
    // A leading perfect nest of `each` loops from 0 to constants: the element space.
    let mut dims = Vec::new();
    let mut vars = Vec::new();
    let mut body: &[Stmt] = &k.body;
    while let [Stmt::For { var, lo, hi, kind: LoopKind::Each, body: inner }] = body {
        match (lo.as_const(), hi.as_const()) {
            (Some(0), Some(n)) if n >= 0 => {
                dims.push(n as u64);
                vars.push(*var);
                body = inner;
            }
            // Run-time extents: the nest runs as the serial loops it means (on one
            // thread), the drive gets a single element.
            _ => {
                let mut serial = k.clone();
                each_as_serial(&mut serial.body);
                return emit_with(kb, &serial, drive, syms);
            }
        }
    }
    if k.body.iter().any(|s| matches!(s, Stmt::For { kind: LoopKind::Each, .. })) && dims.is_empty() {
        return Err(bad(k, "an each nest must be the whole kernel body"));
    }
    // No `each` loop at all: the element space is a single element (a rank-0 copy), so
    // the CUDA drive still runs the body on one thread only.
    drive(kb, &dims, &|kb, idx| {
        let mut env = Env { data: data.clone(), ..Env::default() };
        tr.scratch(kb, &mut env)?;
        tr.load_syms(kb, &mut env)?;
        for (v, i) in vars.iter().zip(idx) {
            env.vars.insert(*v, *i);
            env.nonneg.insert(*v);
        }
        tr.body(kb, body, &mut env)
    })
}

impl Tr<'_> {
    /// The kernel's constant arrays as private, 64-byte aligned globals named after the
    /// function being built and the array, by memory index.
    fn data<'ctx>(&self, kb: &Kb<'_, 'ctx>) -> R<HashMap<u32, PointerValue<'ctx>>> {
        let fname = kb.f.get_name().to_string_lossy().into_owned();
        let np = self.k.params.len() as u32;
        let mut out = HashMap::new();
        for (j, d) in self.k.data.iter().enumerate() {
            let name = format!("{fname}.{}", d.name);
            let g = match kb.m.get_global(&name) {
                Some(g) => g,
                None => {
                    let init = kb.cx.const_string(&d.bytes, false);
                    let g = kb.m.add_global(init.get_type(), None, &name);
                    g.set_initializer(&init);
                    g.set_constant(true);
                    g.set_linkage(inkwell::module::Linkage::Private);
                    g.set_alignment(64);
                    g
                }
            };
            out.insert(np + j as u32, g.as_pointer_value());
        }
        Ok(out)
    }

    /// The module's constant array of table `t` (one per name, private).
    fn table<'ctx>(&self, kb: &Kb<'_, 'ctx>, t: &dlc_kir::Table) -> R<PointerValue<'ctx>> {
        if let Some(g) = kb.m.get_global(&t.name) {
            return Ok(g.as_pointer_value());
        }
        // The elements as constants (the verifier checked their kind), then the array.
        let ty = Ty::scalar(t.elem);
        let vals: Vec<BasicValueEnum> = t.values.iter().map(|l| self.konst(kb, ty, *l)).collect::<R<_>>()?;
        let init = match elem_type(kb, t.elem) {
            BasicTypeEnum::FloatType(ft) => {
                ft.const_array(&vals.iter().map(|v| v.into_float_value()).collect::<Vec<_>>())
            }
            BasicTypeEnum::IntType(it) => it.const_array(&vals.iter().map(|v| v.into_int_value()).collect::<Vec<_>>()),
            _ => return Err(bad(self.k, format!("table '{}' of {}", t.name, t.elem.name()))),
        };
        let g = kb.m.add_global(init.get_type(), None, &t.name);
        g.set_initializer(&init);
        g.set_constant(true);
        g.set_linkage(inkwell::module::Linkage::Private);
        g.set_unnamed_addr(true);
        Ok(g.as_pointer_value())
    }
}

/// Translates a scalar kir computation inline, where an inkwell lowering needs one of
/// dlc-lower's scalar rules: `build` gets one value per argument (placeholders it must
/// not redefine) and returns the result; the arguments' LLVM values stand in for the
/// placeholders.
pub(crate) fn inline<'ctx>(
    kb: &Kb<'_, 'ctx>,
    args: &[(BasicValueEnum<'ctx>, Ty)],
    build: impl FnOnce(&mut KernelBuilder, &[ValId]) -> ValId,
) -> R<BasicValueEnum<'ctx>> {
    let mut b = KernelBuilder::new("inline", &[]);
    let ids: Vec<ValId> = args
        .iter()
        .map(|(_, ty)| {
            let lit = if ty.elem.is_float() { Lit::Float(0.0) } else { Lit::Int(0) };
            b.let_(Inst::Const { ty: *ty, lit })
        })
        .collect();
    let result = build(&mut b, &ids);
    let k = b.finish();
    let types = dlc_kir::verify::kernel(&k).map_err(|e| bad(&k, e))?;
    let tr = Tr { k: &k, types, syms: &[] };
    let mut env = Env::default();
    for (id, (v, _)) in ids.iter().zip(args) {
        env.vals.insert(*id, *v);
    }
    tr.body(kb, &k.body[ids.len()..], &mut env)?;
    env.vals.get(&result).copied().ok_or_else(|| bad(&k, format!("%v{result} is not defined")))
}

/// Translates kernel `k` for the CPU (an `each` nest is a loop nest).
pub(crate) fn emit(kb: &Kb<'_, '_>, k: &Kernel) -> R<()> {
    emit_with(kb, k, &nest, &[])
}

/// Translates kernel `k` of a program with run-time dims `syms` for the CPU: when
/// non-empty, the kernel's function takes a `dims` pointer (`syms.len()` `i64`s) after
/// its own parameters (`kb` was made with one more parameter).
pub(crate) fn emit_symbolic(kb: &Kb<'_, '_>, k: &Kernel, syms: &[String]) -> R<()> {
    emit_with(kb, k, &nest, syms)
}

/// The LLVM type of a kir element type.
pub(crate) fn elem_type<'ctx>(kb: &Kb<'_, 'ctx>, e: Elem) -> BasicTypeEnum<'ctx> {
    let cx = kb.cx;
    match e {
        Elem::I1 => cx.bool_type().into(),
        Elem::I8 => cx.i8_type().into(),
        Elem::I16 => cx.i16_type().into(),
        Elem::I32 => cx.i32_type().into(),
        Elem::I64 => cx.i64_type().into(),
        Elem::F16 => cx.f16_type().into(),
        Elem::F32 => cx.f32_type().into(),
        Elem::F64 => cx.f64_type().into(),
    }
}

fn llvm_ty<'ctx>(kb: &Kb<'_, 'ctx>, t: Ty) -> BasicTypeEnum<'ctx> {
    let e = elem_type(kb, t.elem);
    if t.lanes == 1 {
        return e;
    }
    match e {
        BasicTypeEnum::IntType(i) => i.vec_type(t.lanes).into(),
        BasicTypeEnum::FloatType(f) => f.vec_type(t.lanes).into(),
        _ => unreachable!("element types are ints and floats"),
    }
}

impl Tr<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> CodegenError {
        bad(self.k, msg)
    }

    /// Loads the run-time dims into `env` (at the entry of the kernel or of a task).
    fn load_syms<'ctx>(&self, kb: &Kb<'_, 'ctx>, env: &mut Env<'ctx>) -> R<()> {
        if self.syms.is_empty() {
            return Ok(());
        }
        let dims = kb.param(self.k.params.len());
        for (i, s) in self.syms.iter().enumerate() {
            let at = kb.gep(kb.i64t.into(), dims, kb.c(i as u64))?;
            let v = kb.b.build_load(kb.i64t, at, s)?.into_int_value();
            env.syms.insert(s.clone(), v);
        }
        Ok(())
    }

    /// An index expression as an i64, built as the hand-written lowerings built theirs:
    /// the constant term, then each monomial added in order (`nsw`).
    fn expr<'ctx>(&self, kb: &Kb<'_, 'ctx>, e: &Expr, env: &Env<'ctx>) -> R<IntValue<'ctx>> {
        let mut acc = kb.c(0);
        let mut konst = 0i64;
        let mut first = true;
        for (atoms, c) in e.terms() {
            if atoms.is_empty() {
                konst = c;
                continue;
            }
            let t = self.monomial(kb, atoms, env)?;
            let t = if c == 1 { t } else { kb.mul(t, kb.i64t.const_int(c as u64, true))? };
            if first {
                acc = kb.add(kb.i64t.const_int(konst as u64, true), t)?;
                first = false;
            } else {
                acc = kb.add(acc, t)?;
            }
        }
        if first {
            return Ok(kb.i64t.const_int(konst as u64, true));
        }
        Ok(acc)
    }

    /// The product of `atoms`, built once per scope (`Env::memo`) unless it is a
    /// single name (a dim, a loop variable, a value), which costs nothing to use again.
    fn monomial<'ctx>(&self, kb: &Kb<'_, 'ctx>, atoms: &[Atom], env: &Env<'ctx>) -> R<IntValue<'ctx>> {
        let named = |a: &Atom| matches!(a, Atom::Sym(_) | Atom::Var(_) | Atom::Val(_));
        if let [a] = atoms {
            if named(a) {
                return self.atom(kb, a, env);
            }
        }
        if let Some(v) = env.memo.borrow().get(atoms) {
            return Ok(*v);
        }
        let mut t: Option<IntValue<'ctx>> = None;
        for a in atoms {
            let v = if named(a) || atoms.len() == 1 {
                self.atom(kb, a, env)?
            } else {
                self.monomial(kb, std::slice::from_ref(a), env)?
            };
            t = Some(match t {
                None => v,
                Some(p) => kb.mul(p, v)?,
            });
        }
        let t = t.ok_or_else(|| self.err("an empty product in an index"))?;
        env.memo.borrow_mut().insert(atoms.to_vec(), t);
        Ok(t)
    }

    fn atom<'ctx>(&self, kb: &Kb<'_, 'ctx>, a: &Atom, env: &Env<'ctx>) -> R<IntValue<'ctx>> {
        let b = &kb.b;
        Ok(match a {
            Atom::Sym(s) => *env.syms.get(s).ok_or_else(|| {
                self.err(format!("run-time dim {s} is not available here (CUDA kernels take no run-time dims yet)"))
            })?,
            Atom::Var(n) => *env.vars.get(n).ok_or_else(|| self.err(format!("%i{n} is not in scope here")))?,
            Atom::Val(n) => env
                .vals
                .get(n)
                .ok_or_else(|| {
                    self.err(format!("%v{n} is not in scope here (a parallel task sees only its own values)"))
                })?
                .into_int_value(),
            // Non-negative by a positive constant: floor and truncation agree.
            Atom::Div(xe, ye) if nonneg(xe, &env.nonneg) && ye.as_const().is_some_and(|y| y > 0) => {
                b.build_int_unsigned_div(self.expr(kb, xe, env)?, self.expr(kb, ye, env)?, "")?
            }
            Atom::Mod(xe, ye) if nonneg(xe, &env.nonneg) && ye.as_const().is_some_and(|y| y > 0) => {
                b.build_int_unsigned_rem(self.expr(kb, xe, env)?, self.expr(kb, ye, env)?, "")?
            }
            Atom::Div(x, y) | Atom::Mod(x, y) => {
                let (x, y0) = (self.expr(kb, x, env)?, self.expr(kb, y, env)?);
                // A divisor only the run knows may be 0 (extents of an empty tensor, or
                // computed dims still 0 when sizing the workspace that computes them): it
                // divides by 1 then and gives 0, never a division fault.
                let zero = kb.c(0);
                let by_zero = kb.icmp(IntPredicate::EQ, y0, zero)?;
                let y = if y.as_const().is_some_and(|c| c != 0) { y0 } else { kb.select_i(by_zero, kb.c(1), y0)? };
                let q = b.build_int_signed_div(x, y, "")?;
                let r = b.build_int_signed_rem(x, y, "")?;
                // Floor semantics: adjust when the remainder is nonzero and the signs differ.
                let nz = kb.icmp(IntPredicate::NE, r, zero)?;
                let sr = kb.icmp(IntPredicate::SLT, r, zero)?;
                let sy = kb.icmp(IntPredicate::SLT, y, zero)?;
                let adj = kb.and(nz, b.build_xor(sr, sy, "")?)?;
                let v = if matches!(a, Atom::Div(..)) {
                    b.build_int_sub(q, b.build_int_z_extend(adj, kb.i64t, "")?, "")?
                } else {
                    kb.select_i(adj, b.build_int_add(r, y, "")?, r)?
                };
                if y == y0 {
                    v
                } else {
                    kb.select_i(by_zero, zero, v)?
                }
            }
            Atom::Min(x, y) | Atom::Max(x, y) => {
                let (x, y) = (self.expr(kb, x, env)?, self.expr(kb, y, env)?);
                let p = if matches!(a, Atom::Min(..)) { IntPredicate::SLT } else { IntPredicate::SGT };
                kb.select_i(kb.icmp(p, x, y)?, x, y)?
            }
        })
    }

    fn konst<'ctx>(&self, kb: &Kb<'_, 'ctx>, ty: Ty, lit: Lit) -> R<BasicValueEnum<'ctx>> {
        let s: BasicValueEnum = match (elem_type(kb, ty.elem), lit) {
            (BasicTypeEnum::IntType(it), Lit::Int(x)) => it.const_int(x as u64, true).into(),
            (BasicTypeEnum::FloatType(ft), Lit::Float(x)) => ft.const_float(x).into(),
            _ => return Err(self.err("constant of the wrong kind")),
        };
        Ok(if ty.lanes == 1 { s } else { kb.splat(s, ty.lanes)?.into() })
    }

    fn val<'ctx>(&self, v: ValId, env: &Env<'ctx>) -> R<BasicValueEnum<'ctx>> {
        env.vals.get(&v).copied().ok_or_else(|| self.err(format!("%v{v} is not in scope here")))
    }

    /// Memory `m`: a parameter, a constant array, or one of the function's scratch
    /// arrays.
    fn mem<'ctx>(&self, kb: &Kb<'_, 'ctx>, m: u32, env: &Env<'ctx>) -> R<PointerValue<'ctx>> {
        if (m as usize) < self.k.params.len() {
            return Ok(kb.param(m as usize));
        }
        let found = env.data.get(&m).or_else(|| env.scratch.get(&m));
        let p = found.copied().ok_or_else(|| self.err(format!("memory {m} is not allocated here")))?;
        match (env.per_thread.get(&m), env.tid) {
            (Some(&bytes), Some(t)) => kb.byte_offset(p, kb.mul(t, kb.c(bytes))?),
            _ => Ok(p),
        }
    }

    fn ptr<'ctx>(
        &self,
        kb: &Kb<'_, 'ctx>,
        env: &Env<'ctx>,
        param: u32,
        elem: Elem,
        index: IntValue<'ctx>,
    ) -> R<PointerValue<'ctx>> {
        kb.gep(elem_type(kb, elem), self.mem(kb, param, env)?, index)
    }

    /// The kernel's scratch arrays as 64-byte aligned stack arrays of the function being
    /// built (the kernel, or a pool task: each has its own).
    fn scratch<'ctx>(&self, kb: &Kb<'_, 'ctx>, env: &mut Env<'ctx>) -> R<()> {
        let np = (self.k.params.len() + self.k.data.len()) as u32;
        for (j, s) in self.k.scratch.iter().enumerate() {
            let bytes = s.len * s.elem.bytes() as u64;
            let p = kb.alloca(kb.cx.i8_type().array_type(bytes as u32).into())?;
            if let Some(i) = p.as_instruction_value() {
                i.set_alignment(64).map_err(|e| self.err(e))?;
            }
            env.scratch.insert(np + j as u32, p);
        }
        Ok(())
    }

    fn body<'ctx>(&self, kb: &Kb<'_, 'ctx>, body: &[Stmt], env: &mut Env<'ctx>) -> R<()> {
        for s in body {
            self.stmt(kb, s, env)?;
        }
        Ok(())
    }

    fn stmt<'ctx>(&self, kb: &Kb<'_, 'ctx>, s: &Stmt, env: &mut Env<'ctx>) -> R<()> {
        let b = &kb.b;
        match s {
            Stmt::Let(v, i) => {
                let r = self.inst(kb, *v, i, env)?;
                env.vals.insert(*v, r);
            }
            Stmt::Store { param, index, value, align, mask } => {
                let t = self.types.of(*value);
                let p = self.ptr(kb, env, *param, t.elem, self.expr(kb, index, env)?)?;
                let v = self.val(*value, env)?;
                match mask {
                    None => kb.store_aligned(p, v, *align)?,
                    Some(m) => {
                        let ty = llvm_ty(kb, t);
                        let f = kb.intrinsic("llvm.masked.store", &[ty, p.get_type().into()])?;
                        let mv = self.val(*m, env)?;
                        // LLVM releases differ on whether the alignment is an argument.
                        let args: Vec<BasicMetadataValueEnum> = if f.count_params() == 4 {
                            let al = kb.cx.i32_type().const_int(*align as u64, false);
                            vec![v.into(), p.into(), al.into(), mv.into()]
                        } else {
                            vec![v.into(), p.into(), mv.into()]
                        };
                        b.build_call(f, &args, "")?;
                    }
                }
            }
            Stmt::For { var, lo, hi, kind, body } => match kind {
                LoopKind::Serial | LoopKind::Each => {
                    let from_nonneg = nonneg(lo, &env.nonneg);
                    let (lo, hi) = (self.expr(kb, lo, env)?, self.expr(kb, hi, env)?);
                    let outer = env.clone();
                    kb.for_range(lo, hi, |kb, i| {
                        let mut inner = outer.clone();
                        inner.vars.insert(*var, i);
                        if from_nonneg {
                            inner.nonneg.insert(*var);
                        }
                        self.body(kb, body, &mut inner)
                    })?;
                }
                LoopKind::Threads => {
                    let gpu = env.gpu.ok_or_else(|| self.err("a threads loop outside a block kernel"))?;
                    let outer = env.clone();
                    gpu.region(kb, |kb, t| {
                        let mut inner = outer.clone();
                        inner.vars.insert(*var, t);
                        inner.nonneg.insert(*var);
                        inner.tid = Some(t);
                        self.body(kb, body, &mut inner)
                    })?;
                }
                LoopKind::Parallel => {
                    if lo.as_const() != Some(0) {
                        return Err(self.err("a parallel loop must run from 0"));
                    }
                    let n = self.expr(kb, hi, env)?;
                    // The task is another function: it sees only its own values.
                    kb.parallel_for(n, |kb, i| {
                        let mut inner = Env { data: env.data.clone(), ..Env::default() };
                        self.scratch(kb, &mut inner)?;
                        self.load_syms(kb, &mut inner)?;
                        inner.vars.insert(*var, i);
                        inner.nonneg.insert(*var);
                        self.body(kb, body, &mut inner)
                    })?;
                }
            },
            Stmt::If { cond, then, els } => {
                let c = self.val(*cond, env)?.into_int_value();
                let outer = env.clone();
                if els.is_empty() {
                    kb.if_then(c, |kb| self.body(kb, then, &mut outer.clone()))?;
                } else {
                    kb.if_else(
                        c,
                        |kb| self.body(kb, then, &mut outer.clone()),
                        |kb| self.body(kb, els, &mut outer.clone()),
                    )?;
                }
            }
            Stmt::Local(l, ty, init) => {
                let slot = kb.alloca(llvm_ty(kb, *ty))?;
                b.build_store(slot, self.val(*init, env)?)?;
                env.locals.insert(*l, slot);
            }
            Stmt::Set(l, v) => {
                let slot = env.locals.get(l).ok_or_else(|| self.err(format!("%l{l} is not in scope here")))?;
                b.build_store(*slot, self.val(*v, env)?)?;
            }
            Stmt::Memcpy { dst, dst_off, src, src_off, bytes } => {
                let d = kb.byte_offset(self.mem(kb, *dst, env)?, self.expr(kb, dst_off, env)?)?;
                let s = kb.byte_offset(self.mem(kb, *src, env)?, self.expr(kb, src_off, env)?)?;
                kb.memcpy(d, s, self.expr(kb, bytes, env)?)?;
            }
        }
        Ok(())
    }

    fn inst<'ctx>(&self, kb: &Kb<'_, 'ctx>, id: ValId, i: &Inst, env: &Env<'ctx>) -> R<BasicValueEnum<'ctx>> {
        let b = &kb.b;
        let t = self.types.of(id);
        let v = |x: ValId| self.val(x, env);
        let iv = |x: ValId| self.val(x, env).map(|v| v.into_int_value());
        // Integer and float operations on scalars and vectors alike.
        Ok(match i {
            Inst::Const { ty, lit } => self.konst(kb, *ty, *lit)?,
            Inst::Index(e) => self.expr(kb, e, env)?.into(),
            Inst::Load { ty, param, index, align, mask } => {
                let p = self.ptr(kb, env, *param, ty.elem, self.expr(kb, index, env)?)?;
                let lt = llvm_ty(kb, *ty);
                match mask {
                    None => kb.load_aligned(lt, p, *align)?,
                    Some(m) => {
                        let zero = lt.const_zero();
                        let f = kb.intrinsic("llvm.masked.load", &[lt, p.get_type().into()])?;
                        // LLVM releases differ on whether the alignment is an argument.
                        let args: Vec<BasicMetadataValueEnum> = if f.count_params() == 4 {
                            let al = kb.cx.i32_type().const_int(*align as u64, false);
                            vec![p.into(), al.into(), v(*m)?.into(), zero.into()]
                        } else {
                            vec![p.into(), v(*m)?.into(), zero.into()]
                        };
                        let r = b.build_call(f, &args, "")?;
                        r.try_as_basic_value().basic().ok_or_else(|| self.err("masked.load returned nothing"))?
                    }
                }
            }
            Inst::Get(l) => {
                let slot = env.locals.get(l).ok_or_else(|| self.err(format!("%l{l} is not in scope here")))?;
                b.build_load(llvm_ty(kb, t), *slot, "")?
            }
            Inst::Bin(op, x, y) => self.bin(kb, *op, t, v(*x)?, v(*y)?)?,
            Inst::Un(op, x) => {
                let x = v(*x)?;
                let intr = |name: &str| kb.call_intrinsic(name, &[llvm_ty(kb, t)], &[x.into()]);
                match op {
                    UnOp::Neg => match x {
                        BasicValueEnum::VectorValue(x) => b.build_int_neg(x, "")?.as_basic_value_enum(),
                        x => b.build_int_neg(x.into_int_value(), "")?.as_basic_value_enum(),
                    },
                    UnOp::Not => match x {
                        BasicValueEnum::VectorValue(x) => b.build_not(x, "")?.as_basic_value_enum(),
                        x => b.build_not(x.into_int_value(), "")?.as_basic_value_enum(),
                    },
                    UnOp::FNeg => match x {
                        BasicValueEnum::VectorValue(x) => b.build_float_neg(x, "")?.as_basic_value_enum(),
                        x => b.build_float_neg(x.into_float_value(), "")?.as_basic_value_enum(),
                    },
                    UnOp::FAbs => intr("llvm.fabs")?,
                    UnOp::Sqrt => intr("llvm.sqrt")?,
                    UnOp::Floor => intr("llvm.floor")?,
                    UnOp::Ceil => intr("llvm.ceil")?,
                    UnOp::Trunc => intr("llvm.trunc")?,
                    UnOp::RoundEven => intr("llvm.roundeven")?,
                }
            }
            Inst::Fma(x, y, z) => {
                kb.call_intrinsic("llvm.fma", &[llvm_ty(kb, t)], &[v(*x)?.into(), v(*y)?.into(), v(*z)?.into()])?
            }
            Inst::Cmp(op, x, y) => self.cmp(kb, *op, v(*x)?, v(*y)?)?,
            Inst::Select(c, x, y) => match v(*c)? {
                BasicValueEnum::VectorValue(c) => b.build_select(c, v(*x)?, v(*y)?, "")?,
                c => b.build_select(c.into_int_value(), v(*x)?, v(*y)?, "")?,
            },
            Inst::Cast(op, x, to) => self.cast(kb, *op, self.types.of(*x), v(*x)?, *to)?,
            Inst::Splat(x, n) => kb.splat(v(*x)?, *n)?.into(),
            Inst::Extract(x, l) => {
                b.build_extract_element(v(*x)?.into_vector_value(), kb.cx.i32_type().const_int(*l as u64, false), "")?
            }
            Inst::Insert(x, a, l) => b
                .build_insert_element(
                    v(*x)?.into_vector_value(),
                    v(*a)?,
                    kb.cx.i32_type().const_int(*l as u64, false),
                    "",
                )?
                .into(),
            // One lane picked is a scalar in kir (LLVM would make a <1 x T> vector).
            Inst::Shuffle(x, y, m) if m.len() == 1 => {
                let lanes = self.types.of(*x).lanes;
                let (src, lane) = if m[0] < lanes { (*x, m[0]) } else { (*y, m[0] - lanes) };
                let i = kb.cx.i32_type().const_int(lane as u64, false);
                b.build_extract_element(v(src)?.into_vector_value(), i, "")?
            }
            Inst::Shuffle(x, y, m) => {
                let i32t = kb.cx.i32_type();
                let mask: Vec<_> = m.iter().map(|&i| i32t.const_int(i as u64, false)).collect();
                let mask = inkwell::types::VectorType::const_vector(&mask);
                b.build_shuffle_vector(v(*x)?.into_vector_value(), v(*y)?.into_vector_value(), mask, "")?.into()
            }
            Inst::Reduce(op, x) => {
                let xv = v(*x)?;
                let vt = llvm_ty(kb, self.types.of(*x));
                match op {
                    // In lane order, from -0.0 (the identity that keeps a -0.0 sum).
                    ReduceOp::FAdd => {
                        let ft = elem_type(kb, t.elem).into_float_type();
                        kb.call_intrinsic("llvm.vector.reduce.fadd", &[vt], &[ft.const_float(-0.0).into(), xv.into()])?
                    }
                    ReduceOp::Add => kb.call_intrinsic("llvm.vector.reduce.add", &[vt], &[xv.into()])?,
                    ReduceOp::FMin => kb.call_intrinsic("llvm.vector.reduce.fmin", &[vt], &[xv.into()])?,
                    ReduceOp::FMax => kb.call_intrinsic("llvm.vector.reduce.fmax", &[vt], &[xv.into()])?,
                    ReduceOp::SMin => kb.call_intrinsic("llvm.vector.reduce.smin", &[vt], &[xv.into()])?,
                    ReduceOp::SMax => kb.call_intrinsic("llvm.vector.reduce.smax", &[vt], &[xv.into()])?,
                }
            }
            Inst::Call { func, args, ty } => {
                if ty.lanes != 1 {
                    return Err(self.err(format!("vector call of {func} is not translated yet")));
                }
                let ft = elem_type(kb, ty.elem).into_float_type();
                let a: Vec<_> = args.iter().map(|x| v(*x).map(|v| v.into_float_value())).collect::<R<_>>()?;
                kb.call_math(func.strip_prefix("dlc.").unwrap_or(func), ft, &a)?.into()
            }
            Inst::Intrinsic { name, args, ty } => {
                let a: Vec<BasicMetadataValueEnum> = args.iter().map(|x| v(*x).map(Into::into)).collect::<R<_>>()?;
                let f = kb.intrinsic(&format!("llvm.{name}"), &[])?;
                let r = b.build_call(f, &a, "")?;
                let r = r.try_as_basic_value().basic().ok_or_else(|| self.err(format!("{name} returned nothing")))?;
                if r.get_type() != llvm_ty(kb, *ty) {
                    return Err(self.err(format!("{name} does not return {ty}")));
                }
                r
            }
            Inst::Opaque(x) => kb.opaque(iv(*x)?)?.into(),
            Inst::BlockReduce { op, mem } => self.block_reduce(kb, id, *op, *mem, env)?.into(),
            Inst::Lookup { table, index } => {
                let t = &self.k.tables[*table as usize];
                let g = self.table(kb, t)?;
                let et = elem_type(kb, t.elem);
                let i = b.build_int_z_extend(iv(*index)?, kb.i64t, "")?;
                let p = kb.gep(et, g, i)?;
                b.build_load(et, p, "")?
            }
        })
    }

    /// [`Inst::BlockReduce`] (value `id`): element 0 of each thread's slot of scratch
    /// array `mem`, combined over the block (clobbering the array) as the interpreter's
    /// `block_reduce` specifies.
    fn block_reduce<'ctx>(
        &self,
        kb: &Kb<'_, 'ctx>,
        id: ValId,
        op: ReduceOp,
        mem: u32,
        env: &Env<'ctx>,
    ) -> R<inkwell::values::FloatValue<'ctx>> {
        use inkwell::values::FloatValue;
        let gpu = env.gpu.ok_or_else(|| self.err("blockreduce outside a block kernel"))?;
        let fname = kb.f.get_name().to_string_lossy().into_owned();
        let red = gpu.shared(kb, &format!("{fname}.red{id}"), 33 * 4)?;
        let base = *env.scratch.get(&mem).ok_or_else(|| self.err(format!("memory {mem} is not allocated here")))?;
        let stride = env.per_thread.get(&mem).copied();
        let warps = (gpu.threads / 32) as u64;
        let identity = match op {
            ReduceOp::FMax => f32::NEG_INFINITY,
            ReduceOp::FMin => f32::INFINITY,
            _ => 0.0,
        };
        let combine = |kb: &Kb<'_, 'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>| -> R<FloatValue<'ctx>> {
            match op {
                ReduceOp::FMax => kb.fmax(a, b),
                ReduceOp::FMin => kb.select_f(kb.b.build_float_compare(FloatPredicate::OLT, b, a, "")?, b, a),
                _ => kb.fadd(a, b),
            }
        };
        // Thread `t`'s value (slot 0 of its part of the array).
        let mine = |kb: &Kb<'_, 'ctx>, t: IntValue<'ctx>| -> R<PointerValue<'ctx>> {
            match stride {
                Some(bytes) => kb.byte_offset(base, kb.mul(t, kb.c(bytes))?),
                None => Ok(base),
            }
        };
        let slot = |kb: &Kb<'_, 'ctx>, i: IntValue<'ctx>| kb.gep(kb.f32t.into(), red, i);
        let lane_and_warp = |kb: &Kb<'_, 'ctx>, t: IntValue<'ctx>| -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
            Ok((kb.b.build_and(t, kb.c(31), "")?, kb.b.build_right_shift(t, kb.c(5), false, "")?))
        };
        if gpu.ptx {
            let bfly = |kb: &Kb<'_, 'ctx>, mut x: FloatValue<'ctx>| -> R<FloatValue<'ctx>> {
                let i32t = kb.cx.i32_type();
                for off in [16u64, 8, 4, 2, 1] {
                    let y = kb
                        .call_intrinsic(
                            "llvm.nvvm.shfl.sync.bfly.f32",
                            &[],
                            &[
                                i32t.const_all_ones().into(),
                                x.into(),
                                i32t.const_int(off, false).into(),
                                i32t.const_int(31, false).into(),
                            ],
                        )?
                        .into_float_value();
                    x = combine(kb, x, y)?;
                }
                Ok(x)
            };
            gpu.region(kb, |kb, t| {
                let x = bfly(kb, kb.get(mine(kb, t)?)?)?;
                let (lane, warp) = lane_and_warp(kb, t)?;
                kb.if_then(kb.icmp(IntPredicate::EQ, lane, kb.c(0))?, |kb| kb.set(slot(kb, warp)?, x))
            })?;
            gpu.region(kb, |kb, t| {
                kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(32))?, |kb| {
                    let m = kb.get(slot(kb, kb.b.build_and(t, kb.c(31), "")?)?)?;
                    let x = kb.select_f(kb.icmp(IntPredicate::ULT, t, kb.c(warps))?, m, kb.cf(identity))?;
                    let x = bfly(kb, x)?;
                    kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| kb.set(slot(kb, kb.c(32))?, x))
                })
            })?;
        } else {
            // Lane l of a warp combines its value with lane l ^ off's, off = 16..1, every
            // lane reading before any writes (a second array).
            let tmp = kb.alloca(kb.f32t.array_type(gpu.threads).into())?;
            let at = |kb: &Kb<'_, 'ctx>, t: IntValue<'ctx>| kb.gep(kb.f32t.into(), tmp, t);
            let butterfly = |active: u64| -> R<()> {
                for off in [16u64, 8, 4, 2, 1] {
                    gpu.region(kb, |kb, t| {
                        kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(active))?, |kb| {
                            let partner = kb.b.build_xor(t, kb.c(off), "")?;
                            let x = combine(kb, kb.get(mine(kb, t)?)?, kb.get(mine(kb, partner)?)?)?;
                            kb.set(at(kb, t)?, x)
                        })
                    })?;
                    gpu.region(kb, |kb, t| {
                        kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(active))?, |kb| {
                            kb.set(mine(kb, t)?, kb.get(at(kb, t)?)?)
                        })
                    })?;
                }
                Ok(())
            };
            butterfly(gpu.threads as u64)?;
            gpu.region(kb, |kb, t| {
                let (lane, warp) = lane_and_warp(kb, t)?;
                kb.if_then(kb.icmp(IntPredicate::EQ, lane, kb.c(0))?, |kb| {
                    kb.set(slot(kb, warp)?, kb.get(mine(kb, t)?)?)
                })
            })?;
            gpu.region(kb, |kb, t| {
                kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(32))?, |kb| {
                    let m = kb.get(slot(kb, t)?)?;
                    let x = kb.select_f(kb.icmp(IntPredicate::ULT, t, kb.c(warps))?, m, kb.cf(identity))?;
                    kb.set(mine(kb, t)?, x)
                })
            })?;
            butterfly(32)?;
            gpu.region(kb, |kb, t| {
                kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| {
                    kb.set(slot(kb, kb.c(32))?, kb.get(mine(kb, t)?)?)
                })
            })?;
        }
        kb.get(slot(kb, kb.c(32))?)
    }

    fn bin<'ctx>(
        &self,
        kb: &Kb<'_, 'ctx>,
        op: BinOp,
        t: Ty,
        x: BasicValueEnum<'ctx>,
        y: BasicValueEnum<'ctx>,
    ) -> R<BasicValueEnum<'ctx>> {
        let b = &kb.b;
        if t.elem.is_float() {
            return Ok(match op {
                BinOp::FAdd => fop!(b, build_float_add, x, y),
                BinOp::FSub => fop!(b, build_float_sub, x, y),
                BinOp::FMul => fop!(b, build_float_mul, x, y),
                BinOp::FDiv => fop!(b, build_float_div, x, y),
                BinOp::FRem => fop!(b, build_float_rem, x, y),
                BinOp::FMin | BinOp::FMax | BinOp::CopySign => {
                    let name = match op {
                        BinOp::FMin => "llvm.minnum",
                        BinOp::FMax => "llvm.maxnum",
                        _ => "llvm.copysign",
                    };
                    kb.call_intrinsic(name, &[llvm_ty(kb, t)], &[x.into(), y.into()])?
                }
                _ => return Err(self.err(format!("{} on {t}", op.name()))),
            });
        }
        // Shift amounts are taken modulo the width (LLVM's shifts past it are poison).
        let bits = t.elem.bits() as u64;
        let amount = |y: BasicValueEnum<'ctx>| -> R<BasicValueEnum<'ctx>> {
            let w = self.konst(kb, Ty { elem: t.elem, lanes: t.lanes }, Lit::Int(bits as i64 - 1))?;
            Ok(iop!(b, build_and, y, w))
        };
        let minmax = |p: IntPredicate| -> R<BasicValueEnum<'ctx>> {
            Ok(match icmp(kb, p, x, y)? {
                BasicValueEnum::VectorValue(c) => b.build_select(c, x, y, "")?,
                c => b.build_select(c.into_int_value(), x, y, "")?,
            })
        };
        Ok(match op {
            BinOp::Add => iop!(b, build_int_add, x, y),
            BinOp::Sub => iop!(b, build_int_sub, x, y),
            BinOp::Mul => iop!(b, build_int_mul, x, y),
            BinOp::SDiv => iop!(b, build_int_signed_div, x, y),
            BinOp::UDiv => iop!(b, build_int_unsigned_div, x, y),
            BinOp::SRem => iop!(b, build_int_signed_rem, x, y),
            BinOp::URem => iop!(b, build_int_unsigned_rem, x, y),
            BinOp::And => iop!(b, build_and, x, y),
            BinOp::Or => iop!(b, build_or, x, y),
            BinOp::Xor => iop!(b, build_xor, x, y),
            BinOp::Shl => iop!(b, build_left_shift, x, amount(y)?),
            BinOp::LShr => iop!(b, build_right_shift, x, amount(y)?, false),
            BinOp::AShr => iop!(b, build_right_shift, x, amount(y)?, true),
            BinOp::SMin => minmax(IntPredicate::SLT)?,
            BinOp::SMax => minmax(IntPredicate::SGT)?,
            BinOp::UMin => minmax(IntPredicate::ULT)?,
            BinOp::UMax => minmax(IntPredicate::UGT)?,
            _ => return Err(self.err(format!("{} on {t}", op.name()))),
        })
    }

    fn cmp<'ctx>(
        &self,
        kb: &Kb<'_, 'ctx>,
        op: CmpOp,
        x: BasicValueEnum<'ctx>,
        y: BasicValueEnum<'ctx>,
    ) -> R<BasicValueEnum<'ctx>> {
        let b = &kb.b;
        use CmpOp::*;
        let ip = match op {
            Eq => Some(IntPredicate::EQ),
            Ne => Some(IntPredicate::NE),
            Slt => Some(IntPredicate::SLT),
            Sle => Some(IntPredicate::SLE),
            Sgt => Some(IntPredicate::SGT),
            Sge => Some(IntPredicate::SGE),
            Ult => Some(IntPredicate::ULT),
            Ule => Some(IntPredicate::ULE),
            Ugt => Some(IntPredicate::UGT),
            Uge => Some(IntPredicate::UGE),
            _ => None,
        };
        if let Some(p) = ip {
            return icmp(kb, p, x, y);
        }
        let fp = match op {
            FOeq => FloatPredicate::OEQ,
            FOne => FloatPredicate::ONE,
            FOlt => FloatPredicate::OLT,
            FOle => FloatPredicate::OLE,
            FOgt => FloatPredicate::OGT,
            FOge => FloatPredicate::OGE,
            FUno => FloatPredicate::UNO,
            FUlt => FloatPredicate::ULT,
            FUgt => FloatPredicate::UGT,
            _ => FloatPredicate::UNE,
        };
        Ok(match (x, y) {
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => {
                b.build_float_compare(fp, x, y, "")?.as_basic_value_enum()
            }
            (x, y) => b.build_float_compare(fp, x.into_float_value(), y.into_float_value(), "")?.as_basic_value_enum(),
        })
    }

    /// A saturating float-to-integer conversion (NaN to 0, out-of-range values to the
    /// nearest bound) as compares and selects around a plain conversion. LLVM's
    /// `llvm.fpto[su]i.sat` is scalarised with branches on x86 for most type pairs (a
    /// 16-lane f32 to u8 quantization ran one lane at a time); this form vectorises.
    /// Where both bounds are exact in the source type the value is clamped before the
    /// conversion; elsewhere (f32 to i32, f64 to i64) out-of-range lanes, whose
    /// conversion is poison, are replaced by selects after it.
    fn saturating<'ctx>(
        &self,
        kb: &Kb<'_, 'ctx>,
        signed: bool,
        from: Ty,
        x: BasicValueEnum<'ctx>,
        to: Ty,
    ) -> R<BasicValueEnum<'ctx>> {
        let b = &kb.b;
        if from.elem == Elem::F16 {
            // Half's range ends below 2^16: widen (exactly) so the bounds exist.
            let wide = Ty { elem: Elem::F32, lanes: from.lanes };
            let x = conv!(b, build_float_ext, x, llvm_ty(kb, wide), into_float_value, into_float_type);
            return self.saturating(kb, signed, wide, x, to);
        }
        let bits = to.elem.bits() as i32;
        let (min, max) =
            if signed { (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1) } else { (0, (1i128 << bits) - 1) };
        let mantissa = if from.elem == Elem::F64 { 53 } else { 24 };
        let select =
            |c: BasicValueEnum<'ctx>, t: BasicValueEnum<'ctx>, f: BasicValueEnum<'ctx>| -> R<BasicValueEnum<'ctx>> {
                Ok(match c {
                    BasicValueEnum::VectorValue(c) => b.build_select(c, t, f, "")?,
                    c => b.build_select(c.into_int_value(), t, f, "")?,
                })
            };
        let fk = |v: f64| self.konst(kb, from, Lit::Float(v));
        let ik = |v: i128| self.konst(kb, to, Lit::Int(v as i64));
        let lo = fk(min as f64)?;
        let nan = self.cmp(kb, CmpOp::FUno, x, x)?;
        let convert = |y: BasicValueEnum<'ctx>| -> R<BasicValueEnum<'ctx>> {
            let tt = llvm_ty(kb, to);
            Ok(if signed {
                conv!(b, build_float_to_signed_int, y, tt, into_float_value, into_int_type)
            } else {
                conv!(b, build_float_to_unsigned_int, y, tt, into_float_value, into_int_type)
            })
        };
        if bits <= mantissa {
            // Both bounds exact: clamp, zero NaN, convert (always in range).
            let hi = fk(max as f64)?;
            let y = select(self.cmp(kb, CmpOp::FOlt, x, lo)?, lo, x)?;
            let y = select(self.cmp(kb, CmpOp::FOgt, y, hi)?, hi, y)?;
            let y = select(nan, fk(0.0)?, y)?;
            return convert(y);
        }
        // The first value past the top, a power of two, is exact in every float type.
        let past = fk((max + 1) as f64)?;
        let r = convert(x)?;
        let r = select(self.cmp(kb, CmpOp::FOge, x, past)?, ik(max)?, r)?;
        let r = select(self.cmp(kb, CmpOp::FOlt, x, lo)?, ik(min)?, r)?;
        select(nan, ik(0)?, r)
    }

    fn cast<'ctx>(
        &self,
        kb: &Kb<'_, 'ctx>,
        op: CastOp,
        from: Ty,
        x: BasicValueEnum<'ctx>,
        to: Ty,
    ) -> R<BasicValueEnum<'ctx>> {
        let b = &kb.b;
        let tt = llvm_ty(kb, to);
        Ok(match op {
            CastOp::Sext => conv!(b, build_int_s_extend, x, tt, into_int_value, into_int_type),
            CastOp::Zext => conv!(b, build_int_z_extend, x, tt, into_int_value, into_int_type),
            CastOp::Trunc => conv!(b, build_int_truncate, x, tt, into_int_value, into_int_type),
            CastOp::FpExt => conv!(b, build_float_ext, x, tt, into_float_value, into_float_type),
            CastOp::FpTrunc => conv!(b, build_float_trunc, x, tt, into_float_value, into_float_type),
            CastOp::FpToSiSat | CastOp::FpToUiSat if to.elem == Elem::I1 => {
                let name = if op == CastOp::FpToSiSat { "llvm.fptosi.sat" } else { "llvm.fptoui.sat" };
                kb.call_intrinsic(name, &[tt, llvm_ty(kb, from)], &[x.into()])?
            }
            CastOp::FpToSiSat | CastOp::FpToUiSat => self.saturating(kb, op == CastOp::FpToSiSat, from, x, to)?,
            CastOp::FpToSi => conv!(b, build_float_to_signed_int, x, tt, into_float_value, into_int_type),
            CastOp::FpToUi => conv!(b, build_float_to_unsigned_int, x, tt, into_float_value, into_int_type),
            CastOp::SiToFp => conv!(b, build_signed_int_to_float, x, tt, into_int_value, into_float_type),
            CastOp::UiToFp => conv!(b, build_unsigned_int_to_float, x, tt, into_int_value, into_float_type),
            CastOp::Bitcast => b.build_bit_cast(x, tt, "")?,
        })
    }
}
