//! The reference interpreter: the meaning of every kir construct, in plain Rust.
//!
//! Kernels run on byte buffers, one per parameter; every access is bounds-checked, so a
//! lowering bug is an error here instead of a wrong number. f32 arithmetic is done in
//! f32 and f16 rounds every result to f16, as the hardware does; `parallel` and `each`
//! loops run in order. A block kernel runs block after block; a `threads` region is a
//! loop over the block's threads (what its closing barrier orders is ordered), each
//! thread with its own scratch arrays, and [`block_reduce`] combines in the order warp
//! shuffles do. Translators are tested against this.
use crate::expr::{Env, Expr};
use crate::ir::*;
use crate::verify::{self, Types};
use std::collections::{BTreeMap, HashMap};

/// An error while interpreting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// The kernel does not verify.
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
    /// An index expression failed.
    #[error("kernel '{kernel}': {err}")]
    Expr {
        /// Kernel name.
        kernel: String,
        /// What failed.
        err: crate::expr::EvalError,
    },
    /// A run-time fault: out-of-bounds access, division by zero, an unknown function.
    #[error("kernel '{kernel}': {msg}")]
    Fault {
        /// Kernel name.
        kernel: String,
        /// What happened.
        msg: String,
    },
}

/// One lane of a value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum S {
    /// An integer's bits (masked to its width).
    I(u64),
    /// A float (exactly representable in its type).
    F(f64),
}

type V = Vec<S>;

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn sext(x: u64, bits: u32) -> i64 {
    let s = 64 - bits;
    ((x << s) as i64) >> s
}

/// `x` rounded to `e`'s precision.
fn round_to(e: Elem, x: f64) -> f64 {
    match e {
        Elem::F32 => x as f32 as f64,
        Elem::F16 => half::f16::from_f64(x).to_f64(),
        _ => x,
    }
}

fn int(s: S) -> u64 {
    match s {
        S::I(v) => v,
        S::F(f) => f.to_bits(),
    }
}

fn flt(s: S) -> f64 {
    match s {
        S::F(f) => f,
        S::I(v) => f64::from_bits(v),
    }
}

struct Frame<'a> {
    k: &'a Kernel,
    types: &'a Types,
    bufs: &'a mut [Vec<u8>],
    /// The kernel's scratch arrays (memory indices after the parameters and the
    /// constant arrays); in a block kernel, one copy per thread, end to end.
    scratch: Vec<Vec<u8>>,
    /// A block kernel's shared arrays.
    shared: Vec<Vec<u8>>,
    /// The thread running, inside a `threads` region.
    tid: Option<usize>,
    syms: &'a BTreeMap<String, i64>,
    vals: HashMap<ValId, V>,
    vars: HashMap<u32, i64>,
    locals: HashMap<u32, V>,
}

impl Env for Frame<'_> {
    fn sym(&self, name: &str) -> Option<i64> {
        self.syms.get(name).copied()
    }
    fn var(&self, n: u32) -> Option<i64> {
        self.vars.get(&n).copied()
    }
    fn val(&self, n: u32) -> Option<i64> {
        self.vals.get(&n).map(|v| sext(int(v[0]), 64))
    }
}

