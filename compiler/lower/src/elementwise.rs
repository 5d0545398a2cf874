//! Elementwise kernels for every dtype, and fused elementwise programs: one `each` nest
//! over the (coalesced) broadcast output shape; each operand is loaded through its own
//! strides, widened to its compute dtype, combined by the op's scalar rule ([`scalar`])
//! and narrowed to the result's storage.
//!
//! The scalar rules are also what the Conv/Gemm/MatMul epilogues apply
//! ([`activation`], [`activation_fn`]), so an activation means one thing everywhere.
use crate::dtype::{compute, convert, narrow_sat, storage, widen};
use crate::shape::{broadcast_strides, coalesce, linear};
use crate::{LowerError, Node};
use dlc_ir::ops::{Activation, Arg, Fused};
use dlc_ir::{DType, Op};
use dlc_kir::{Access, BinOp, CastOp, CmpOp, Elem, Inst, Kernel, KernelBuilder, Lit, LoopKind, Ty, UnOp, ValId};

/// The elementwise kernel of an elementwise op (a plain one or a `Fused` program).
pub fn map(name: &str, n: &Node) -> Result<Kernel, LowerError> {
    let out_dt = n.outputs[0].dtype;
    let out = Node::dims(&n.outputs[0]);
    let mut strides: Vec<Vec<_>> = n.inputs.iter().map(|t| broadcast_strides(&Node::dims(t), &out)).collect();
    strides.push(broadcast_strides(&out, &out));
    let (dims, st) = coalesce(&out, &strides);
    let k = n.inputs.len();
    let store_dts: Vec<DType> = n.inputs.iter().map(|t| t.dtype).collect();
    let in_dts: Vec<DType> = store_dts.iter().map(|&d| compute(d)).collect();
    let saturate = match n.op {
        Op::Cast(c) => c.saturate,
        Op::Fused(f) => match f.steps.last().map(|s| &s.op) {
            Some(Op::Cast(c)) => c.saturate,
            _ => true,
        },
        _ => true,
    };
    let mut params = vec![Access::Read; k];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    let mut res = Ok(());
    b.nest(&dims, LoopKind::Each, |b, idx| {
        res = (|| {
            let mut vals = Vec::with_capacity(k);
            for i in 0..k {
                let e = storage(store_dts[i]);
                let raw = b.load(Ty::scalar(e), i as u32, linear(idx, &st[i], 0.into()), e.bytes());
                vals.push(widen(b, raw, store_dts[i]));
            }
            let r = match n.op {
                Op::Fused(f) => fused(b, n, f, &vals, &in_dts)?,
                _ => scalar(b, n, &vals, &in_dts, compute(out_dt))?,
            };
            let r = narrow_sat(b, r, out_dt, saturate);
            let e = storage(out_dt);
            b.store(k as u32, linear(idx, &st[k], 0.into()), r, e.bytes());
            Ok(())
        })();
    });
    res?;
    Ok(b.finish())
}

/// A fused program on loaded operand values: each step's scalar rule in turn;
/// intermediate results are rounded to their dtype's storage precision (f16, bf16,
/// 8-bit floats) exactly as separate kernels would store them.
fn fused(b: &mut KernelBuilder, n: &Node, f: &Fused, vals: &[ValId], in_dts: &[DType]) -> Result<ValId, LowerError> {
    let types = f.step_types(n.name, n.inputs).map_err(|e| n.error(e.to_string()))?;
    let mut results: Vec<(ValId, DType)> = Vec::with_capacity(f.steps.len());
    for (j, step) in f.steps.iter().enumerate() {
        let mut args = Vec::with_capacity(step.args.len());
        let mut dts = Vec::with_capacity(step.args.len());
        let mut arg_types = Vec::with_capacity(step.args.len());
        for a in &step.args {
            let (v, d, t) = match *a {
                Arg::Operand(i) => (vals[i as usize], in_dts[i as usize], n.inputs[i as usize].clone()),
                Arg::Step(k) => (results[k as usize].0, results[k as usize].1, types[k as usize].clone()),
            };
            args.push(v);
            dts.push(d);
            arg_types.push(t);
        }
        let info = Node {
            name: n.name,
            op: &step.op,
            inputs: &arg_types,
            outputs: std::slice::from_ref(&types[j]),
            consts: &[],
            operand_max: &[],
        };
        let dt = types[j].dtype;
        let mut r = scalar(b, &info, &args, &dts, compute(dt))?;
        if j + 1 < f.steps.len() && compute(dt) != dt {
            let sat = if let Op::Cast(c) = &step.op { c.saturate } else { true };
            let stored = narrow_sat(b, r, dt, sat);
            r = widen(b, stored, dt);
        }
        results.push((r, compute(dt)));
    }
    Ok(results.pop().ok_or_else(|| n.error("a fused node has no steps"))?.0)
}

