//! CUDA: the graph's kernels for NVIDIA GPUs, as PTX through LLVM's NVPTX backend, and
//! the same kernels compiled for the host so they can be checked without a GPU.
//!
//! A GPU kernel is written once against [`Gk`], a block-level builder: code outside a
//! [`Gk::threads`] region is uniform across the thread block, code inside runs once per
//! thread (`tid`), and regions are separated by barriers. Shared memory
//! ([`Gk::shared`]), per-thread storage that lives across regions ([`Gk::private`]) and
//! warp-shuffle reductions ([`Gk::block_reduce`]) are its other primitives. Each
//! primitive has two meanings:
//!
//! - [`Mode::Ptx`]: `tid` and the block index are the PTX special registers, a region
//!   ends in `bar.sync`, shared memory is `.shared` (address space 3), private storage
//!   is a per-thread stack slot (registers after LLVM's SROA), reductions use
//!   `shfl.sync.bfly`;
//! - [`Mode::Sim`]: the kernel is a host function called once per block (the runtime
//!   loops over the grid); a region is a loop over the block's threads, so everything a
//!   barrier orders is ordered; shared memory is a stack array of the block call;
//!   private storage is one array slot per thread; a shuffle is modelled lane by lane
//!   with the same butterfly order, so a reduction gives the same bits as on the GPU.
//!
//! Both modules come from the same generator code (`kernels.rs`), so `dlc run
//! --simulate` runs what the GPU would run, with grid and block indices as loops.
use crate::kernel::{Kb, R};
use crate::lower::NodeInfo;
use crate::{target_module, write, CodegenError, TargetSpec};
use dlc_artifact::{BufferRef, Launch, LaunchTable, OutputCopy, LAUNCH_VERSION};
use dlc_ir::{Graph, Op, Value};
use dlc_passes::{Location, MemoryPlan};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::targets::FileType;
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use std::cell::Cell;
use std::collections::HashMap;

mod kernels;

/// The GPU architecture used when `--cpu` names none.
pub const DEFAULT_SM: &str = "sm_80";

pub use dlc_artifact::is_cuda_triple as is_cuda;

/// A CUDA artifact's contents.
#[derive(Debug, Clone)]
pub struct CudaCompiled {
    /// The kernels as PTX text (`model.ptx`).
    pub ptx: String,
    /// The same kernels for the host, one exported function per kernel taking
    /// `(void **args, int64 block_x, int64 block_y, int64 block_z)`: a PIC object to
    /// link into `model.sim.so`.
    pub sim_object: Vec<u8>,
    /// How to run them.
    pub table: LaunchTable,
    /// Every weight, at the offsets the table names (`model.weights`).
    pub weights: Vec<u8>,
    /// The optimised NVPTX LLVM IR, when asked for.
    pub llvm_ir: Option<String>,
}

/// Alignment of each weight in `model.weights` (and so on the device).
const WEIGHT_ALIGN: usize = 256;

/// How a kernel is launched: grid in blocks, threads per block, static shared bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub grid: [u32; 3],
    pub threads: u32,
    pub shared_bytes: u32,
    /// One thread runs the op's CPU loop nest.
    pub serial: bool,
}

