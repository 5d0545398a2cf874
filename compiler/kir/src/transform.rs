//! Rewrites of kernels.
//!
//! [`batch`] turns a kernel lowered for one sample into the kernel for `n` samples along
//! a leading dim whose extent is only known at run time (a symbolic batch `N`): each
//! sample's work is the original work at the sample's offset in every batched
//! parameter. The inner loops, tiles and vector widths are the one-sample kernel's,
//! compile-time constants; only the count of samples is a run-time value. Serial code
//! runs once per sample (a loop over the samples around it); a top-level `parallel`
//! loop of `T` tasks becomes one of `n * T` tasks, so the pool sees every sample's tasks
//! at once.
//!
//! [`share_kernel_code`] makes kernels that differ only in the weights they packed one
//! code, their weights passed as constant buffers.
use crate::expr::{Atom, Expr};
use crate::ir::{Inst, Kernel, LoopKind, Stmt};

/// Calls `f` on every expression of `body` (indices, bounds, offsets) and replaces it.
fn map_exprs(body: &mut [Stmt], f: &mut dyn FnMut(&Expr) -> Expr) {
    for s in body {
        match s {
            Stmt::Let(_, Inst::Index(e)) => *e = f(e),
            Stmt::Let(_, Inst::Load { index, .. }) => *index = f(index),
            Stmt::Let(..) | Stmt::Local(..) | Stmt::Set(..) => {}
            Stmt::Store { index, .. } => *index = f(index),
            Stmt::For { lo, hi, body, .. } => {
                *lo = f(lo);
                *hi = f(hi);
                map_exprs(body, f);
            }
            Stmt::If { then, els, .. } => {
                map_exprs(then, f);
                map_exprs(els, f);
            }
            Stmt::Memcpy { dst_off, src_off, bytes, .. } => {
                *dst_off = f(dst_off);
                *src_off = f(src_off);
                *bytes = f(bytes);
            }
        }
    }
}

/// Adds sample `b`'s offset to every access of a batched parameter in `body`:
/// `stride[p]` bytes per sample for parameter `p` (0: shared by every sample).
fn offset(k: &Kernel, body: &mut [Stmt], b: &Expr, stride: &[u64], types: &crate::verify::Types) -> Result<(), String> {
    let np = k.params.len() as u32;
    let elems = |param: u32, elem_bytes: u32| -> Result<Expr, String> {
        let s = if param < np { stride[param as usize] } else { 0 };
        if s % elem_bytes as u64 != 0 {
            return Err(format!("%p{param}: a sample's {s} bytes are not whole {elem_bytes}-byte elements"));
        }
        Ok(b.scale((s / elem_bytes as u64) as i64))
    };
    for s in body {
        match s {
            Stmt::Let(_, Inst::Load { ty, param, index, .. }) => *index = &*index + &elems(*param, ty.elem.bytes())?,
            Stmt::Store { param, index, value, .. } => {
                let e = types.of(*value).elem.bytes();
                *index = &*index + &elems(*param, e)?
            }
            Stmt::Memcpy { dst, dst_off, src, src_off, .. } => {
                *dst_off = &*dst_off + &elems(*dst, 1)?;
                *src_off = &*src_off + &elems(*src, 1)?;
            }
            Stmt::For { body, .. } => offset(k, body, b, stride, types)?,
            Stmt::If { then, els, .. } => {
                offset(k, then, b, stride, types)?;
                offset(k, els, b, stride, types)?;
            }
            Stmt::Let(..) | Stmt::Local(..) | Stmt::Set(..) => {}
        }
    }
    Ok(())
}

/// Whether `k` has a `parallel` loop anywhere.
pub fn has_parallel_loop(k: &Kernel) -> bool {
    has_parallel(&k.body)
}

fn has_parallel(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::For { kind: LoopKind::Parallel, .. } => true,
        Stmt::For { body, .. } => has_parallel(body),
        Stmt::If { then, els, .. } => has_parallel(then) || has_parallel(els),
        _ => false,
    })
}