/// A Conv/Gemm/MatMul epilogue activation on an f32 scalar (`None` for
/// [`Activation::None`]: the value as computed).
pub fn activation(b: &mut KernelBuilder, act: Activation, x: ValId) -> Option<ValId> {
    activation_of(b, act, x, Elem::F32)
}

/// [`activation`] of a value of float type `elem` (f32 or f64).
pub fn activation_of(b: &mut KernelBuilder, act: Activation, x: ValId, elem: Elem) -> Option<ValId> {
    let op = act.as_op()?;
    float_unary(&mut F { b, ty: Ty::scalar(elem), f64: elem == Elem::F64 }, &op, x)
}

/// The float arithmetic of one scalar type.
struct F<'b> {
    b: &'b mut KernelBuilder,
    ty: Ty,
    f64: bool,
}

impl F<'_> {
    fn c(&mut self, v: f64) -> ValId {
        self.b.let_(Inst::Const { ty: self.ty, lit: Lit::Float(v) })
    }
    /// A C math library function: `name` for double, `name` + `f` for float. On f32,
    /// `exp`, `log`, `tanh` (within 3 ulp) and `erf` (8 ulp) are dlc's own
    /// ([`crate::fastmath`]): inline and branch-free, so that a loop of them vectorises
    /// where a call to the C library keeps it one element at a time (GELU written as
    /// tanh or as an unfused erf, sigmoids, softplus).
    fn call(&mut self, name: &str, args: &[ValId]) -> ValId {
        if let (false, [x]) = (self.f64, args) {
            match name {
                "exp" => return crate::fastmath::exp(self.b, *x, 1),
                "log" => return crate::fastmath::log(self.b, *x, 1),
                "tanh" => return crate::fastmath::tanh(self.b, *x, 1),
                "erf" => return crate::fastmath::erf(self.b, *x, 1),
                _ => {}
            }
        }
        let func = if self.f64 { name.to_string() } else { format!("{name}f") };
        self.b.let_(Inst::Call { func, args: args.to_vec(), ty: self.ty })
    }
    fn cmp(&mut self, p: CmpOp, a: ValId, b: ValId) -> ValId {
        self.b.cmp(p, a, b)
    }
    fn sel(&mut self, c: ValId, a: ValId, b: ValId) -> ValId {
        self.b.select(c, a, b)
    }
    fn add(&mut self, a: ValId, b: ValId) -> ValId {
        self.b.bin(BinOp::FAdd, a, b)
    }
    fn sub(&mut self, a: ValId, b: ValId) -> ValId {
        self.b.bin(BinOp::FSub, a, b)
    }
    fn mul(&mut self, a: ValId, b: ValId) -> ValId {
        self.b.bin(BinOp::FMul, a, b)
    }
    fn div(&mut self, a: ValId, b: ValId) -> ValId {
        self.b.bin(BinOp::FDiv, a, b)
    }
    fn neg(&mut self, a: ValId) -> ValId {
        self.b.let_(Inst::Un(UnOp::FNeg, a))
    }
    /// `a < b ? b : a`, keeping a NaN in `a`.
    fn max(&mut self, a: ValId, b: ValId) -> ValId {
        let c = self.cmp(CmpOp::FOlt, a, b);
        self.sel(c, b, a)
    }
    /// `a > b ? b : a`, keeping a NaN in `a`.
    fn min(&mut self, a: ValId, b: ValId) -> ValId {
        let c = self.cmp(CmpOp::FOgt, a, b);
        self.sel(c, b, a)
    }
    /// NaN-propagating max/min (numpy `maximum`/`minimum`).
    fn max_nan(&mut self, a: ValId, b: ValId, is_max: bool) -> ValId {
        let m = if is_max { self.max(a, b) } else { self.min(a, b) };
        let b_nan = self.cmp(CmpOp::FUno, b, b);
        self.sel(b_nan, b, m)
    }
    fn softplus(&mut self, x: ValId) -> ValId {
        let e = self.call("exp", &[x]);
        let one = self.c(1.0);
        let s = self.add(e, one);
        self.call("log", &[s])
    }
}

