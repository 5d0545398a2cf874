//! Helpers to build kernel functions: counted loops, index arithmetic, f32 loads and
//! stores, selects and math intrinsics. Every kernel takes its operands and results as
//! pointer parameters; shapes are compile-time constants.
use crate::CodegenError;
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicTypeEnum, FloatType, IntType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};

pub(crate) type R<T> = Result<T, CodegenError>;

/// The body of a loop nest, called once with the induction variables.
type NestBody<'b, 'a, 'ctx> = Option<Box<dyn FnOnce(&Kb<'a, 'ctx>, &[IntValue<'ctx>]) -> R<()> + 'b>>;

/// A kernel being built.
pub(crate) struct Kb<'a, 'ctx> {
    pub cx: &'ctx Context,
    pub m: &'a Module<'ctx>,
    pub b: Builder<'ctx>,
    pub f: FunctionValue<'ctx>,
    pub i64t: IntType<'ctx>,
    pub f32t: FloatType<'ctx>,
    /// The operand and result pointers (function parameters, or loaded from a task's
    /// context array).
    params: Vec<PointerValue<'ctx>>,
    /// The parallel-for callback and its state (null: run sequentially); absent in tasks.
    pool: Option<(PointerValue<'ctx>, PointerValue<'ctx>)>,
    /// Math functions come from dlc's own code and LLVM intrinsics instead of the C
    /// library (CUDA kernels and their CPU simulation: the GPU has no libm).
    portable_math: bool,
}

/// Kernels and tasks take their pointers this way: `void kernel(ptr operands..., ptr
/// results..., ptr pfor, ptr pool_state)` where `pfor(state, task, ctx, n)` runs
/// `task(ctx, i)` for every `i < n`, on any threads (`dlc_artifact::abi::PFOR` and
/// `TASK`, handed in by `<prefix>run_threaded`).
pub(crate) const POOL_PARAMS: usize = 2;