impl Frame<'_> {
    fn fault<T>(&self, msg: impl Into<String>) -> Result<T, InterpError> {
        Err(InterpError::Fault { kernel: self.k.name.clone(), msg: msg.into() })
    }

    fn eval(&self, e: &Expr) -> Result<i64, InterpError> {
        e.eval(self).map_err(|err| InterpError::Expr { kernel: self.k.name.clone(), err })
    }

    fn v(&self, id: ValId) -> &V {
        &self.vals[&id]
    }

    fn ty(&self, id: ValId) -> Ty {
        self.types.of(id)
    }

    /// The byte range of `lanes` elements of `elem` at element `index` of `param`.
    /// Memory `m`: a parameter's buffer, a constant array or a scratch array.
    fn mem(&self, m: u32) -> &[u8] {
        match self.k.memory(m) {
            Some(Memory::Param(p)) => &self.bufs[p as usize],
            Some(Memory::Data(j)) => &self.k.data[j as usize].bytes,
            Some(Memory::Scratch(j)) => {
                let r = self.thread_part(j);
                &self.scratch[j as usize][r]
            }
            Some(Memory::Shared(j)) => &self.shared[j as usize],
            None => &[],
        }
    }

    /// The bytes of scratch array `j` that belong to the running thread (all of it
    /// outside block kernels).
    fn thread_part(&self, j: u32) -> std::ops::Range<usize> {
        let sc = &self.k.scratch[j as usize];
        let n = (sc.len * sc.elem.bytes() as u64) as usize;
        match (&self.k.block, self.tid) {
            (Some(_), Some(t)) => t * n..(t + 1) * n,
            _ => 0..self.scratch[j as usize].len(),
        }
    }

    /// Memory `m` for writing (the verifier lets only parameters and scratch arrays be
    /// written).
    fn mem_mut(&mut self, m: u32) -> &mut [u8] {
        match self.k.memory(m) {
            Some(Memory::Param(p)) => &mut self.bufs[p as usize],
            Some(Memory::Scratch(j)) => {
                let r = self.thread_part(j);
                &mut self.scratch[j as usize][r]
            }
            Some(Memory::Shared(j)) => &mut self.shared[j as usize],
            Some(Memory::Data(_)) | None => &mut [],
        }
    }

    fn range(&self, param: u32, index: i64, elem: Elem, lanes: u32) -> Result<std::ops::Range<usize>, InterpError> {
        let w = elem.bytes() as i64;
        let len = self.mem(param).len() as i64;
        let start = index.checked_mul(w);
        let end = start.and_then(|s| s.checked_add(w * lanes as i64));
        match (start, end) {
            (Some(s), Some(e)) if s >= 0 && e <= len => Ok(s as usize..e as usize),
            _ => self.fault(format!(
                "{}: elements {index}..{} of {} are outside its {len} bytes",
                self.k.memory(param).map_or(format!("memory {param}"), |m| m.to_string()),
                index.saturating_add(lanes as i64),
                elem.name()
            )),
        }
    }

    fn read(&self, param: u32, byte: usize, e: Elem) -> S {
        let b = &self.mem(param)[byte..byte + e.bytes() as usize];
        let mut raw = [0u8; 8];
        raw[..b.len()].copy_from_slice(b);
        let bits = u64::from_le_bytes(raw);
        match e {
            Elem::F32 => S::F(f32::from_bits(bits as u32) as f64),
            Elem::F64 => S::F(f64::from_bits(bits)),
            Elem::F16 => S::F(half::f16::from_bits(bits as u16).to_f64()),
            Elem::I1 => S::I(bits & 1),
            _ => S::I(bits & mask(e.bits())),
        }
    }

    fn write(&mut self, param: u32, byte: usize, e: Elem, s: S) {
        let bits = match (e, s) {
            (Elem::F32, s) => (flt(s) as f32).to_bits() as u64,
            (Elem::F64, s) => flt(s).to_bits(),
            (Elem::F16, s) => half::f16::from_f64(flt(s)).to_bits() as u64,
            (_, s) => int(s),
        };
        let n = e.bytes() as usize;
        self.mem_mut(param)[byte..byte + n].copy_from_slice(&bits.to_le_bytes()[..n]);
    }

    fn bin(&self, op: BinOp, t: Ty, a: S, b: S) -> Result<S, InterpError> {
        let bits = t.elem.bits();
        let m = mask(bits);
        let (x, y) = (int(a), int(b));
        let (sx, sy) = (sext(x, bits), sext(y, bits));
        let f = |g: fn(f64, f64) -> f64| S::F(round_to(t.elem, g(flt(a), flt(b))));
        let f32op = |g: fn(f32, f32) -> f32| S::F(g(flt(a) as f32, flt(b) as f32) as f64);
        let is32 = t.elem == Elem::F32;
        let i = |v: u64| S::I(v & m);
        Ok(match op {
            BinOp::Add => i(x.wrapping_add(y)),
            BinOp::Sub => i(x.wrapping_sub(y)),
            BinOp::Mul => i(x.wrapping_mul(y)),
            BinOp::SDiv | BinOp::SRem | BinOp::UDiv | BinOp::URem if y == 0 => {
                return self.fault(format!("{} by zero", op.name()))
            }
            BinOp::SDiv | BinOp::SRem if sy == -1 && sx == sext(1 << (bits - 1), bits) => {
                return self.fault(format!("{} overflow", op.name()))
            }
            BinOp::SDiv => i(sx.wrapping_div(sy) as u64),
            BinOp::SRem => i(sx.wrapping_rem(sy) as u64),
            BinOp::UDiv => i(x / y),
            BinOp::URem => i(x % y),
            BinOp::And => i(x & y),
            BinOp::Or => i(x | y),
            BinOp::Xor => i(x ^ y),
            BinOp::Shl => i(x.wrapping_shl((y % bits as u64) as u32)),
            BinOp::LShr => i(x >> (y % bits as u64)),
            BinOp::AShr => i((sx >> (y % bits as u64)) as u64),
            BinOp::SMin => i(sx.min(sy) as u64),
            BinOp::SMax => i(sx.max(sy) as u64),
            BinOp::UMin => i(x.min(y)),
            BinOp::UMax => i(x.max(y)),
            BinOp::FAdd if is32 => f32op(|p, q| p + q),
            BinOp::FSub if is32 => f32op(|p, q| p - q),
            BinOp::FMul if is32 => f32op(|p, q| p * q),
            BinOp::FDiv if is32 => f32op(|p, q| p / q),
            BinOp::FRem if is32 => f32op(|p, q| p % q),
            BinOp::FAdd => f(|p, q| p + q),
            BinOp::FSub => f(|p, q| p - q),
            BinOp::FMul => f(|p, q| p * q),
            BinOp::FDiv => f(|p, q| p / q),
            BinOp::FRem => f(|p, q| p % q),
            // IEEE minNum/maxNum: Rust's f64::min/max drop a NaN operand likewise.
            BinOp::FMin => f(f64::min),
            BinOp::FMax => f(f64::max),
            BinOp::CopySign => f(f64::copysign),
        })
    }

    fn un(&self, op: UnOp, t: Ty, a: S) -> S {
        let m = mask(t.elem.bits());
        let f = |g: fn(f64) -> f64| S::F(round_to(t.elem, g(flt(a))));
        match op {
            UnOp::Neg => S::I(int(a).wrapping_neg() & m),
            UnOp::Not => S::I(!int(a) & m),
            UnOp::FNeg => S::F(-flt(a)),
            UnOp::FAbs => S::F(flt(a).abs()),
            UnOp::Sqrt if t.elem == Elem::F32 => S::F((flt(a) as f32).sqrt() as f64),
            UnOp::Sqrt => f(f64::sqrt),
            UnOp::Floor => f(f64::floor),
            UnOp::Ceil => f(f64::ceil),
            UnOp::Trunc => f(f64::trunc),
            UnOp::RoundEven => f(f64::round_ties_even),
        }
    }

    fn cmp(op: CmpOp, t: Ty, a: S, b: S) -> bool {
        let bits = t.elem.bits();
        let (x, y) = (int(a), int(b));
        let (sx, sy) = (sext(x, bits), sext(y, bits));
        let (p, q) = (flt(a), flt(b));
        let uno = p.is_nan() || q.is_nan();
        match op {
            CmpOp::Eq => x == y,
            CmpOp::Ne => x != y,
            CmpOp::Slt => sx < sy,
            CmpOp::Sle => sx <= sy,
            CmpOp::Sgt => sx > sy,
            CmpOp::Sge => sx >= sy,
            CmpOp::Ult => x < y,
            CmpOp::Ule => x <= y,
            CmpOp::Ugt => x > y,
            CmpOp::Uge => x >= y,
            CmpOp::FOeq => p == q,
            CmpOp::FOne => !uno && p != q,
            CmpOp::FOlt => p < q,
            CmpOp::FOle => p <= q,
            CmpOp::FOgt => p > q,
            CmpOp::FOge => p >= q,
            CmpOp::FUno => uno,
            CmpOp::FUne => uno || p != q,
            CmpOp::FUlt => uno || p < q,
            CmpOp::FUgt => uno || p > q,
        }
    }

    fn cast(op: CastOp, from: Elem, to: Elem, a: S) -> S {
        let (fb, tb) = (from.bits(), to.bits());
        let sat = |x: f64, lo: f64, hi: f64| -> f64 {
            if x.is_nan() {
                0.0
            } else {
                x.trunc().clamp(lo, hi)
            }
        };
        match op {
            CastOp::Sext => S::I(sext(int(a), fb) as u64 & mask(tb)),
            CastOp::Zext => S::I(int(a)),
            CastOp::Trunc => S::I(int(a) & mask(tb)),
            CastOp::FpExt | CastOp::FpTrunc => S::F(round_to(to, flt(a))),
            CastOp::FpToSiSat => {
                let (lo, hi) = (-(2f64.powi(tb as i32 - 1)), 2f64.powi(tb as i32 - 1) - 1.0);
                let v = sat(flt(a), lo, hi);
                // 2^63 - 1 is not an f64: clamp in integers.
                let i = if v >= 2f64.powi(63) { i64::MAX } else { v as i64 };
                S::I(i as u64 & mask(tb))
            }
            // Out of range the result is unspecified: the saturated value stands for it.
            CastOp::FpToSi | CastOp::FpToUi => {
                Self::cast(if op == CastOp::FpToSi { CastOp::FpToSiSat } else { CastOp::FpToUiSat }, from, to, a)
            }
            CastOp::FpToUiSat => {
                let v = sat(flt(a), 0.0, 2f64.powi(tb as i32) - 1.0);
                S::I(if v >= 2f64.powi(64) { u64::MAX } else { v as u64 } & mask(tb))
            }
            CastOp::SiToFp => S::F(round_to(to, sext(int(a), fb) as f64)),
            CastOp::UiToFp => S::F(round_to(to, int(a) as f64)),
            CastOp::Bitcast => {
                let bits = match (from, a) {
                    (Elem::F32, a) => (flt(a) as f32).to_bits() as u64,
                    (Elem::F16, a) => half::f16::from_f64(flt(a)).to_bits() as u64,
                    (_, a) => int(a),
                };
                match to {
                    Elem::F32 => S::F(f32::from_bits(bits as u32) as f64),
                    Elem::F64 => S::F(f64::from_bits(bits)),
                    Elem::F16 => S::F(half::f16::from_bits(bits as u16).to_f64()),
                    _ => S::I(bits),
                }
            }
        }
    }

    fn call(&self, func: &str, args: &[f64], ty: Ty) -> Result<f64, InterpError> {
        // C names: `expf` on f32, `exp` on f64; dlc's own functions (`dlc.exp`) mean the
        // same function within their documented bound, so the exact one stands for them.
        let base = func.strip_prefix("dlc.").unwrap_or(func);
        let base = if ty.elem == Elem::F32 { base.strip_suffix('f').unwrap_or(base) } else { base };
        let r = match (base, args) {
            ("exp", [x]) => x.exp(),
            ("log", [x]) => x.ln(),
            ("tanh", [x]) => x.tanh(),
            ("sin", [x]) => x.sin(),
            ("cos", [x]) => x.cos(),
            ("tan", [x]) => x.tan(),
            ("atan", [x]) => x.atan(),
            ("asin", [x]) => x.asin(),
            ("acos", [x]) => x.acos(),
            ("sinh", [x]) => x.sinh(),
            ("cosh", [x]) => x.cosh(),
            ("asinh", [x]) => x.asinh(),
            ("acosh", [x]) => x.acosh(),
            ("atanh", [x]) => x.atanh(),
            ("erf", [x]) => libm::erf(*x),
            ("sqrt", [x]) => x.sqrt(),
            ("fabs", [x]) => x.abs(),
            ("floor", [x]) => x.floor(),
            ("ceil", [x]) => x.ceil(),
            ("round", [x]) => x.round(),
            ("roundeven", [x]) => x.round_ties_even(),
            ("trunc", [x]) => x.trunc(),
            ("pow", [x, y]) => x.powf(*y),
            ("fmod", [x, y]) => x % y,
            _ => return self.fault(format!("no meaning for function '{func}' with {} arguments", args.len())),
        };
        Ok(round_to(ty.elem, r))
    }

    fn inst(&mut self, i: &Inst) -> Result<V, InterpError> {
        Ok(match i {
            Inst::Const { ty, lit } => {
                let s = match lit {
                    Lit::Int(v) => S::I(*v as u64 & mask(ty.elem.bits())),
                    Lit::Float(f) => S::F(round_to(ty.elem, *f)),
                };
                vec![s; ty.lanes as usize]
            }
            Inst::Index(e) => vec![S::I(self.eval(e)? as u64)],
            Inst::Load { ty, param, index, mask, .. } => {
                let idx = self.eval(index)?;
                let m: Option<Vec<bool>> = mask.map(|m| self.v(m).iter().map(|&s| int(s) != 0).collect());
                let mut out = Vec::with_capacity(ty.lanes as usize);
                let w = ty.elem.bytes() as usize;
                let all = m.as_ref().is_none_or(|m| m.iter().all(|&b| b));
                let base = if all { Some(self.range(*param, idx, ty.elem, ty.lanes)?.start) } else { None };
                for l in 0..ty.lanes as usize {
                    if m.as_ref().is_some_and(|m| !m[l]) {
                        out.push(if ty.elem.is_float() { S::F(0.0) } else { S::I(0) });
                        continue;
                    }
                    let at = match base {
                        Some(b) => b + l * w,
                        None => self.range(*param, idx + l as i64, ty.elem, 1)?.start,
                    };
                    out.push(self.read(*param, at, ty.elem));
                }
                out
            }
            Inst::Get(l) => self.locals[l].clone(),
            Inst::Bin(op, a, b) => {
                let t = self.ty(*a);
                let (va, vb) = (self.v(*a).clone(), self.v(*b).clone());
                va.iter().zip(&vb).map(|(&x, &y)| self.bin(*op, t, x, y)).collect::<Result<_, _>>()?
            }
            Inst::Un(op, a) => {
                let t = self.ty(*a);
                self.v(*a).iter().map(|&x| self.un(*op, t, x)).collect()
            }
            Inst::Fma(a, b, c) => {
                let e = self.ty(*a).elem;
                let (va, vb, vc) = (self.v(*a), self.v(*b), self.v(*c));
                (0..va.len())
                    .map(|l| {
                        let (x, y, z) = (flt(va[l]), flt(vb[l]), flt(vc[l]));
                        S::F(if e == Elem::F32 {
                            (x as f32).mul_add(y as f32, z as f32) as f64
                        } else {
                            round_to(e, x.mul_add(y, z))
                        })
                    })
                    .collect()
            }
            Inst::Cmp(op, a, b) => {
                let t = self.ty(*a);
                self.v(*a).iter().zip(self.v(*b)).map(|(&x, &y)| S::I(Self::cmp(*op, t, x, y) as u64)).collect()
            }
            Inst::Select(c, a, b) => {
                let (vc, va, vb) = (self.v(*c), self.v(*a), self.v(*b));
                (0..va.len()).map(|l| if int(vc[l.min(vc.len() - 1)]) != 0 { va[l] } else { vb[l] }).collect()
            }
            Inst::Cast(op, a, to) => {
                let from = self.ty(*a);
                if *op == CastOp::Bitcast && from.lanes != to.lanes {
                    // Regrouped lanes: the bits of the lanes in order, little-endian.
                    let (fb, tb) = (from.elem.bits(), to.elem.bits());
                    let mut bits = Vec::with_capacity((fb * from.lanes) as usize);
                    for &x in self.v(*a) {
                        let w = int(Self::cast(
                            CastOp::Bitcast,
                            from.elem,
                            Elem::int_of_bytes(fb as usize / 8).unwrap_or(Elem::I64),
                            x,
                        ));
                        bits.extend((0..fb).map(|i| (w >> i) & 1));
                    }
                    let ie = Elem::int_of_bytes(tb as usize / 8).unwrap_or(Elem::I64);
                    bits.chunks(tb as usize)
                        .map(|c| {
                            let w = c.iter().enumerate().fold(0u64, |w, (i, b)| w | (b << i));
                            Self::cast(CastOp::Bitcast, ie, to.elem, S::I(w))
                        })
                        .collect()
                } else {
                    self.v(*a).iter().map(|&x| Self::cast(*op, from.elem, to.elem, x)).collect()
                }
            }
            Inst::Splat(a, n) => vec![self.v(*a)[0]; *n as usize],
            Inst::Extract(a, l) => vec![self.v(*a)[*l as usize]],
            Inst::Insert(v, a, l) => {
                let mut out = self.v(*v).clone();
                out[*l as usize] = self.v(*a)[0];
                out
            }
            Inst::Shuffle(a, b, m) => {
                let both: Vec<S> = self.v(*a).iter().chain(self.v(*b)).copied().collect();
                m.iter().map(|&i| both[i as usize]).collect()
            }
            Inst::Reduce(op, a) => {
                let t = self.ty(*a);
                let v = self.v(*a).clone();
                let bop = match op {
                    ReduceOp::Add => BinOp::Add,
                    ReduceOp::FAdd => BinOp::FAdd,
                    ReduceOp::FMin => BinOp::FMin,
                    ReduceOp::FMax => BinOp::FMax,
                    ReduceOp::SMin => BinOp::SMin,
                    ReduceOp::SMax => BinOp::SMax,
                };
                let mut acc = v[0];
                for &x in &v[1..] {
                    acc = self.bin(bop, Ty::scalar(t.elem), acc, x)?;
                }
                vec![acc]
            }
            Inst::Call { func, args, ty } => {
                let vs: Vec<&V> = args.iter().map(|a| self.v(*a)).collect();
                let mut out = Vec::new();
                for l in 0..ty.lanes as usize {
                    let xs: Vec<f64> = vs.iter().map(|v| flt(v[l])).collect();
                    out.push(S::F(self.call(func, &xs, *ty)?));
                }
                out
            }
            Inst::Intrinsic { name, args, ty } => {
                let xs: Vec<Vec<u64>> = args.iter().map(|a| self.v(*a).iter().map(|&x| int(x)).collect()).collect();
                match crate::intrinsic::eval(name, &xs) {
                    Some(r) if r.len() == ty.lanes as usize => r.into_iter().map(S::I).collect(),
                    _ => return self.fault(format!("intrinsic '{name}' has no meaning on these arguments")),
                }
            }
            Inst::Opaque(a) => self.v(*a).clone(),
            Inst::BlockReduce { op, mem } => {
                let Some(Memory::Scratch(j)) = self.k.memory(*mem) else {
                    return self.fault("blockreduce of a memory that is not a scratch array");
                };
                let sc = &self.k.scratch[j as usize];
                let stride = (sc.len * sc.elem.bytes() as u64) as usize;
                let v: Vec<f32> = self.scratch[j as usize]
                    .chunks(stride)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                vec![S::F(block_reduce(*op, v) as f64)]
            }
            Inst::Lookup { table, index } => {
                let i = int(self.v(*index)[0]);
                let t = &self.k.tables[*table as usize];
                match t.values.get(i as usize) {
                    Some(Lit::Int(v)) => vec![S::I(*v as u64 & mask(t.elem.bits()))],
                    Some(Lit::Float(f)) => vec![S::F(round_to(t.elem, *f))],
                    None => {
                        return self.fault(format!(
                            "lookup of element {i} of table '{}' ({} elements)",
                            t.name,
                            t.values.len()
                        ))
                    }
                }
            }
        })
    }

    fn body(&mut self, b: &[Stmt]) -> Result<(), InterpError> {
        for s in b {
            match s {
                Stmt::Let(v, i) => {
                    let r = self.inst(i)?;
                    self.vals.insert(*v, r);
                }
                Stmt::Store { param, index, value, mask, .. } => {
                    let t = self.ty(*value);
                    let idx = self.eval(index)?;
                    let v = self.v(*value).clone();
                    let m: Option<Vec<bool>> = mask.map(|m| self.v(m).iter().map(|&s| int(s) != 0).collect());
                    for (l, s) in v.into_iter().enumerate() {
                        if m.as_ref().is_some_and(|m| !m[l]) {
                            continue;
                        }
                        let at = self.range(*param, idx + l as i64, t.elem, 1)?.start;
                        self.write(*param, at, t.elem, s);
                    }
                }
                Stmt::For { var, lo, hi, body, kind } => {
                    let (lo, hi) = (self.eval(lo)?, self.eval(hi)?);
                    for i in lo..hi {
                        self.vars.insert(*var, i);
                        if *kind == LoopKind::Threads {
                            self.tid = Some(i as usize);
                        }
                        self.body(body)?;
                    }
                    if *kind == LoopKind::Threads {
                        self.tid = None;
                    }
                    self.vars.remove(var);
                }
                Stmt::If { cond, then, els } => {
                    if int(self.v(*cond)[0]) != 0 {
                        self.body(then)?
                    } else {
                        self.body(els)?
                    }
                }
                Stmt::Local(l, _, init) => {
                    let v = self.v(*init).clone();
                    self.locals.insert(*l, v);
                }
                Stmt::Set(l, v) => {
                    let v = self.v(*v).clone();
                    self.locals.insert(*l, v);
                }
                Stmt::Memcpy { dst, dst_off, src, src_off, bytes } => {
                    let (d, s, n) = (self.eval(dst_off)?, self.eval(src_off)?, self.eval(bytes)?);
                    let rs = self.range(*src, s, Elem::I8, n.max(0) as u32)?;
                    let rd = self.range(*dst, d, Elem::I8, n.max(0) as u32)?;
                    let data = self.mem(*src)[rs].to_vec();
                    self.mem_mut(*dst)[rd].copy_from_slice(&data);
                }
            }
        }
        Ok(())
    }
}

