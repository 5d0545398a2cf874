//! Random ([`dlc_ir::ops::Random`]): one `each` loop, element `i` from the counter-based
//! generator of `dlc_ir::ops::random` (SplitMix64's finaliser of `key + (2i + s + 1) *
//! GOLDEN`), computed in the dtype's precision (f32 for f16).
use crate::{LowerError, Node};
use dlc_ir::ops::{Random, GOLDEN};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CastOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Ty, ValId};

/// `mix64(key + c * GOLDEN)` for the i64 value `c`.
fn bits(b: &mut KernelBuilder, key: i64, c: ValId) -> ValId {
    let k = |b: &mut KernelBuilder, v: u64| b.i64(v as i64);
    let g = k(b, GOLDEN);
    let z = b.bin(BinOp::Mul, c, g);
    let kv = b.i64(key);
    let mut z = b.bin(BinOp::Add, z, kv);
    for (shift, mul) in [(30, Some(0xBF58_476D_1CE4_E5B9u64)), (27, Some(0x94D0_49BB_1331_11EB)), (31, None)] {
        let s = b.i64(shift);
        let t = b.bin(BinOp::LShr, z, s);
        z = b.bin(BinOp::Xor, z, t);
        if let Some(m) = mul {
            let m = k(b, m);
            z = b.bin(BinOp::Mul, z, m);
        }
    }
    z
}

/// Stream `s`'s uniform in `[0, 1)` for element index `i`, as `ty`.
fn unit(b: &mut KernelBuilder, key: i64, i: ValId, s: i64, ty: Ty) -> ValId {
    let two = b.i64(2);
    let c = b.bin(BinOp::Mul, i, two);
    let off = b.i64(s + 1);
    let c = b.bin(BinOp::Add, c, off);
    let z = bits(b, key, c);
    let (shift, scale) =
        if ty.elem == Elem::F64 { (11, 1.0 / (1u64 << 53) as f64) } else { (40, 1.0 / (1u64 << 24) as f64) };
    let sh = b.i64(shift);
    let top = b.bin(BinOp::LShr, z, sh);
    let f = b.let_(Inst::Cast(CastOp::SiToFp, top, ty));
    let sc = b.let_(Inst::Const { ty, lit: Lit::Float(scale) });
    b.bin(BinOp::FMul, f, sc)
}

/// The kernel: the operand (when there is one, only its shape matters), the result.
pub fn random(name: &str, n: &Node, op: &Random) -> Result<Kernel, LowerError> {
    let ty = match op.dtype {
        DType::F64 => Ty::scalar(Elem::F64),
        DType::F32 | DType::F16 => Ty::scalar(Elem::F32),
        d => return Err(n.error(format!("random values of {d} are not supported"))),
    };
    let numel = Node::dims(&n.outputs[0]).iter().fold(Expr::c(1), |p, d| &p * d);
    let mut access = vec![Access::Read; n.inputs.len()];
    access.push(Access::Write);
    let out = n.inputs.len() as u32;
    let mut b = KernelBuilder::new(name, &access);
    let f64c = |b: &mut KernelBuilder, v: f64| b.let_(Inst::Const { ty, lit: Lit::Float(v) });
    let suffix = if ty.elem == Elem::F32 { "f" } else { "" };
    b.for_(Expr::c(0), numel, LoopKind::Each, |b, i| {
        let iv = b.index(i.clone());
        let u0 = unit(b, op.key, iv, 0, ty);
        let y = if op.normal {
            let u1 = unit(b, op.key, iv, 1, ty);
            let one = f64c(b, 1.0);
            let q = b.bin(BinOp::FSub, one, u0);
            let l = b.let_(Inst::Call { func: format!("log{suffix}"), args: vec![q], ty });
            let m2 = f64c(b, -2.0);
            let l = b.bin(BinOp::FMul, l, m2);
            let r = b.let_(Inst::Call { func: format!("sqrt{suffix}"), args: vec![l], ty });
            let tau = f64c(b, std::f64::consts::TAU);
            let ang = b.bin(BinOp::FMul, u1, tau);
            let c = b.let_(Inst::Call { func: format!("cos{suffix}"), args: vec![ang], ty });
            let z = b.bin(BinOp::FMul, r, c);
            let (a, s) = (f64c(b, op.a), f64c(b, op.b));
            let z = b.bin(BinOp::FMul, z, s);
            b.bin(BinOp::FAdd, a, z)
        } else {
            let (a, w) = (f64c(b, op.a), f64c(b, op.b - op.a));
            let z = b.bin(BinOp::FMul, u0, w);
            b.bin(BinOp::FAdd, a, z)
        };
        let (y, bytes) = match op.dtype {
            DType::F16 => (b.let_(Inst::Cast(CastOp::FpTrunc, y, Ty::scalar(Elem::F16))), 2),
            DType::F64 => (y, 8),
            _ => (y, 4),
        };
        b.store(out, i, y, bytes);
    });
    Ok(b.finish())
}