/// Lowers `g` (planned by `plan`) for the CUDA `target` (`nvptx64-nvidia-cuda`, CPU
/// `sm_XX`); kernel symbols start with `prefix`.
pub fn compile_cuda(
    g: &Graph,
    plan: &MemoryPlan,
    target: &TargetSpec,
    prefix: &str,
    llvm_ir: bool,
) -> Result<CudaCompiled, CodegenError> {
    if !target.cpu.starts_with("sm_") {
        return Err(CodegenError::Target {
            triple: target.triple.clone(),
            reason: format!("'{}' is not a GPU architecture; use --cpu sm_80 or sm_90", target.cpu),
        });
    }
    let mut weights = Vec::new();
    let mut weight_at = HashMap::new();
    for &id in &plan.order {
        if let Op::Const(c) = &g.node(id).op {
            weights.resize(weights.len().next_multiple_of(WEIGHT_ALIGN), 0);
            weight_at.insert(id, weights.len() as u64);
            weights.extend_from_slice(c.value.bytes());
        }
    }
    let buffer = |v: Value| match plan.loc(v) {
        Location::Input(i) => BufferRef::Input(i),
        Location::Output(i) => BufferRef::Output(i),
        Location::Const(id) => BufferRef::Weight(weight_at[&id]),
        Location::Arena(off) => BufferRef::Arena(off),
    };

    // The device code.
    let tm = target.machine()?;
    let cx = Context::create();
    let module = target_module(&cx, &g.name, &tm);
    let kernels = emit_kernels(&cx, &module, g, plan, Mode::Ptx, prefix, target)?;
    let ptx_ir = optimise(&module, &tm, llvm_ir)?;
    let ptx = String::from_utf8_lossy(&write(&module, &tm, FileType::Assembly)?).into_owned();

    // The same kernels for the host.
    let host = TargetSpec::host();
    let htm = host.machine()?;
    let hcx = Context::create();
    let hmod = target_module(&hcx, &g.name, &htm);
    let sim = emit_kernels(&hcx, &hmod, g, plan, Mode::Sim, prefix, target)?;
    if sim.iter().map(|k| k.1).ne(kernels.iter().map(|k| k.1)) {
        return Err(CodegenError::Llvm("internal: the simulated kernels were launched differently".into()));
    }
    optimise(&hmod, &htm, false)?;
    let sim_object = write(&hmod, &htm, FileType::Object)?;

    let launches = kernels
        .into_iter()
        .map(|(name, geo, id)| {
            let node = g.node(id);
            let mut args: Vec<BufferRef> = g.operands(id).iter().map(|v| buffer(*v)).collect();
            args.extend((0..node.outputs.len() as u32).map(|port| buffer(Value { node: id, port })));
            Launch {
                kernel: name,
                node: node.name.clone(),
                op: node.op.mnemonic().to_string(),
                grid: geo.grid,
                block: [geo.threads, 1, 1],
                shared_bytes: geo.shared_bytes,
                args,
                serial: geo.serial,
            }
        })
        .collect();
    let copies = g
        .outputs()
        .iter()
        .enumerate()
        .filter(|(i, (_, v))| plan.loc(*v) != Location::Output(*i))
        .map(|(i, (_, v))| OutputCopy {
            output: i,
            from: buffer(*v),
            bytes: g.value_type(*v).size_bytes().unwrap_or(0),
        })
        .collect();
    let table = LaunchTable {
        version: LAUNCH_VERSION,
        arena_bytes: plan.arena_bytes,
        weight_bytes: weights.len() as u64,
        launches,
        copies,
    };
    Ok(CudaCompiled { ptx, sim_object, table, weights, llvm_ir: ptx_ir })
}

fn optimise(
    module: &Module<'_>,
    tm: &inkwell::targets::TargetMachine,
    print: bool,
) -> Result<Option<String>, CodegenError> {
    module.verify().map_err(|e| CodegenError::Llvm(format!("invalid module: {}", e.to_string())))?;
    let opts = inkwell::passes::PassBuilderOptions::create();
    opts.set_loop_unrolling(true);
    module.run_passes("default<O3>", tm, opts).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    Ok(print.then(|| module.print_to_string().to_string()))
}

/// One kernel per compute node, in plan order: name, geometry, node.
fn emit_kernels<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    g: &Graph,
    plan: &MemoryPlan,
    mode: Mode,
    prefix: &str,
    target: &TargetSpec,
) -> Result<Vec<(String, Geometry, dlc_ir::NodeId)>, CodegenError> {
    let mut out = Vec::new();
    for &id in &plan.order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) || plan.views.contains(&id) {
            continue;
        }
        let info = NodeInfo::of(g, id, target)?;
        let name = format!("{prefix}k{}_{}", out.len(), node.op.mnemonic());
        let f = Factory { cx, m, mode, name: &name, nparams: info.inputs.len() + info.outputs.len() };
        let geo = kernels::lower(&f, g, id, &info).map_err(|e| match e {
            CodegenError::NoMath { function } => {
                info.unsupported(format!("needs '{function}', which dlc's CUDA kernels do not provide yet"))
            }
            e => e,
        })?;
        out.push((name, geo, id));
    }
    Ok(out)
}

/// What a kernel is compiled as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A PTX `.entry` for the GPU.
    Ptx,
    /// A host function run once per block.
    Sim,
}

/// Makes the kernel of one node (the generator picks the block size).
pub(crate) struct Factory<'f, 'ctx> {
    cx: &'ctx Context,
    m: &'f Module<'ctx>,
    mode: Mode,
    name: &'f str,
    nparams: usize,
}