/// Runs kernel `k` on `bufs` (one byte buffer per parameter) with the symbols `syms`.
pub fn run_kernel(k: &Kernel, bufs: &mut [Vec<u8>], syms: &BTreeMap<String, i64>) -> Result<(), InterpError> {
    let types = verify::kernel(k)?;
    if bufs.len() != k.params.len() {
        return Err(InterpError::Fault {
            kernel: k.name.clone(),
            msg: format!("{} buffers for {} parameters", bufs.len(), k.params.len()),
        });
    }
    let copies = k.block.as_ref().map_or(1, |b| b.threads as u64);
    // Unspecified until written: a pattern that makes an early read stand out.
    let fresh = |a: &[Scratch], n: u64| -> Vec<Vec<u8>> {
        a.iter().map(|s| vec![0xA5; (s.len * s.elem.bytes() as u64 * n) as usize]).collect()
    };
    let mut f = Frame {
        k,
        types: &types,
        bufs,
        scratch: fresh(&k.scratch, copies),
        shared: fresh(&k.shared, 1),
        tid: None,
        syms,
        vals: HashMap::new(),
        vars: HashMap::new(),
        locals: HashMap::new(),
    };
    let Some(b) = &k.block else { return f.body(&k.body) };
    let grid = [f.eval(&b.grid[0])?, f.eval(&b.grid[1])?, f.eval(&b.grid[2])?];
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                for (v, i) in b.vars.iter().zip([x, y, z]) {
                    f.vars.insert(*v, i);
                }
                f.scratch = fresh(&k.scratch, copies);
                f.shared = fresh(&k.shared, 1);
                f.body(&k.body)?;
                f.vals.clear();
            }
        }
    }
    Ok(())
}

