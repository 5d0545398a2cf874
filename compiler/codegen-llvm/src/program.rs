//! A kir [`Program`] to a native object: each kernel translated by `kir.rs` into an
//! internal function (the signature of the graph path's kernels: its pointers, then the
//! pool's `pfor` and state), constant buffers as private 64-byte aligned globals, and
//! the C entry points with `run_threaded` generated from the program's schedule: calls
//! with buffer pointers, copies, `if` on a byte of a buffer and counted `loop`s that
//! copy their carried buffers after each iteration.
//!
//! This is how `dlc compile` builds a CPU artifact, from a graph (through
//! `dlc_lower::program`) or from a `.kir` file. Programs with symbols are refused until
//! the C ABI passes run-time dims (the symbolic-shape issue).
use crate::kernel::Kb;
use crate::CodegenError;
use dlc_artifact::abi;
use dlc_kir::{BufKind, Expr, Program, Step};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::values::{FunctionValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};

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

/// What the schedule's code needs while it is emitted.
struct Sched<'a, 'ctx> {
    cx: &'ctx Context,
    b: Builder<'ctx>,
    run: FunctionValue<'ctx>,
    p: &'a Program,
    kernels: Vec<FunctionValue<'ctx>>,
    bufs: Vec<PointerValue<'ctx>>,
    pool: [PointerValue<'ctx>; 2],
}

impl Sched<'_, '_> {
    fn bytes(&self, buf: u32) -> R<u64> {
        let b = &self.p.buffers[buf as usize];
        constant(self.p, &b.bytes, &format!("the size of buffer '{}'", b.name))
    }

    fn copy(&self, dst: u32, src: u32) -> R<()> {
        let n = self.cx.i64_type().const_int(self.bytes(dst)?, false);
        self.b.build_memcpy(self.bufs[dst as usize], 1, self.bufs[src as usize], 1, n)?;
        Ok(())
    }

    fn steps(&self, steps: &[Step]) -> R<()> {
        let i64t = self.cx.i64_type();
        for s in steps {
            match s {
                Step::Call { kernel, args } => {
                    let mut a: Vec<inkwell::values::BasicMetadataValueEnum> =
                        args.iter().map(|b| self.bufs[*b as usize].into()).collect();
                    a.push(self.pool[0].into());
                    a.push(self.pool[1].into());
                    self.b.build_call(self.kernels[*kernel as usize], &a, "")?;
                }
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
                    self.steps(then)?;
                    self.b.build_unconditional_branch(done)?;
                    self.b.position_at_end(eb);
                    self.steps(els)?;
                    self.b.build_unconditional_branch(done)?;
                    self.b.position_at_end(done);
                }
                Step::Loop { count, carried, body } => {
                    let n = constant(self.p, count, "a loop's trip count")?;
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
                    let more = self.b.build_int_compare(IntPredicate::ULT, iv, i64t.const_int(n, false), "")?;
                    self.b.build_conditional_branch(more, lb, done)?;
                    self.b.position_at_end(lb);
                    self.steps(body)?;
                    for (to, from) in carried {
                        self.copy(*to, *from)?;
                    }
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

/// Emits program `p` into `module`: its kernels, constants and the C entry points
/// (symbols prefixed by `prefix`). Returns the number of kernel functions.
pub(crate) fn emit<'ctx>(cx: &'ctx Context, module: &Module<'ctx>, p: &Program, prefix: &str) -> R<usize> {
    dlc_kir::verify::program(p).map_err(|e| bad(format!("program '{}' does not verify: {e}", p.name)))?;
    if let Some(s) = p.symbols.first() {
        return Err(bad(format!(
            "program '{}' has run-time dim '{}': symbolic programs are not compiled yet (the C ABI does not pass \
             dims; the symbolic-shape issue)",
            p.name, s.name
        )));
    }
    let arena = constant(p, &p.arena_bytes, "the arena size")?;
    let ptr = cx.ptr_type(AddressSpace::default());
    let (i32t, i64t, i8t) = (cx.i32_type(), cx.i64_type(), cx.i8_type());
    let b = cx.create_builder();

    crate::emit_metadata(cx, module, prefix, arena)?;

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
    let run =
        module.add_function(&abi::symbol(prefix, &abi::RUN_THREADED), crate::abi_fn_type(cx, &abi::RUN_THREADED), None);
    let mut kernels = Vec::with_capacity(p.kernels.len());
    for k in &p.kernels {
        let kb = Kb::new(cx, module, &k.name, k.params.len());
        crate::kir::emit(&kb, k)?;
        kernels.push(kb.finish()?);
    }

    let entry = cx.append_basic_block(run, "entry");
    b.position_at_end(entry);
    let param = |i: u32| -> R<PointerValue<'ctx>> {
        Ok(run.get_nth_param(i).ok_or_else(|| bad("run_threaded parameter"))?.into_pointer_value())
    };
    let (ins, outs, ws) = (param(0)?, param(1)?, param(2)?);
    let pool = [param(3)?, param(4)?];
    let mut bufs = Vec::with_capacity(p.buffers.len());
    for (i, buf) in p.buffers.iter().enumerate() {
        let slot = |arr: PointerValue<'ctx>, n: u32, name: &str| -> R<PointerValue<'ctx>> {
            let at = unsafe { b.build_in_bounds_gep(ptr, arr, &[i64t.const_int(n as u64, false)], name)? };
            Ok(b.build_load(ptr, at, name)?.into_pointer_value())
        };
        bufs.push(match &buf.kind {
            BufKind::Input(n) => slot(ins, *n, &format!("in{n}"))?,
            BufKind::Output(n) => slot(outs, *n, &format!("out{n}"))?,
            BufKind::Arena(off) => {
                let off = constant(p, off, &format!("the arena offset of buffer '{}'", buf.name))?;
                unsafe { b.build_in_bounds_gep(i8t, ws, &[i64t.const_int(off, false)], "arena")? }
            }
            // A constant its kernels only read through packed copies: never touched.
            BufKind::Const(data) if data.is_empty() => ptr.const_null(),
            BufKind::Const(_) => consts[&i],
        });
    }
    let s = Sched { cx, b, run, p, kernels, bufs, pool };
    s.steps(&p.schedule)?;
    s.b.build_return(Some(&i32t.const_zero()))?;

    crate::emit_run(cx, module, prefix, run)?;
    Ok(s.kernels.len())
}