impl<'f, 'ctx> Factory<'f, 'ctx> {
    /// Starts the kernel with `threads` threads per block (a multiple of 32, at most 1024).
    pub fn kernel(&self, threads: u32) -> R<Gk<'f, 'ctx>> {
        Gk::new(self, threads)
    }
}

/// The reductions [`Gk::block_reduce`] computes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reduce {
    Sum,
    Max,
    Min,
}

impl Reduce {
    /// The value that changes nothing.
    pub fn identity(self) -> f32 {
        match self {
            Reduce::Sum => 0.0,
            Reduce::Max => f32::NEG_INFINITY,
            Reduce::Min => f32::INFINITY,
        }
    }

    /// `a (op) b`.
    pub fn combine<'ctx>(self, kb: &Kb<'_, 'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        match self {
            Reduce::Sum => kb.fadd(a, b),
            Reduce::Max => kb.fmax(a, b),
            // `b < a ? b : a`, as fmax is `a < b ? b : a`.
            Reduce::Min => kb.select_f(kb.b.build_float_compare(inkwell::FloatPredicate::OLT, b, a, "")?, b, a),
        }
    }
}

/// Per-thread f32 storage that lives across regions: `n` slots per thread.
#[derive(Clone, Copy)]
pub(crate) struct Private<'ctx> {
    base: PointerValue<'ctx>,
    n: u64,
    per_thread: bool,
}