/// What [`Inst::BlockReduce`] computes from thread `t`'s value `v[t]` (a multiple of 32
/// threads): within each warp of 32, five butterfly rounds (lane `l` combines its value
/// with lane `l ^ off`'s, `off` = 16, 8, 4, 2, 1, all lanes reading before any writes);
/// then the first warp does the same over the warps' lane-0 results (the identity past
/// the last warp); the result is lane 0's. `fadd` adds, `fmax` is `a < b ? b : a` and
/// `fmin` `b < a ? b : a` (`a` the lane's own value), as the CUDA translation does.
pub fn block_reduce(op: ReduceOp, mut v: Vec<f32>) -> f32 {
    let combine = |a: f32, b: f32| match op {
        ReduceOp::FMax => {
            if a < b {
                b
            } else {
                a
            }
        }
        ReduceOp::FMin => {
            if b < a {
                b
            } else {
                a
            }
        }
        _ => a + b,
    };
    let identity = match op {
        ReduceOp::FMax => f32::NEG_INFINITY,
        ReduceOp::FMin => f32::INFINITY,
        _ => 0.0,
    };
    let butterfly = |v: &mut Vec<f32>, active: usize| {
        for off in [16usize, 8, 4, 2, 1] {
            let old = v.clone();
            for t in 0..active {
                v[t] = combine(old[t], old[t ^ off]);
            }
        }
    };
    let n = v.len();
    butterfly(&mut v, n);
    let warps: Vec<f32> = (0..n / 32).map(|w| v[w * 32]).collect();
    for (t, x) in v.iter_mut().enumerate().take(32) {
        *x = warps.get(t).copied().unwrap_or(identity);
    }
    butterfly(&mut v, 32);
    v[0]
}