/// The kernel that runs `k` (written for one sample) for samples `0..n`: parameter `p`
/// of sample `b` starts `b * stride[p]` bytes after the one-sample kernel's (`stride[p]`
/// is 0 for a parameter every sample shares, such as weights). Fails for a block
/// kernel, a `parallel` loop below the top level or not from 0 to a constant, and a
/// value or local used across a top-level `parallel` loop.
///
/// Top-level statements outside `parallel` loops run in a loop over the samples of
/// kind `samples`: `serial`, or `parallel` (one pool task per sample) for kernels with
/// enough work per sample, whose own loops are serial.
pub fn batch(k: &Kernel, n: &Expr, stride: &[u64], samples: LoopKind) -> Result<Kernel, String> {
    if !matches!(samples, LoopKind::Serial | LoopKind::Parallel) {
        return Err(format!("samples run in a serial or parallel loop, not {samples:?}"));
    }
    if k.block.is_some() {
        return Err("a block kernel cannot be batched".into());
    }
    if stride.len() != k.params.len() {
        return Err(format!("{} strides for {} parameters", stride.len(), k.params.len()));
    }
    let types = crate::verify::kernel(k).map_err(|e| e.to_string())?;
    let mut next_var = 0u32;
    k.walk(&mut |s| {
        if let Stmt::For { var, .. } = s {
            next_var = next_var.max(var + 1);
        }
    });
    let mut fresh = || {
        next_var += 1;
        next_var - 1
    };
    let mut out = k.clone();
    let mut body = Vec::new();
    let mut group: Vec<Stmt> = Vec::new();
    let flush = |group: &mut Vec<Stmt>, body: &mut Vec<Stmt>, var: u32| -> Result<(), String> {
        if group.is_empty() {
            return Ok(());
        }
        let mut g = std::mem::take(group);
        offset(k, &mut g, &Expr::var(var), stride, &types)?;
        body.push(Stmt::For { var, lo: Expr::c(0), hi: n.clone(), kind: samples, body: g });
        Ok(())
    };
    for s in &k.body {
        match s {
            Stmt::For { var, lo, hi, kind: LoopKind::Parallel, body: inner } => {
                let bv = fresh();
                flush(&mut group, &mut body, bv)?;
                let (Some(0), Some(t)) = (lo.as_const(), hi.as_const()) else {
                    return Err("a parallel loop that does not run from 0 to a constant".into());
                };
                if has_parallel(inner) {
                    return Err("a parallel loop inside a parallel loop".into());
                }
                // Task w of n*T is task w mod T of sample floor(w / T).
                let w = fresh();
                let t = Expr::c(t);
                let task = Expr::var(w).modulo(&t);
                let sample = Expr::var(w).floor_div(&t);
                let mut inner = inner.clone();
                let v = *var;
                map_exprs(&mut inner, &mut |e| {
                    e.subst(&|a| match a {
                        Atom::Var(x) if *x == v => Some(task.clone()),
                        _ => None,
                    })
                });
                offset(k, &mut inner, &sample, stride, &types)?;
                body.push(Stmt::For { var: w, lo: Expr::c(0), hi: n * &t, kind: LoopKind::Parallel, body: inner });
            }
            s if has_parallel(std::slice::from_ref(s)) => {
                return Err("a parallel loop below the top level cannot be batched".into())
            }
            s => group.push(s.clone()),
        }
    }
    let bv = fresh();
    flush(&mut group, &mut body, bv)?;
    out.body = body;
    crate::verify::kernel(&out).map_err(|e| format!("the batched kernel does not verify: {e}"))?;
    Ok(out)
}

/// Makes kernels that differ only in their constant arrays' contents one code: models
/// repeat layers of one shape (DenseNet's 3x3 convolutions, ResNet's bottleneck blocks,
/// a transformer's layers) whose kernels differ only in the weights they packed. For
/// every group of two or more such kernels (with at least two different contents), each
/// member's constant arrays become constant buffers of the program, passed as extra
/// read-only parameters (appended in array order, so every memory index keeps its
/// meaning: parameters come before the arrays they replace) by each call of it; the
/// members are then equal but for their names, and a translator compiles one function
/// for all of them. Kernels run by `bind` steps are left as they are (their last
/// parameter is the step's result array). Returns the number of kernels changed.
pub fn share_kernel_code(p: &mut crate::ir::Program) -> usize {
    use crate::ir::{Access, BufKind, Buffer, Step};
    use std::collections::HashMap;
    let n = p.kernels.len();
    let mut bound = vec![false; n];
    p.visit_steps(&mut |s| {
        if let Step::Bind { kernel, .. } = s {
            bound[*kernel as usize] = true;
        }
    });
    // Kernels of one code but for their arrays' bytes, compared in full within buckets
    // of a cheap fingerprint.
    let mut buckets: HashMap<(usize, usize, usize, usize), Vec<Vec<usize>>> = HashMap::new();
    for (i, k) in p.kernels.iter().enumerate() {
        if bound[i] || k.data.is_empty() {
            continue;
        }
        let groups = buckets.entry(k.code_fingerprint()).or_default();
        match groups.iter_mut().find(|g| p.kernels[g[0]].same_code(k, false)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    // In kernel order, so that the buffers come in the same order every compile.
    let mut groups: Vec<Vec<usize>> = buckets.into_values().flatten().collect();
    groups.sort_unstable_by_key(|g| g[0]);
    let mut extra: HashMap<u32, Vec<u32>> = HashMap::new();
    for group in groups {
        // Kernels with equal arrays too are one code already.
        if group.len() < 2 || group.iter().all(|&i| p.kernels[i].same_code(&p.kernels[group[0]], true)) {
            continue;
        }
        for i in group {
            let k = &mut p.kernels[i];
            let mut bufs = Vec::with_capacity(k.data.len());
            for d in std::mem::take(&mut k.data) {
                k.params.push(Access::Read);
                p.buffers.push(Buffer {
                    name: format!("{}.{}", k.name, d.name),
                    kind: BufKind::Const(d.bytes.clone()),
                    bytes: Expr::c(d.bytes.len() as i64),
                    ty: None,
                });
                bufs.push(p.buffers.len() as u32 - 1);
            }
            extra.insert(i as u32, bufs);
        }
    }
    fn calls(steps: &mut [Step], extra: &HashMap<u32, Vec<u32>>) {
        for s in steps {
            match s {
                Step::Call { kernel, args, .. } => {
                    if let Some(b) = extra.get(kernel) {
                        args.extend_from_slice(b);
                    }
                }
                Step::If { then, els, .. } => {
                    calls(then, extra);
                    calls(els, extra);
                }
                Step::Loop { body, .. } => calls(body, extra),
                Step::Copy { .. } | Step::Bind { .. } => {}
            }
        }
    }
    calls(&mut p.schedule, &extra);
    extra.len()
}