/// A comparison result (`i1`) as a bool byte.
fn bool8(b: &mut KernelBuilder, c: ValId) -> ValId {
    b.let_(Inst::Cast(CastOp::Zext, c, Ty::scalar(Elem::I8)))
}

fn float_unary(f: &mut F, op: &Op, x: ValId) -> Option<ValId> {
    use CmpOp::*;
    let zero = f.c(0.0);
    let one = f.c(1.0);
    Some(match op {
        Op::Abs(_) => f.call("fabs", &[x]),
        Op::Neg(_) => f.neg(x),
        Op::Sign(_) => {
            let gt = f.cmp(FOgt, x, zero);
            let pos = f.sel(gt, one, x);
            let lt = f.cmp(FOlt, x, zero);
            let m1 = f.c(-1.0);
            f.sel(lt, m1, pos)
        }
        Op::Relu(_) => f.max(x, zero),
        Op::Sigmoid(_) => {
            let nx = f.neg(x);
            let e = f.call("exp", &[nx]);
            let d = f.add(one, e);
            f.div(one, d)
        }
        Op::Tanh(_) => f.call("tanh", &[x]),
        Op::Exp(_) => f.call("exp", &[x]),
        Op::Log(_) => f.call("log", &[x]),
        Op::Sqrt(_) => f.call("sqrt", &[x]),
        Op::Reciprocal(_) => f.div(one, x),
        Op::Sin(_) => f.call("sin", &[x]),
        Op::Cos(_) => f.call("cos", &[x]),
        Op::Tan(_) => f.call("tan", &[x]),
        Op::Asin(_) => f.call("asin", &[x]),
        Op::Acos(_) => f.call("acos", &[x]),
        Op::Atan(_) => f.call("atan", &[x]),
        Op::Sinh(_) => f.call("sinh", &[x]),
        Op::Cosh(_) => f.call("cosh", &[x]),
        Op::Asinh(_) => f.call("asinh", &[x]),
        Op::Acosh(_) => f.call("acosh", &[x]),
        Op::Atanh(_) => f.call("atanh", &[x]),
        Op::Erf(_) => f.call("erf", &[x]),
        Op::Floor(_) => f.call("floor", &[x]),
        Op::Ceil(_) => f.call("ceil", &[x]),
        Op::Round(_) => f.call("roundeven", &[x]),
        Op::Softplus(_) => f.softplus(x),
        Op::Softsign(_) => {
            let a = f.call("fabs", &[x]);
            let d = f.add(one, a);
            f.div(x, d)
        }
        Op::Mish(_) => {
            let s = f.softplus(x);
            let t = f.call("tanh", &[s]);
            f.mul(x, t)
        }
        Op::HardSwish(_) => {
            let sixth = f.c(1.0 / 6.0);
            let m = f.mul(x, sixth);
            let half = f.c(0.5);
            let h = f.add(m, half);
            let lo = f.min(one, h);
            let c = f.max(zero, lo);
            f.mul(x, c)
        }
        Op::HardSigmoid(o) => {
            let alpha = f.c(o.alpha as f64);
            let m = f.mul(x, alpha);
            let beta = f.c(o.beta as f64);
            let h = f.add(m, beta);
            let lo = f.min(one, h);
            f.max(zero, lo)
        }
        Op::LeakyRelu(o) => {
            let lt = f.cmp(FOlt, x, zero);
            let alpha = f.c(o.alpha as f64);
            let m = f.mul(x, alpha);
            f.sel(lt, m, x)
        }
        Op::Elu(o) => {
            let alpha = f.c(o.alpha as f64);
            let ex = f.call("exp", &[x]);
            let em1 = f.sub(ex, one);
            let e = f.mul(alpha, em1);
            let lt = f.cmp(FOlt, x, zero);
            f.sel(lt, e, x)
        }
        Op::Selu(o) => {
            let gamma = f.c(o.gamma as f64);
            let a = f.c(o.alpha as f64);
            let ex = f.call("exp", &[x]);
            let ae = f.mul(a, ex);
            let neg = f.sub(ae, a);
            let le = f.cmp(FOle, x, zero);
            let s = f.sel(le, neg, x);
            f.mul(gamma, s)
        }
        Op::Celu(o) => {
            let a = f.c(o.alpha as f64);
            let xa = f.div(x, a);
            let ex = f.call("exp", &[xa]);
            let em1 = f.sub(ex, one);
            let e = f.mul(a, em1);
            let p = f.max(zero, x);
            let q = f.min(zero, e);
            f.add(p, q)
        }
        Op::ThresholdedRelu(o) => {
            let alpha = f.c(o.alpha as f64);
            let gt = f.cmp(FOgt, x, alpha);
            f.sel(gt, x, zero)
        }
        // dlc's erf GELU in f32 (inline, so its loops vectorise; within 1e-6 of the f64
        // GELU where |x| <= 4, `tests/fastmath.rs`), as the fused epilogues compute it.
        Op::Gelu(o) if !o.tanh_approximation && !f.f64 => crate::fastmath::gelu(f.b, x, 1),
        Op::Gelu(o) => {
            let half = f.c(0.5);
            let half_x = f.mul(half, x);
            let inner = if o.tanh_approximation {
                let x2 = f.mul(x, x);
                let x3 = f.mul(x2, x);
                let k = f.c((2.0 / std::f64::consts::PI).sqrt());
                let c = f.c(0.044715);
                let cx3 = f.mul(c, x3);
                let s = f.add(x, cx3);
                let t = f.mul(k, s);
                f.call("tanh", &[t])
            } else {
                let r = f.c(std::f64::consts::FRAC_1_SQRT_2);
                let t = f.mul(x, r);
                f.call("erf", &[t])
            };
            let s = f.add(one, inner);
            f.mul(half_x, s)
        }
        Op::Clip(o) => {
            let y = if o.min > f32::NEG_INFINITY {
                let lo = f.c(o.min as f64);
                f.max(x, lo)
            } else {
                x
            };
            if o.max < f32::INFINITY {
                let hi = f.c(o.max as f64);
                f.min(y, hi)
            } else {
                y
            }
        }
        Op::Swish(o) => {
            let alpha = f.c(o.alpha as f64);
            let m = f.mul(x, alpha);
            let t = f.neg(m);
            let e = f.call("exp", &[t]);
            let d = f.add(one, e);
            f.div(x, d)
        }
        Op::Shrink(o) => {
            let l = f.c(o.lambd as f64);
            let bias = f.c(o.bias as f64);
            let gt = f.cmp(FOgt, x, l);
            let xb = f.sub(x, bias);
            let hi = f.sel(gt, xb, zero);
            let nl = f.neg(l);
            let lt = f.cmp(FOlt, x, nl);
            let xa = f.add(x, bias);
            f.sel(lt, xa, hi)
        }
        Op::IsNaN(_) => {
            let c = f.cmp(FUno, x, x);
            bool8(f.b, c)
        }
        Op::IsInf(o) => {
            let inf = f.c(f64::INFINITY);
            let pos = f.cmp(FOeq, x, inf);
            let ninf = f.c(f64::NEG_INFINITY);
            let neg = f.cmp(FOeq, x, ninf);
            let no = f.b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
            let p = if o.detect_positive { pos } else { no };
            let q = if o.detect_negative { neg } else { no };
            let c = f.b.bin(BinOp::Or, p, q);
            bool8(f.b, c)
        }
        _ => return None,
    })
}