/// The program's computed symbols ([`crate::Symbol::computed`]) for `inputs` at the
/// input dims `syms`: its prologue run as the `shape_values` entry point runs it (the
/// arena laid out with every computed symbol 0).
pub fn shape_values(
    p: &Program,
    inputs: &[Vec<u8>],
    syms: &BTreeMap<String, i64>,
) -> Result<BTreeMap<String, i64>, InterpError> {
    verify::program(p)?;
    let ev_err = |err| InterpError::Expr { kernel: "prologue".into(), err };
    let mut at_zero = syms.clone();
    for s in p.symbols.iter().filter(|s| s.computed) {
        at_zero.insert(s.name.clone(), 0);
    }
    let n_out = p.buffers.iter().filter_map(|b| if let BufKind::Output(i) = b.kind { Some(i + 1) } else { None }).max();
    let arena = p.arena_bytes.eval(&at_zero).map_err(ev_err)?;
    let mut mem = Mem {
        inputs: inputs.to_vec(),
        outputs: vec![Vec::new(); n_out.unwrap_or(0) as usize],
        arena: vec![0; usize::try_from(arena).unwrap_or(0)],
        sizer: None,
        computed: Some(BTreeMap::new()),
    };
    let steps: Vec<Step> = p.prologue.iter().map(|&i| p.schedule[i as usize].clone()).collect();
    run_steps(p, &steps, &mut mem, &mut at_zero)?;
    Ok(mem.computed.unwrap_or_default())
}