impl<'ctx> Private<'ctx> {
    /// Slot `i` of thread `tid`.
    pub fn at(&self, kb: &Kb<'_, 'ctx>, tid: IntValue<'ctx>, i: u64) -> R<PointerValue<'ctx>> {
        let idx = if self.per_thread { kb.add(kb.mul(tid, kb.c(self.n))?, kb.c(i))? } else { kb.c(i) };
        kb.gep(kb.f32t.into(), self.base, idx)
    }
}

/// A GPU kernel being built (see the module doc).
pub(crate) struct Gk<'a, 'ctx> {
    /// The builder, positioned at block-uniform code.
    pub kb: Kb<'a, 'ctx>,
    mode: Mode,
    /// Threads per block.
    pub threads: u32,
    /// Block index along x, y, z (i64).
    pub bid: [IntValue<'ctx>; 3],
    tid: Option<IntValue<'ctx>>,
    shared_bytes: Cell<u64>,
    name: String,
}

impl<'a, 'ctx> Gk<'a, 'ctx> {
    fn new(f: &Factory<'a, 'ctx>, threads: u32) -> R<Self> {
        let cx = f.cx;
        let ptr = cx.ptr_type(AddressSpace::default());
        let i64t = cx.i64_type();
        let b = cx.create_builder();
        let nounwind = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("nounwind"), 0);
        let noalias = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("noalias"), 0);
        match f.mode {
            Mode::Ptx => {
                let ty = cx.void_type().fn_type(&vec![ptr.into(); f.nparams], false);
                let func = f.m.add_function(f.name, ty, None);
                // The PTX kernel calling convention (`ptx_kernel`): an `.entry`.
                func.set_call_conventions(71);
                func.add_attribute(AttributeLoc::Function, nounwind);
                func.add_attribute(
                    AttributeLoc::Function,
                    cx.create_string_attribute("nvvm.maxntid", &threads.to_string()),
                );
                b.position_at_end(cx.append_basic_block(func, "entry"));
                let params: Vec<PointerValue> = func.get_param_iter().map(|p| p.into_pointer_value()).collect();
                let kb = Kb::portable(cx, f.m, b, func, params);
                let sreg = |name: &str| -> R<IntValue<'ctx>> {
                    let v = kb.call_intrinsic(name, &[], &[])?.into_int_value();
                    Ok(kb.b.build_int_z_extend(v, i64t, "")?)
                };
                let bid = [
                    sreg("llvm.nvvm.read.ptx.sreg.ctaid.x")?,
                    sreg("llvm.nvvm.read.ptx.sreg.ctaid.y")?,
                    sreg("llvm.nvvm.read.ptx.sreg.ctaid.z")?,
                ];
                let tid = Some(sreg("llvm.nvvm.read.ptx.sreg.tid.x")?);
                Ok(Gk { kb, mode: f.mode, threads, bid, tid, shared_bytes: Cell::new(0), name: f.name.into() })
            }
            Mode::Sim => {
                let ty = cx.void_type().fn_type(&[ptr.into(), i64t.into(), i64t.into(), i64t.into()], false);
                let func = f.m.add_function(f.name, ty, None);
                func.add_attribute(AttributeLoc::Function, nounwind);
                func.add_attribute(AttributeLoc::Param(0), noalias);
                b.position_at_end(cx.append_basic_block(func, "entry"));
                let argv = func.get_nth_param(0).expect("argv").into_pointer_value();
                let mut params = Vec::with_capacity(f.nparams);
                for i in 0..f.nparams {
                    let slot = unsafe { b.build_in_bounds_gep(ptr, argv, &[i64t.const_int(i as u64, false)], "")? };
                    params.push(b.build_load(ptr, slot, "")?.into_pointer_value());
                }
                let p = |i: u32| func.get_nth_param(i).expect("block index").into_int_value();
                let bid = [p(1), p(2), p(3)];
                let kb = Kb::portable(cx, f.m, b, func, params);
                Ok(Gk { kb, mode: f.mode, threads, bid, tid: None, shared_bytes: Cell::new(0), name: f.name.into() })
            }
        }
    }

    /// Runs `body(kb, tid)` on every thread of the block, then a barrier.
    pub fn threads(&self, body: impl FnOnce(&Kb<'a, 'ctx>, IntValue<'ctx>) -> R<()>) -> R<()> {
        match self.mode {
            Mode::Ptx => {
                body(&self.kb, self.tid.expect("ptx kernels read tid"))?;
                // `bar.sync 0`: every thread of the block, all arriving at the same point.
                let bar = self.kb.intrinsic("llvm.nvvm.barrier.cta.sync.aligned.all", &[])?;
                self.kb.b.build_call(bar, &[self.kb.cx.i32_type().const_zero().into()], "")?;
                Ok(())
            }
            Mode::Sim => self.kb.for_n(self.threads as u64, body),
        }
    }

    /// `n` f32 of shared memory (a generic pointer to it).
    pub fn shared(&self, n: u64) -> R<PointerValue<'ctx>> {
        self.shared_bytes.set(self.shared_bytes.get() + 4 * n);
        let ty = self.kb.f32t.array_type(n as u32);
        match self.mode {
            Mode::Ptx => {
                let gv = self.kb.m.add_global(ty, Some(AddressSpace::from(3u16)), &format!("{}.shared", self.name));
                gv.set_linkage(Linkage::Internal);
                gv.set_initializer(&ty.get_undef());
                gv.set_alignment(16);
                Ok(gv.as_pointer_value().const_address_space_cast(self.kb.cx.ptr_type(AddressSpace::default())))
            }
            Mode::Sim => self.kb.alloca(ty.into()),
        }
    }

    /// `n` f32 of private storage per thread.
    pub fn private(&self, n: u64) -> R<Private<'ctx>> {
        let per_thread = self.mode == Mode::Sim;
        let total = if per_thread { n * self.threads as u64 } else { n };
        let base = self.kb.alloca(self.kb.f32t.array_type(total as u32).into())?;
        Ok(Private { base, n, per_thread })
    }

    /// `for (i = start; i < end; i += step) body(i)`, inside a region.
    pub fn strided(
        kb: &Kb<'a, 'ctx>,
        start: IntValue<'ctx>,
        end: u64,
        step: u64,
        body: impl FnOnce(&Kb<'a, 'ctx>, IntValue<'ctx>) -> R<()>,
    ) -> R<()> {
        let span = kb.b.build_int_sub(kb.c(end + step - 1), start, "")?;
        let count = kb.b.build_int_signed_div(span, kb.c(step), "")?;
        kb.for_range(kb.c(0), count, |kb, it| body(kb, kb.add(start, kb.mul(it, kb.c(step))?)?))
    }

    /// Reduces slot 0 of `v` over the block's threads (clobbering `v`): a butterfly of
    /// warp shuffles in each warp, the warps' results through shared memory, and a
    /// butterfly again in the first warp. Returns the shared slot holding the result,
    /// readable by every thread in the regions that follow.
    pub fn block_reduce(&self, v: Private<'ctx>, op: Reduce) -> R<PointerValue<'ctx>> {
        let warps = (self.threads / 32) as u64;
        let red = self.shared(33)?;
        let identity = op.identity();
        let combine = |kb: &Kb<'a, 'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>| op.combine(kb, a, b);
        let slot = |kb: &Kb<'a, 'ctx>, i: IntValue<'ctx>| kb.gep(kb.f32t.into(), red, i);
        let lane_and_warp = |kb: &Kb<'a, 'ctx>, t: IntValue<'ctx>| -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
            Ok((kb.b.build_and(t, kb.c(31), "")?, kb.b.build_right_shift(t, kb.c(5), false, "")?))
        };
        match self.mode {
            Mode::Ptx => {
                let bfly = |kb: &Kb<'a, 'ctx>, mut x: FloatValue<'ctx>| -> R<FloatValue<'ctx>> {
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
                self.threads(|kb, t| {
                    let x = bfly(kb, kb.get(v.at(kb, t, 0)?)?)?;
                    let (lane, warp) = lane_and_warp(kb, t)?;
                    kb.if_then(kb.icmp(IntPredicate::EQ, lane, kb.c(0))?, |kb| kb.set(slot(kb, warp)?, x))
                })?;
                self.threads(|kb, t| {
                    kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(32))?, |kb| {
                        let mine = kb.get(slot(kb, kb.b.build_and(t, kb.c(31), "")?)?)?;
                        let x = kb.select_f(kb.icmp(IntPredicate::ULT, t, kb.c(warps))?, mine, kb.cf(identity))?;
                        let x = bfly(kb, x)?;
                        kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| kb.set(slot(kb, kb.c(32))?, x))
                    })
                })?;
            }
            Mode::Sim => {
                // Lane l of a warp combines its value with lane l ^ off's, off = 16..1,
                // every lane reading before any writes (a second buffer).
                let tmp = self.private(1)?;
                let butterfly = |active: u64| -> R<()> {
                    for off in [16u64, 8, 4, 2, 1] {
                        self.threads(|kb, t| {
                            kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(active))?, |kb| {
                                let partner = kb.b.build_xor(t, kb.c(off), "")?;
                                let x = combine(kb, kb.get(v.at(kb, t, 0)?)?, kb.get(v.at(kb, partner, 0)?)?)?;
                                kb.set(tmp.at(kb, t, 0)?, x)
                            })
                        })?;
                        self.threads(|kb, t| {
                            kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(active))?, |kb| {
                                kb.set(v.at(kb, t, 0)?, kb.get(tmp.at(kb, t, 0)?)?)
                            })
                        })?;
                    }
                    Ok(())
                };
                butterfly(self.threads as u64)?;
                self.threads(|kb, t| {
                    let (lane, warp) = lane_and_warp(kb, t)?;
                    kb.if_then(kb.icmp(IntPredicate::EQ, lane, kb.c(0))?, |kb| {
                        kb.set(slot(kb, warp)?, kb.get(v.at(kb, t, 0)?)?)
                    })
                })?;
                self.threads(|kb, t| {
                    kb.if_then(kb.icmp(IntPredicate::ULT, t, kb.c(32))?, |kb| {
                        let mine = kb.get(slot(kb, t)?)?;
                        let x = kb.select_f(kb.icmp(IntPredicate::ULT, t, kb.c(warps))?, mine, kb.cf(identity))?;
                        kb.set(v.at(kb, t, 0)?, x)
                    })
                })?;
                butterfly(32)?;
                self.threads(|kb, t| {
                    kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| {
                        kb.set(slot(kb, kb.c(32))?, kb.get(v.at(kb, t, 0)?)?)
                    })
                })?;
            }
        }
        self.kb.gep(self.kb.f32t.into(), red, self.kb.c(32))
    }

    /// Finishes the kernel launched on `grid` blocks.
    pub fn finish(self, grid: [u64; 3]) -> R<Geometry> {
        let name = self.name.clone();
        let (threads, shared) = (self.threads, self.shared_bytes.get());
        self.kb.finish()?;
        let limits = [(1u64 << 31) - 1, 65535, 65535];
        if grid.iter().zip(limits).any(|(&g, l)| g == 0 || g > l) {
            return Err(CodegenError::Llvm(format!("kernel {name}: grid {grid:?} is outside CUDA's limits")));
        }
        if shared > 48 * 1024 {
            return Err(CodegenError::Llvm(format!("kernel {name}: {shared} bytes of shared memory (48 KiB at most)")));
        }
        Ok(Geometry { grid: grid.map(|g| g as u32), threads, shared_bytes: shared as u32, serial: false })
    }
}