impl<'a, 'ctx> Kb<'a, 'ctx> {
    /// Declares `void name(ptr, ptr, ..., ptr pfor, ptr state)` with `nparams` noalias
    /// pointers followed by the pool parameters, with `linkage`: the type and attributes
    /// of every kernel, whether defined in this module or (a declaration) in another.
    pub fn declare(
        cx: &'ctx Context,
        m: &Module<'ctx>,
        name: &str,
        nparams: usize,
        linkage: Linkage,
    ) -> FunctionValue<'ctx> {
        let ptr = cx.ptr_type(AddressSpace::default());
        let params: Vec<_> = (0..nparams + POOL_PARAMS).map(|_| ptr.into()).collect();
        let f = m.add_function(name, cx.void_type().fn_type(&params, false), Some(linkage));
        let noalias = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("noalias"), 0);
        let nounwind = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("nounwind"), 0);
        for i in 0..nparams as u32 {
            f.add_attribute(AttributeLoc::Param(i), noalias);
        }
        f.add_attribute(AttributeLoc::Function, nounwind);
        // Kernels are called once each from `run`; inlining them all into it gains nothing
        // and makes LLVM's function passes superlinearly slower.
        let noinline = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("noinline"), 0);
        f.add_attribute(AttributeLoc::Function, noinline);
        f
    }

    /// Starts the kernel `name` (see [`Kb::declare`]), with `linkage`: internal when
    /// `run` is in the same module, external (and hidden) when the kernel goes into a
    /// module of its own, compiled on another thread.
    pub fn new(cx: &'ctx Context, m: &'a Module<'ctx>, name: &str, nparams: usize, linkage: Linkage) -> Self {
        let f = Self::declare(cx, m, name, nparams, linkage);
        if linkage != Linkage::Internal {
            f.as_global_value().set_visibility(inkwell::GlobalVisibility::Hidden);
        }
        let b = cx.create_builder();
        b.position_at_end(cx.append_basic_block(f, "entry"));
        let p = |i: usize| f.get_nth_param(i as u32).expect("param exists").into_pointer_value();
        let pool = Some((p(nparams), p(nparams + 1)));
        Kb {
            cx,
            m,
            b,
            f,
            i64t: cx.i64_type(),
            f32t: cx.f32_type(),
            params: (0..nparams).map(p).collect(),
            pool,
            portable_math: false,
        }
    }

    /// A builder for the body of `f` (already positioned by `b`) whose operand and result
    /// pointers are `params`, with no thread pool and portable math (the GPU kernels).
    pub fn portable(
        cx: &'ctx Context,
        m: &'a Module<'ctx>,
        b: Builder<'ctx>,
        f: FunctionValue<'ctx>,
        params: Vec<PointerValue<'ctx>>,
    ) -> Self {
        Kb { cx, m, b, f, i64t: cx.i64_type(), f32t: cx.f32_type(), params, pool: None, portable_math: true }
    }

    /// Parameter `i` as a pointer.
    pub fn param(&self, i: usize) -> PointerValue<'ctx> {
        self.params[i]
    }

    /// Runs `body(kb, i)` for every `i < n`: when the kernel was given a pool, `body` is
    /// emitted into a task function `void task(ptr ctx, i64 i)` (reading the kernel's
    /// pointers from `ctx`) that the pool runs on its threads; without a pool (or inside
    /// a task) the kernel loops over the task itself. Iterations must write disjoint data.
    /// `n` is an `i64` (a constant, or a count computed at run time).
    pub fn parallel_for(&self, n: IntValue<'ctx>, body: impl FnOnce(&Kb<'_, 'ctx>, IntValue<'ctx>) -> R<()>) -> R<()> {
        let Some((pfor, state)) = self.pool else {
            return self.for_range(self.c(0), n, |kb, i| body(kb, i));
        };
        let ptr = self.cx.ptr_type(AddressSpace::default());
        let name = format!("{}.task", self.f.get_name().to_string_lossy());
        let task_ty = crate::abi_fn_type(self.cx, &dlc_artifact::abi::TASK);
        let task = self.m.add_function(&name, task_ty, Some(Linkage::Internal));
        let nounwind = self.cx.create_enum_attribute(Attribute::get_named_enum_kind_id("nounwind"), 0);
        task.add_attribute(AttributeLoc::Function, nounwind);
        let tb = self.cx.create_builder();
        tb.position_at_end(self.cx.append_basic_block(task, "entry"));
        let ctx = task.get_nth_param(0).expect("ctx").into_pointer_value();
        let mut params = Vec::with_capacity(self.params.len());
        for i in 0..self.params.len() {
            let slot = unsafe { tb.build_in_bounds_gep(ptr, ctx, &[self.i64t.const_int(i as u64, false)], "")? };
            params.push(tb.build_load(ptr, slot, "")?.into_pointer_value());
        }
        let tkb = Kb {
            cx: self.cx,
            m: self.m,
            b: tb,
            f: task,
            i64t: self.i64t,
            f32t: self.f32t,
            params,
            pool: None,
            portable_math: self.portable_math,
        };
        let i = task.get_nth_param(1).expect("index").into_int_value();
        body(&tkb, i)?;
        tkb.finish()?;
        // In the kernel: the context array, then the pool or a plain loop over the task.
        let arr = self.alloca(ptr.array_type(self.params.len() as u32).into())?;
        for (k, p) in self.params.iter().enumerate() {
            let slot = self.gep(ptr.into(), arr, self.c(k as u64))?;
            self.b.build_store(slot, *p)?;
        }
        // No pool, or a single task (a run-time count of 1: a batch of one), runs here.
        let null = self.b.build_is_null(pfor, "")?;
        let one = self.b.build_int_compare(IntPredicate::SLT, n, self.c(2), "")?;
        let no_pool = self.b.build_or(null, one, "")?;
        let seq = self.cx.append_basic_block(self.f, "sequential");
        let par = self.cx.append_basic_block(self.f, "pool");
        let done = self.cx.append_basic_block(self.f, "joined");
        self.b.build_conditional_branch(no_pool, seq, par)?;
        self.b.position_at_end(seq);
        self.for_range(self.c(0), n, |kb, i| {
            kb.b.build_call(task, &[arr.into(), i.into()], "")?;
            Ok(())
        })?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(par);
        let pfor_ty = crate::abi_fn_type(self.cx, &dlc_artifact::abi::PFOR);
        let task_ptr = task.as_global_value().as_pointer_value();
        self.b.build_indirect_call(pfor_ty, pfor, &[state.into(), task_ptr.into(), arr.into(), n.into()], "")?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// Finishes the function.
    pub fn finish(self) -> R<FunctionValue<'ctx>> {
        self.b.build_return(None)?;
        Ok(self.f)
    }

    pub fn c(&self, v: u64) -> IntValue<'ctx> {
        self.i64t.const_int(v, false)
    }

    pub fn cf(&self, v: f32) -> FloatValue<'ctx> {
        self.f32t.const_float(v as f64)
    }

    pub fn add(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_nsw_add(a, b, "")?)
    }

    pub fn mul(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_nsw_mul(a, b, "")?)
    }

    /// `for i in lo..hi { body(i) }` (nothing when `lo >= hi`, signed compare).
    pub fn for_range(
        &self,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        body: impl FnOnce(&Self, IntValue<'ctx>) -> R<()>,
    ) -> R<()> {
        let pre = self.b.get_insert_block().expect("positioned");
        let head = self.cx.append_basic_block(self.f, "loop");
        let exit = self.cx.append_basic_block(self.f, "loop.exit");
        let any = self.b.build_int_compare(IntPredicate::SLT, lo, hi, "")?;
        self.b.build_conditional_branch(any, head, exit)?;
        self.b.position_at_end(head);
        let phi = self.b.build_phi(self.i64t, "i")?;
        phi.add_incoming(&[(&lo, pre)]);
        let i = phi.as_basic_value().into_int_value();
        body(self, i)?;
        let next = self.b.build_int_nsw_add(i, self.c(1), "")?;
        let latch = self.b.get_insert_block().expect("positioned");
        phi.add_incoming(&[(&next, latch)]);
        let more = self.b.build_int_compare(IntPredicate::SLT, next, hi, "")?;
        self.b.build_conditional_branch(more, head, exit)?;
        self.b.position_at_end(exit);
        Ok(())
    }

    /// `if cond { body }`.
    pub fn if_then(&self, cond: IntValue<'ctx>, body: impl FnOnce(&Self) -> R<()>) -> R<()> {
        let then = self.cx.append_basic_block(self.f, "then");
        let done = self.cx.append_basic_block(self.f, "endif");
        self.b.build_conditional_branch(cond, then, done)?;
        self.b.position_at_end(then);
        body(self)?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// `if cond { then } else { other }`.
    pub fn if_else(
        &self,
        cond: IntValue<'ctx>,
        then: impl FnOnce(&Self) -> R<()>,
        other: impl FnOnce(&Self) -> R<()>,
    ) -> R<()> {
        let (t, e) = (self.cx.append_basic_block(self.f, "then"), self.cx.append_basic_block(self.f, "else"));
        let done = self.cx.append_basic_block(self.f, "endif");
        self.b.build_conditional_branch(cond, t, e)?;
        self.b.position_at_end(t);
        then(self)?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(e);
        other(self)?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// `v`, through an empty inline-asm statement, so LLVM cannot relate it to other
    /// values: addresses built from it are not proven equal to ones built from another
    /// opaque value. Used to keep LLVM from merging loads whose reuse would need more
    /// registers than the target has (the loads stay, and so do the registers).
    pub fn opaque(&self, v: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        let ty = self.i64t.fn_type(&[self.i64t.into()], false);
        let asm = self.cx.create_inline_asm(ty, String::new(), "=r,0".into(), false, false, None, false);
        let r = self.b.build_indirect_call(ty, asm, &[v.into()], "")?;
        Ok(r.try_as_basic_value().basic().expect("asm returns i64").into_int_value())
    }

    /// `for i in 0..n`.
    pub fn for_n(&self, n: u64, body: impl FnOnce(&Self, IntValue<'ctx>) -> R<()>) -> R<()> {
        self.for_range(self.c(0), self.c(n), body)
    }

    /// A loop nest over `extents` (outermost first); `body` gets the induction variables.
    pub fn nest(&self, extents: &[u64], body: impl FnOnce(&Self, &[IntValue<'ctx>]) -> R<()>) -> R<()> {
        fn go<'a, 'ctx>(
            kb: &Kb<'a, 'ctx>,
            extents: &[u64],
            idx: &mut Vec<IntValue<'ctx>>,
            body: &mut NestBody<'_, 'a, 'ctx>,
        ) -> R<()> {
            match extents.split_first() {
                None => (body.take().expect("body runs once"))(kb, idx),
                Some((&n, rest)) => kb.for_n(n, |kb, i| {
                    idx.push(i);
                    go(kb, rest, idx, body)
                }),
            }
        }
        let mut body: NestBody<'_, 'a, 'ctx> = Some(Box::new(body));
        go(self, extents, &mut Vec::new(), &mut body)
    }

    /// Address of element `idx` of type `ty` at `base`.
    pub fn gep(&self, ty: BasicTypeEnum<'ctx>, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> R<PointerValue<'ctx>> {
        Ok(unsafe { self.b.build_in_bounds_gep(ty, base, &[idx], "")? })
    }

    pub fn fadd(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_float_add(a, b, "")?)
    }

    /// `a > b ? a : b` (a NaN in `b` is dropped, a NaN in `a` kept).
    pub fn fmax(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let lt = self.b.build_float_compare(FloatPredicate::OLT, a, b, "")?;
        Ok(self.b.build_select(lt, b, a, "")?.into_float_value())
    }

    pub fn select_f(&self, c: IntValue<'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_select(c, a, b, "")?.into_float_value())
    }

    pub fn select_i(&self, c: IntValue<'ctx>, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_select(c, a, b, "")?.into_int_value())
    }

    pub fn icmp(&self, p: IntPredicate, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_int_compare(p, a, b, "")?)
    }

    pub fn and(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.b.build_and(a, b, "")?)
    }

    /// `0 <= i < n` as one unsigned compare.
    pub fn in_bounds(&self, i: IntValue<'ctx>, n: u64) -> R<IntValue<'ctx>> {
        self.icmp(IntPredicate::ULT, i, self.c(n))
    }

    /// Calls a C math library function over `ty` (`expf` for f32, `exp` for f64...),
    /// declaring it on first use.
    pub fn call_math(&self, name: &str, ty: FloatType<'ctx>, args: &[FloatValue<'ctx>]) -> R<FloatValue<'ctx>> {
        if self.portable_math {
            return self.portable_math(name, ty, args);
        }
        let f = self.m.get_function(name).unwrap_or_else(|| {
            let params: Vec<_> = args.iter().map(|_| ty.into()).collect();
            let f = self.m.add_function(name, ty.fn_type(&params, false), Some(Linkage::External));
            // A pure function to LLVM (dlc never reads errno): a call whose arguments do
            // not change in a loop is hoisted out of it (a broadcast operand's sigmoid in
            // a fused kernel, once per channel instead of once per pixel).
            for (kind, value) in [("memory", 0), ("nounwind", 0), ("willreturn", 0), ("nosync", 0)] {
                let a = self.cx.create_enum_attribute(Attribute::get_named_enum_kind_id(kind), value);
                f.add_attribute(inkwell::attributes::AttributeLoc::Function, a);
            }
            f
        });
        let args: Vec<_> = args.iter().map(|a| (*a).into()).collect();
        let call = self.b.build_call(f, &args, "")?;
        call.try_as_basic_value()
            .basic()
            .map(|v| v.into_float_value())
            .ok_or_else(|| CodegenError::Llvm(format!("{name} returned no value")))
    }

    /// The C math library function `name` without the C library: LLVM intrinsics that
    /// every target lowers, and dlc's own implementations (`dlc_lower::fastmath`, error
    /// bounds tested in its interpreter).
    fn portable_math(&self, name: &str, ty: FloatType<'ctx>, args: &[FloatValue<'ctx>]) -> R<FloatValue<'ctx>> {
        let missing = || CodegenError::NoMath { function: name.to_string() };
        // `expf` for f32, `exp` for f64: the base name.
        let f32 = ty == self.f32t;
        let base = if f32 { name.strip_suffix('f').unwrap_or(name) } else { name };
        let intrinsic = match base {
            "sqrt" => "llvm.sqrt",
            "fabs" => "llvm.fabs",
            "floor" => "llvm.floor",
            "ceil" => "llvm.ceil",
            "trunc" => "llvm.trunc",
            "roundeven" => "llvm.roundeven",
            "fma" => "llvm.fma",
            _ => "",
        };
        if !intrinsic.is_empty() {
            let a: Vec<BasicMetadataValueEnum> = args.iter().map(|a| (*a).into()).collect();
            return Ok(self.call_intrinsic(intrinsic, &[ty.into()], &a)?.into_float_value());
        }
        if let ("fmod", [a, b]) = (base, args) {
            // C's fmod: the remainder with the dividend's sign, which is LLVM's frem.
            return Ok(self.b.build_float_rem(*a, *b, "")?);
        }
        if !f32 {
            return Err(missing());
        }
        // dlc's own implementations, as kir (dlc_lower::fastmath), translated in place.
        let mut known = true;
        let typed: Vec<(inkwell::values::BasicValueEnum<'ctx>, dlc_kir::Ty)> =
            args.iter().map(|a| ((*a).into(), dlc_kir::Ty::scalar(dlc_kir::Elem::F32))).collect();
        let r = crate::kir::inline(self, &typed, |b, a| {
            dlc_lower::fastmath::call(b, name, a).unwrap_or_else(|| {
                known = false;
                a[0]
            })
        })?;
        if !known {
            return Err(missing());
        }
        Ok(r.into_float_value())
    }

    /// A stack slot of type `ty` in the entry block.
    pub fn alloca(&self, ty: BasicTypeEnum<'ctx>) -> R<PointerValue<'ctx>> {
        let entry = self.f.get_first_basic_block().expect("entry block");
        let tmp = self.cx.create_builder();
        match entry.get_first_instruction() {
            Some(i) => tmp.position_before(&i),
            None => tmp.position_at_end(entry),
        }
        Ok(tmp.build_alloca(ty, "acc")?)
    }

    /// Loads an f32 stack slot.
    pub fn get(&self, slot: PointerValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.b.build_load(self.f32t, slot, "")?.into_float_value())
    }

    /// Stores to an f32 stack slot.
    pub fn set(&self, slot: PointerValue<'ctx>, v: FloatValue<'ctx>) -> R<()> {
        self.b.build_store(slot, v)?;
        Ok(())
    }

    /// `memcpy(dst, src, bytes)`.
    pub fn memcpy(&self, dst: PointerValue<'ctx>, src: PointerValue<'ctx>, bytes: IntValue<'ctx>) -> R<()> {
        self.b.build_memcpy(dst, 1, src, 1, bytes)?;
        Ok(())
    }

    /// LLVM intrinsic `name`, overloaded on `types` (empty when it is not overloaded),
    /// declared in the module on first use.
    pub fn intrinsic(&self, name: &str, types: &[BasicTypeEnum<'ctx>]) -> R<FunctionValue<'ctx>> {
        inkwell::intrinsics::Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.m, types))
            .ok_or_else(|| CodegenError::Llvm(format!("no intrinsic {name} for {types:?}")))
    }

    /// Calls intrinsic `name` (see [`Kb::intrinsic`]) and returns its value.
    pub fn call_intrinsic(
        &self,
        name: &str,
        types: &[BasicTypeEnum<'ctx>],
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> R<BasicValueEnum<'ctx>> {
        let f = self.intrinsic(name, types)?;
        let v = self.b.build_call(f, args, "")?;
        v.try_as_basic_value().basic().ok_or_else(|| CodegenError::Llvm(format!("{name} returned no value")))
    }

    /// `x` in every lane of an `n`-lane vector.
    pub fn splat(&self, x: BasicValueEnum<'ctx>, n: u32) -> R<VectorValue<'ctx>> {
        let i32t = self.cx.i32_type();
        let vt = match x {
            BasicValueEnum::FloatValue(f) => f.get_type().vec_type(n),
            BasicValueEnum::IntValue(i) => i.get_type().vec_type(n),
            _ => return Err(CodegenError::Llvm("splat of a non-scalar".into())),
        };
        let v = self.b.build_insert_element(vt.get_undef(), x, i32t.const_zero(), "")?;
        Ok(self.b.build_shuffle_vector(v, vt.get_undef(), i32t.vec_type(n).const_zero(), "")?)
    }

    /// A load of `ty` from `ptr` that assumes only `align` bytes of alignment.
    pub fn load_aligned(
        &self,
        ty: BasicTypeEnum<'ctx>,
        ptr: PointerValue<'ctx>,
        align: u32,
    ) -> R<BasicValueEnum<'ctx>> {
        let v = self.b.build_load(ty, ptr, "")?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(align).map_err(|e| CodegenError::Llvm(e.to_string()))?;
        }
        Ok(v)
    }

    /// A store of `v` to `ptr` that assumes only `align` bytes of alignment.
    pub fn store_aligned(&self, ptr: PointerValue<'ctx>, v: impl BasicValue<'ctx>, align: u32) -> R<()> {
        let st = self.b.build_store(ptr, v)?;
        st.set_alignment(align).map_err(|e| CodegenError::Llvm(e.to_string()))?;
        Ok(())
    }

    /// `ptr + bytes`.
    pub fn byte_offset(&self, p: PointerValue<'ctx>, bytes: IntValue<'ctx>) -> R<PointerValue<'ctx>> {
        self.gep(self.cx.i8_type().into(), p, bytes)
    }
}