/// Runs a whole program: `inputs` are the caller's input buffers; returns the outputs
/// (sized by their buffers' byte expressions under `syms`). Computed symbols `syms`
/// lacks are computed first ([`shape_values`]); those it gives are checked by their
/// `bind` steps.
pub fn run_program(p: &Program, inputs: &[Vec<u8>], syms: &BTreeMap<String, i64>) -> Result<Vec<Vec<u8>>, InterpError> {
    verify::program(p)?;
    if p.symbols.iter().any(|s| s.computed && !syms.contains_key(&s.name)) {
        let mut all = syms.clone();
        all.extend(shape_values(p, inputs, syms)?);
        return run_program(p, inputs, &all);
    }
    let fault = |msg: String| InterpError::Fault { kernel: "schedule".into(), msg };
    let ev = |e: &Expr| e.eval(syms).map_err(|err| InterpError::Expr { kernel: "schedule".into(), err });
    for s in p.symbols.iter().filter(|s| s.data.is_none()) {
        match syms.get(&s.name) {
            Some(&v) if v >= s.min => {}
            Some(&v) => return Err(fault(format!("symbol {} = {v} is below its minimum {}", s.name, s.min))),
            None => return Err(fault(format!("symbol {} has no value", s.name))),
        }
    }
    for (a, b) in &p.constraints {
        if ev(a)? != ev(b)? {
            return Err(fault(format!("the dims break the requirement {a} == {b}")));
        }
    }
    let n_out = p.buffers.iter().filter_map(|b| if let BufKind::Output(i) = b.kind { Some(i + 1) } else { None }).max();
    let mut mem = Mem {
        inputs: inputs.to_vec(),
        outputs: vec![Vec::new(); n_out.unwrap_or(0) as usize],
        arena: vec![0; usize::try_from(ev(&p.arena_bytes)?).map_err(|_| fault("negative arena size".into()))?],
        sizer: None,
        computed: None,
    };
    let mut syms = syms.clone();
    let data =
        |s: &BTreeMap<String, i64>| p.symbols.iter().filter(|x| x.data.is_some()).all(|x| s.contains_key(&x.name));
    // Outputs whose sizes depend on data symbols are sized when those are bound.
    let size_outputs = |mem: &mut Mem, syms: &BTreeMap<String, i64>| -> Result<(), InterpError> {
        for b in &p.buffers {
            if let BufKind::Output(i) = b.kind {
                if let Ok(n) = b.bytes.eval(syms) {
                    let n = usize::try_from(n).map_err(|_| fault(format!("negative size of {}", b.name)))?;
                    if mem.outputs[i as usize].len() < n {
                        mem.outputs[i as usize].resize(n, 0);
                    }
                }
            }
        }
        Ok(())
    };
    size_outputs(&mut mem, &syms)?;
    mem.sizer = Some(&size_outputs);
    run_steps(p, &p.schedule, &mut mem, &mut syms)?;
    if !data(&syms) {
        return Err(fault("a data symbol was never bound".into()));
    }
    Ok(mem.outputs)
}