fn float_binary(f: &mut F, op: &Op, a: ValId, b: ValId) -> Option<ValId> {
    use CmpOp::*;
    let cmp8 = |f: &mut F, p, a, b| {
        let c = f.cmp(p, a, b);
        bool8(f.b, c)
    };
    Some(match op {
        Op::Add(_) => f.add(a, b),
        Op::Sub(_) => f.sub(a, b),
        Op::Mul(_) => f.mul(a, b),
        Op::Div(_) => f.div(a, b),
        Op::Max(_) => f.max_nan(a, b, true),
        Op::Min(_) => f.max_nan(a, b, false),
        Op::Pow(_) => f.call("pow", &[a, b]),
        Op::PRelu(_) => {
            let zero = f.c(0.0);
            let lt = f.cmp(FOlt, a, zero);
            let m = f.mul(a, b);
            f.sel(lt, m, a)
        }
        Op::Mod(o) => {
            let r = f.call("fmod", &[a, b]);
            if o.fmod {
                r
            } else {
                // Sign of the divisor: add b when r is non-zero and its sign differs from b's.
                let zero = f.c(0.0);
                let nz = f.cmp(FOne, r, zero);
                let rn = f.cmp(FOlt, r, zero);
                let bn = f.cmp(FOlt, b, zero);
                let differ = f.b.bin(BinOp::Xor, rn, bn);
                let fix = f.b.bin(BinOp::And, nz, differ);
                let rb = f.add(r, b);
                f.sel(fix, rb, r)
            }
        }
        Op::Equal(_) => cmp8(f, FOeq, a, b),
        Op::Greater(_) => cmp8(f, FOgt, a, b),
        Op::GreaterOrEqual(_) => cmp8(f, FOge, a, b),
        Op::Less(_) => cmp8(f, FOlt, a, b),
        Op::LessOrEqual(_) => cmp8(f, FOle, a, b),
        _ => return None,
    })
}