type Sizer<'f> = &'f dyn Fn(&mut Mem, &BTreeMap<String, i64>) -> Result<(), InterpError>;

struct Mem<'f> {
    inputs: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
    arena: Vec<u8>,
    /// Sizes the outputs once a `bind` step binds their dims.
    sizer: Option<Sizer<'f>>,
    /// In the prologue: the computed symbols its `bind` steps give (the schedule's
    /// other steps keep seeing them as 0, as the arena was laid out).
    computed: Option<BTreeMap<String, i64>>,
}

impl Mem<'_> {
    fn get(&self, p: &Program, b: u32, syms: &BTreeMap<String, i64>) -> Result<Vec<u8>, InterpError> {
        let buf = &p.buffers[b as usize];
        let fault = |msg: String| InterpError::Fault { kernel: "schedule".into(), msg };
        let ev = |e: &Expr| e.eval(syms).map_err(|err| InterpError::Expr { kernel: "schedule".into(), err });
        let n = ev(&buf.bytes)? as usize;
        let slice = |v: &[u8], off: usize| -> Result<Vec<u8>, InterpError> {
            v.get(off..off + n)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| fault(format!("{} lies outside its memory", buf.name)))
        };
        match &buf.kind {
            BufKind::Input(i) => slice(self.inputs.get(*i as usize).ok_or_else(|| fault(format!("no input {i}")))?, 0),
            BufKind::Output(i) => slice(&self.outputs[*i as usize], 0),
            BufKind::Const(d) => slice(d, 0),
            BufKind::Arena(off) => slice(&self.arena, ev(off)? as usize),
        }
    }

    fn put(&mut self, p: &Program, b: u32, data: &[u8], syms: &BTreeMap<String, i64>) -> Result<(), InterpError> {
        let buf = &p.buffers[b as usize];
        let dst = match &buf.kind {
            BufKind::Output(i) => &mut self.outputs[*i as usize][..],
            BufKind::Arena(off) => {
                let off = off.eval(syms).map_err(|err| InterpError::Expr { kernel: "schedule".into(), err })? as usize;
                &mut self.arena[off..off + data.len()]
            }
            _ => {
                return Err(InterpError::Fault { kernel: "schedule".into(), msg: format!("{} is read-only", buf.name) })
            }
        };
        dst[..data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A `bind` step: runs the kernel with a result array, fails on a nonzero reason code,
/// binds the symbols and sizes outputs that depended on them.
fn bind_step(
    p: &Program,
    mem: &mut Mem,
    syms: &mut BTreeMap<String, i64>,
    kernel: u32,
    args: &[u32],
    names: &[String],
    label: Option<&str>,
) -> Result<(), InterpError> {
    let k = &p.kernels[kernel as usize];
    let mut bufs: Vec<Vec<u8>> = args.iter().map(|&b| mem.get(p, b, syms)).collect::<Result<_, _>>()?;
    bufs.push(vec![0; 8 * (names.len() + 1)]);
    run_kernel(k, &mut bufs, syms)?;
    let res = &bufs[bufs.len() - 1];
    let at = |j: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&res[8 * j..8 * j + 8]);
        i64::from_le_bytes(b)
    };
    let code = at(names.len());
    if code != 0 {
        let label = label.map(|l| format!(" ({l})")).unwrap_or_default();
        return Err(InterpError::Fault {
            kernel: k.name.clone(),
            msg: format!("bind{label} fails with reason {code}"),
        });
    }
    for (j, n) in names.iter().enumerate().filter(|(_, n)| *n != "_") {
        let computed = p.symbols.iter().any(|s| s.computed && s.name == *n);
        match (&mut mem.computed, computed) {
            (Some(out), true) => {
                out.insert(n.clone(), at(j));
            }
            (None, true) if syms.get(n) != Some(&at(j)) => {
                return Err(InterpError::Fault {
                    kernel: k.name.clone(),
                    msg: format!("computed dim {n} is {}, the dims say {:?}", at(j), syms.get(n)),
                });
            }
            (None, true) => {}
            (_, false) => {
                syms.insert(n.clone(), at(j));
            }
        }
    }
    if let Some(f) = mem.sizer {
        f(mem, syms)?;
    }
    Ok(())
}