fn int_op(b: &mut KernelBuilder, op: &Op, v: &[ValId], signed: bool, ty: Elem) -> Option<ValId> {
    use CmpOp::*;
    let c = |b: &mut KernelBuilder, x: i64| b.let_(Inst::Const { ty: Ty::scalar(ty), lit: Lit::Int(x) });
    let zero = c(b, 0);
    let one = c(b, 1);
    let (lt, gt, le, ge) = if signed { (Slt, Sgt, Sle, Sge) } else { (Ult, Ugt, Ule, Uge) };
    let cmp8 = |b: &mut KernelBuilder, p, x, y| {
        let r = b.cmp(p, x, y);
        bool8(b, r)
    };
    // Division and remainder never trap: by 0 gives 0, and MIN / -1 wraps.
    let safe_divisor = |b: &mut KernelBuilder, x: ValId| {
        let is0 = b.cmp(Eq, x, zero);
        let is_m1 = if signed {
            let m1 = c(b, -1);
            b.cmp(Eq, x, m1)
        } else {
            b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) })
        };
        let either = b.bin(BinOp::Or, is0, is_m1);
        let d = b.select(either, one, x);
        (d, is0, is_m1)
    };
    Some(match (op, v) {
        (Op::Add(_), [x, y]) => b.bin(BinOp::Add, *x, *y),
        (Op::Sub(_), [x, y]) => b.bin(BinOp::Sub, *x, *y),
        (Op::Mul(_), [x, y]) => b.bin(BinOp::Mul, *x, *y),
        (Op::Div(_), [x, y]) => {
            let (d, is0, is_m1) = safe_divisor(b, *y);
            let q = b.bin(if signed { BinOp::SDiv } else { BinOp::UDiv }, *x, d);
            let negx = b.bin(BinOp::Sub, zero, *x);
            let q = b.select(is_m1, negx, q);
            b.select(is0, zero, q)
        }
        (Op::Mod(o), [x, y]) => {
            let (d, is0, is_m1) = safe_divisor(b, *y);
            let r = b.bin(if signed { BinOp::SRem } else { BinOp::URem }, *x, d);
            let either = b.bin(BinOp::Or, is0, is_m1);
            let r = b.select(either, zero, r);
            if signed && !o.fmod {
                let nz = b.cmp(Ne, r, zero);
                let rn = b.cmp(Slt, r, zero);
                let yn = b.cmp(Slt, *y, zero);
                let differ = b.bin(BinOp::Xor, rn, yn);
                let fix = b.bin(BinOp::And, nz, differ);
                let ry = b.bin(BinOp::Add, r, *y);
                b.select(fix, ry, r)
            } else {
                r
            }
        }
        (Op::Max(_), [x, y]) => {
            let l = b.cmp(lt, *x, *y);
            b.select(l, *y, *x)
        }
        (Op::Min(_), [x, y]) => {
            let g = b.cmp(gt, *x, *y);
            b.select(g, *y, *x)
        }
        (Op::PRelu(_), [x, y]) => {
            let l = b.cmp(Slt, *x, zero);
            let m = b.bin(BinOp::Mul, *x, *y);
            b.select(l, m, *x)
        }
        (Op::Equal(_), [x, y]) => cmp8(b, Eq, *x, *y),
        (Op::Greater(_), [x, y]) => cmp8(b, gt, *x, *y),
        (Op::GreaterOrEqual(_), [x, y]) => cmp8(b, ge, *x, *y),
        (Op::Less(_), [x, y]) => cmp8(b, lt, *x, *y),
        (Op::LessOrEqual(_), [x, y]) => cmp8(b, le, *x, *y),
        (Op::And(_) | Op::BitwiseAnd(_), [x, y]) => b.bin(BinOp::And, *x, *y),
        (Op::Or(_) | Op::BitwiseOr(_), [x, y]) => b.bin(BinOp::Or, *x, *y),
        (Op::Xor(_) | Op::BitwiseXor(_), [x, y]) => b.bin(BinOp::Xor, *x, *y),
        (Op::BitShift(o), [x, y]) => {
            let bits = c(b, ty.bits() as i64);
            let too_far = b.cmp(Uge, *y, bits);
            let amount = b.select(too_far, zero, *y);
            let op = match (o.left, signed) {
                (true, _) => BinOp::Shl,
                (false, true) => BinOp::AShr,
                (false, false) => BinOp::LShr,
            };
            let s = b.bin(op, *x, amount);
            let out = if signed && !o.left {
                let neg = b.cmp(Slt, *x, zero);
                let ones = c(b, -1);
                b.select(neg, ones, zero)
            } else {
                zero
            };
            b.select(too_far, out, s)
        }
        (Op::Not(_), [x]) => b.bin(BinOp::Xor, *x, one),
        (Op::BitwiseNot(_), [x]) => b.let_(Inst::Un(UnOp::Not, *x)),
        (Op::Abs(_), [x]) if signed => {
            let l = b.cmp(Slt, *x, zero);
            let n = b.bin(BinOp::Sub, zero, *x);
            b.select(l, n, *x)
        }
        (Op::Abs(_), [x]) => *x,
        (Op::Neg(_), [x]) => b.bin(BinOp::Sub, zero, *x),
        (Op::Sign(_), [x]) => {
            let g = b.cmp(gt, *x, zero);
            let pos = b.select(g, one, zero);
            if signed {
                let l = b.cmp(Slt, *x, zero);
                let m1 = c(b, -1);
                b.select(l, m1, pos)
            } else {
                pos
            }
        }
        (Op::Relu(_), [x]) => {
            let l = b.cmp(Slt, *x, zero);
            b.select(l, zero, *x)
        }
        _ => return None,
    })
}

/// The scalar rule of an elementwise op on operand values of compute dtypes `in_dts`,
/// giving a value of compute dtype `out_dt`.
pub fn scalar(
    b: &mut KernelBuilder,
    n: &Node,
    vals: &[ValId],
    in_dts: &[DType],
    out_dt: DType,
) -> Result<ValId, LowerError> {
    let op = n.op;
    match op {
        // Floats to 4- and 2-bit integers saturate as to every integer type: a saturating
        // conversion to 64 bits, clamped to the type's range, then narrowed.
        Op::Cast(c) if c.to.narrow_int_bits().is_some() && in_dts[0].is_float() => {
            let wide = convert(b, vals[0], in_dts[0], DType::I64);
            let (lo, hi) = c.to.int_range().ok_or_else(|| n.error("no integer range"))?;
            let lo = b.i64(lo);
            let hi = b.i64(hi);
            let below = b.cmp(CmpOp::Slt, wide, lo);
            let v = b.select(below, lo, wide);
            let above = b.cmp(CmpOp::Sgt, v, hi);
            let v = b.select(above, hi, v);
            return Ok(convert(b, v, DType::I64, compute(c.to)));
        }
        Op::Cast(c) => return Ok(convert(b, vals[0], in_dts[0], compute(c.to))),
        Op::Expand(_) => return Ok(vals[0]),
        Op::Where(_) => {
            let zero = b.let_(Inst::Const { ty: Ty::scalar(Elem::I8), lit: Lit::Int(0) });
            let c = b.cmp(CmpOp::Ne, vals[0], zero);
            return Ok(b.select(c, vals[1], vals[2]));
        }
        Op::Pow(_) if !(in_dts[0].is_float() && in_dts[0] == in_dts[1]) => {
            // Mixed or integer operands: computed in double, converted to the base's dtype.
            let a = convert(b, vals[0], in_dts[0], DType::F64);
            let e = convert(b, vals[1], in_dts[1], DType::F64);
            let p = F { b, ty: Ty::scalar(Elem::F64), f64: true }.call("pow", &[a, e]);
            return Ok(convert(b, p, DType::F64, out_dt));
        }
        _ => {}
    }
    let dt = *in_dts.first().ok_or_else(|| n.error("no operands"))?;
    let res = if dt.is_float() {
        let mut f = F { b, ty: Ty::scalar(storage(dt)), f64: dt == DType::F64 };
        match vals {
            [x] => float_unary(&mut f, op, *x),
            [x, y] => float_binary(&mut f, op, *x, *y),
            _ => None,
        }
    } else {
        int_op(b, op, vals, dt.is_signed_int(), storage(dt))
    };
    res.ok_or_else(|| n.error(format!("not implemented for dtype {dt}")))
}