fn run_steps(p: &Program, st: &[Step], mem: &mut Mem, syms: &mut BTreeMap<String, i64>) -> Result<(), InterpError> {
    for s in st {
        if let Step::Bind { kernel, args, syms: names, label } = s {
            bind_step(p, mem, syms, *kernel, args, names, label.as_deref())?;
            continue;
        }
        let syms = &*syms;
        match s {
            Step::Bind { .. } => {}
            Step::Call { kernel, args, .. } => {
                let k = &p.kernels[*kernel as usize];
                let mut bufs: Vec<Vec<u8>> = args.iter().map(|&b| mem.get(p, b, syms)).collect::<Result<_, _>>()?;
                run_kernel(k, &mut bufs, syms)?;
                for ((&b, data), acc) in args.iter().zip(&bufs).zip(&k.params) {
                    if *acc == Access::Write {
                        mem.put(p, b, data, syms)?;
                    }
                }
            }
            Step::Copy { dst, src } => {
                let data = mem.get(p, *src, syms)?;
                mem.put(p, *dst, &data, syms)?;
            }
            Step::If { cond, then, els } => {
                let c = mem.get(p, *cond, syms)?;
                let mut inner = syms.clone();
                if c.first().copied().unwrap_or(0) != 0 {
                    run_steps(p, then, mem, &mut inner)?
                } else {
                    run_steps(p, els, mem, &mut inner)?
                }
            }
            Step::Loop { count, index, cond, carried, scans, body } => {
                let n = count.eval(syms).map_err(|err| InterpError::Expr { kernel: "schedule".into(), err })?;
                let mut inner = syms.clone();
                for i in 0..n {
                    if let Some(c) = cond {
                        if mem.get(p, *c, &inner)?.first().copied().unwrap_or(0) == 0 {
                            break;
                        }
                    }
                    if let Some(b) = index {
                        mem.put(p, *b, &i.to_le_bytes(), &inner)?;
                    }
                    run_steps(p, body, mem, &mut inner)?;
                    for (dst, src) in scans {
                        let part = mem.get(p, *src, &inner)?;
                        let mut all = mem.get(p, *dst, &inner)?;
                        let at = i as usize * part.len();
                        all.get_mut(at..at + part.len())
                            .ok_or_else(|| InterpError::Fault {
                                kernel: "schedule".into(),
                                msg: format!("scan slot {i} lies outside {}", p.buffers[*dst as usize].name),
                            })?
                            .copy_from_slice(&part);
                        mem.put(p, *dst, &all, &inner)?;
                    }
                    for (to, from) in carried {
                        let data = mem.get(p, *from, &inner)?;
                        mem.put(p, *to, &data, &inner)?;
                    }
                }
            }
        }
    }
    Ok(())
}
