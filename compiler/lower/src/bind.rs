//! The kernel of a Bind node: its rule ([`dlc_ir::bind`]) in kir integer code.
//!
//! Parameters: the shape operand (`m` i64 values, read) and the result (`k + 1` i64
//! values, written): the `k` dims it binds, then the [`Reason`] code of the first rule
//! it breaks (0 when none). The rule is unrolled at compile time over the input's rank
//! and `m` (both fixed); the input's dims are index expressions (constants or run-time
//! dims). The program runs it in a `bind` step, which fails the run on a nonzero code
//! and otherwise binds the symbols (`dlc_kir::Step::Bind`).
use crate::{LowerError, Node};
use dlc_ir::bind::{BindRule, Reason};
use dlc_ir::ops::Bind;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Kernel, KernelBuilder, Ty, ValId};

struct Rule {
    b: KernelBuilder,
    zero: ValId,
    one: ValId,
    err: ValId,
}

impl Rule {
    /// Records `reason` when `cond` (an i1) holds and no earlier rule failed.
    fn check(&mut self, cond: ValId, reason: Reason) {
        let code = self.b.i64(reason.code());
        let clean = self.b.cmp(CmpOp::Eq, self.err, self.zero);
        let v = self.b.select(clean, code, self.err);
        self.err = self.b.select(cond, v, self.err);
    }

    fn flag(&mut self, cond: ValId) -> ValId {
        self.b.select(cond, self.one, self.zero)
    }

    fn sum(&mut self, vals: &[ValId]) -> ValId {
        vals.iter().fold(self.zero, |a, &v| self.b.bin(BinOp::Add, a, v))
    }

    /// Normalised axes `t` against rank `r`, checked like [`dlc_ir::bind::eval`]; the
    /// i64 flag (0/1 when valid) of every position.
    fn axes(&mut self, t: &[ValId], r: usize) -> Vec<ValId> {
        let norm = self.norm_axes(t, r);
        (0..r)
            .map(|i| {
                let iv = self.b.i64(i as i64);
                let hits: Vec<ValId> = norm
                    .iter()
                    .map(|&a| {
                        let c = self.b.cmp(CmpOp::Eq, a, iv);
                        self.flag(c)
                    })
                    .collect();
                self.sum(&hits)
            })
            .collect()
    }

    /// The axes `t` normalised against rank `r` (checked: in range, none twice).
    fn norm_axes(&mut self, t: &[ValId], r: usize) -> Vec<ValId> {
        let rv = self.b.i64(r as i64);
        let mut norm = Vec::with_capacity(t.len());
        for &a in t {
            let neg = self.b.cmp(CmpOp::Slt, a, self.zero);
            let plus = self.b.bin(BinOp::Add, a, rv);
            let a = self.b.select(neg, plus, a);
            let below = self.b.cmp(CmpOp::Slt, a, self.zero);
            let above = self.b.cmp(CmpOp::Sge, a, rv);
            let out = self.b.select(below, below, above);
            self.check(out, Reason::AxisRange);
            for &prev in &norm {
                let same = self.b.cmp(CmpOp::Eq, a, prev);
                self.check(same, Reason::AxisRepeat);
            }
            norm.push(a);
        }
        norm
    }

    fn clamp(&mut self, v: ValId, lo: ValId, hi: ValId) -> ValId {
        let v = self.b.bin(BinOp::SMax, v, lo);
        self.b.bin(BinOp::SMin, v, hi)
    }

    /// [`dlc_ir::bind::slice_range`] in kir: the first index and the count.
    fn slice_range(&mut self, d: ValId, start: ValId, end: ValId, step: ValId) -> (ValId, ValId) {
        let (zero, one) = (self.zero, self.one);
        let z = self.b.cmp(CmpOp::Eq, step, zero);
        self.check(z, Reason::ZeroStep);
        let mut wrap = |v: ValId| {
            let neg = self.b.cmp(CmpOp::Slt, v, zero);
            let w = self.b.bin(BinOp::Add, v, d);
            self.b.select(neg, w, v)
        };
        let (s, e) = (wrap(start), wrap(end));
        // Positive steps.
        let (ps, pe) = (self.clamp(s, zero, d), self.clamp(e, zero, d));
        let span = self.b.bin(BinOp::Sub, pe, ps);
        let span1 = self.b.bin(BinOp::Sub, span, one);
        let safe_step = self.b.select(z, one, step);
        let q = self.b.bin(BinOp::SDiv, span1, safe_step);
        let q1 = self.b.bin(BinOp::Add, q, one);
        let some = self.b.cmp(CmpOp::Sgt, pe, ps);
        let pn = self.b.select(some, q1, zero);
        // Negative steps.
        let dm1 = self.b.bin(BinOp::Sub, d, one);
        let top = self.b.bin(BinOp::SMax, dm1, zero);
        let minus1 = self.b.i64(-1);
        let (ns, ne) = (self.clamp(s, zero, top), self.clamp(e, minus1, dm1));
        let min = self.b.i64(i64::MIN);
        let is_min = self.b.cmp(CmpOp::Eq, step, min);
        let neg = self.b.bin(BinOp::Sub, zero, step);
        let max = self.b.i64(i64::MAX);
        let neg = self.b.select(is_min, max, neg);
        let neg = self.b.bin(BinOp::SMax, neg, one);
        let span = self.b.bin(BinOp::Sub, ns, ne);
        let span1 = self.b.bin(BinOp::Sub, span, one);
        let q = self.b.bin(BinOp::SDiv, span1, neg);
        let q1 = self.b.bin(BinOp::Add, q, one);
        let some = self.b.cmp(CmpOp::Sgt, ns, ne);
        let nonempty = self.b.cmp(CmpOp::Sgt, d, zero);
        let some = self.b.select(nonempty, some, nonempty);
        let nn = self.b.select(some, q1, zero);
        let up = self.b.cmp(CmpOp::Sgt, step, zero);
        (self.b.select(up, ps, ns), self.b.select(up, pn, nn))
    }

    /// `vals[src]` for a run-time `src` (0 when out of range).
    fn pick(&mut self, vals: &[ValId], src: ValId) -> ValId {
        let mut out = self.zero;
        for (i, &v) in vals.iter().enumerate() {
            let iv = self.b.i64(i as i64);
            let at = self.b.cmp(CmpOp::Eq, src, iv);
            out = self.b.select(at, v, out);
        }
        out
    }
}

/// The Bind kernel of node `n`.
pub fn bind(name: &str, n: &Node, op: &Bind) -> Result<Kernel, LowerError> {
    let rule = op.bind_rule().ok_or_else(|| n.error(format!("unknown rule '{}'", op.rule)))?;
    let m =
        n.inputs[1].shape.as_fixed().and_then(|s| s.first().copied()).ok_or_else(|| n.error("shape operand length"))?;
    let k = op.entries().count();
    let i64t = Ty::scalar(Elem::I64);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let zero = b.i64(0);
    let one = b.i64(1);
    let t: Vec<ValId> = (0..m as i64).map(|i| b.load(i64t, 0, Expr::c(i), 8)).collect();
    let d: Vec<ValId> = Node::dims(&n.inputs[0]).into_iter().map(|e| b.index(e)).collect();
    let mut r = Rule { b, zero, one, err: zero };
    let n_in = d.len();
    let out: Vec<ValId> = match rule {
        BindRule::Reshape { allowzero } => {
            if allowzero {
                let zeros: Vec<ValId> = t
                    .iter()
                    .map(|&v| {
                        let c = r.b.cmp(CmpOp::Eq, v, r.zero);
                        r.flag(c)
                    })
                    .collect();
                let minus = r.b.i64(-1);
                let infers: Vec<ValId> = t
                    .iter()
                    .map(|&v| {
                        let c = r.b.cmp(CmpOp::Eq, v, minus);
                        r.flag(c)
                    })
                    .collect();
                let (z, i) = (r.sum(&zeros), r.sum(&infers));
                let both = r.b.bin(BinOp::Mul, z, i);
                let c = r.b.cmp(CmpOp::Sgt, both, r.zero);
                r.check(c, Reason::ZeroAndInferred);
            }
            let minus = r.b.i64(-1);
            let mut vals = Vec::with_capacity(t.len());
            for (i, &v) in t.iter().enumerate() {
                let mut v = v;
                if !allowzero {
                    let is0 = r.b.cmp(CmpOp::Eq, v, r.zero);
                    match d.get(i) {
                        Some(&di) => v = r.b.select(is0, di, v),
                        None => r.check(is0, Reason::CopiesMissing),
                    }
                }
                let neg = r.b.cmp(CmpOp::Slt, v, minus);
                r.check(neg, Reason::Negative);
                vals.push(v);
            }
            let infer: Vec<ValId> = vals.iter().map(|&v| r.b.cmp(CmpOp::Eq, v, minus)).collect();
            let flags: Vec<ValId> = infer.iter().map(|&c| r.flag(c)).collect();
            let count = r.sum(&flags);
            let two = r.b.cmp(CmpOp::Sgt, count, r.one);
            r.check(two, Reason::TwoInferred);
            // The product of the known extents, with checked multiplication.
            let max = r.b.i64(i64::MAX);
            let (mut known, mut over) = (r.one, r.zero);
            for (&v, &c) in vals.iter().zip(&infer) {
                let v = r.b.select(c, r.one, v);
                let is0 = r.b.cmp(CmpOp::Eq, v, r.zero);
                let div = r.b.select(is0, r.one, v);
                let lim = r.b.bin(BinOp::SDiv, max, div);
                let big = r.b.cmp(CmpOp::Sgt, known, lim);
                let o = r.flag(big);
                over = r.b.bin(BinOp::Or, over, o);
                known = r.b.bin(BinOp::Mul, known, v);
            }
            let total = d.iter().fold(r.one, |a, &x| r.b.bin(BinOp::Mul, a, x));
            let over = r.b.cmp(CmpOp::Ne, over, r.zero);
            let inferring = r.b.cmp(CmpOp::Eq, count, r.one);
            let known0 = r.b.cmp(CmpOp::Eq, known, r.zero);
            let safe = r.b.select(known0, r.one, known);
            let rem = r.b.bin(BinOp::SRem, total, safe);
            let rem_bad = r.b.cmp(CmpOp::Ne, rem, r.zero);
            let a = r.b.select(over, over, known0);
            let cannot = r.b.select(a, a, rem_bad);
            let c1 = r.b.select(inferring, cannot, inferring);
            r.check(c1, Reason::CannotInfer);
            let ne = r.b.cmp(CmpOp::Ne, known, total);
            let mismatch = r.b.select(over, over, ne);
            let c2 = r.b.select(inferring, inferring, mismatch);
            let not_inferring = r.b.cmp(CmpOp::Eq, count, r.zero);
            let c2 = r.b.select(not_inferring, c2, not_inferring);
            r.check(c2, Reason::Count);
            let q = r.b.bin(BinOp::SDiv, total, safe);
            vals.iter().zip(&infer).map(|(&v, &c)| r.b.select(c, q, v)).collect()
        }
        BindRule::ReduceAxes => {
            let f = r.axes(&t, n_in);
            let mut out = Vec::with_capacity(2 * n_in);
            for (&fi, &di) in f.iter().zip(&d) {
                let red = r.b.cmp(CmpOp::Ne, fi, r.zero);
                out.push(r.b.select(red, r.one, di));
                out.push(r.b.select(red, di, r.one));
            }
            out
        }
        BindRule::SqueezeAll => {
            let f = r.axes(&t, n_in);
            for (&fi, &di) in f.iter().zip(&d) {
                let sq = r.b.cmp(CmpOp::Ne, fi, r.zero);
                let not1 = r.b.cmp(CmpOp::Ne, di, r.one);
                let c = r.b.select(sq, not1, sq);
                r.check(c, Reason::NotOne);
            }
            // Then: a kept dim must not be 1 (the order of `eval`'s checks).
            for (&fi, &di) in f.iter().zip(&d) {
                let kept = r.b.cmp(CmpOp::Eq, fi, r.zero);
                let is1 = r.b.cmp(CmpOp::Eq, di, r.one);
                let c = r.b.select(kept, is1, kept);
                r.check(c, Reason::NotOne);
            }
            Vec::new()
        }
        BindRule::ReduceSqueeze | BindRule::Squeeze => {
            let f = r.axes(&t, n_in);
            if rule == BindRule::Squeeze {
                for (&fi, &di) in f.iter().zip(&d) {
                    let sq = r.b.cmp(CmpOp::Ne, fi, r.zero);
                    let not1 = r.b.cmp(CmpOp::Ne, di, r.one);
                    let c = r.b.select(sq, not1, sq);
                    r.check(c, Reason::NotOne);
                }
            }
            // Output j is the kept dim with j kept dims before it.
            let mut rank = Vec::with_capacity(n_in);
            let mut before = r.zero;
            for &fi in &f {
                rank.push(before);
                let kept = r.b.cmp(CmpOp::Eq, fi, r.zero);
                let inc = r.flag(kept);
                before = r.b.bin(BinOp::Add, before, inc);
            }
            (0..k)
                .map(|j| {
                    let jv = r.b.i64(j as i64);
                    let mut u = r.zero;
                    for i in 0..n_in {
                        let kept = r.b.cmp(CmpOp::Eq, f[i], r.zero);
                        let at = r.b.cmp(CmpOp::Eq, rank[i], jv);
                        let c = r.b.select(kept, at, kept);
                        u = r.b.select(c, d[i], u);
                    }
                    u
                })
                .collect()
        }
        BindRule::Unsqueeze => {
            let f = r.axes(&t, k);
            let mut before = r.zero;
            let mut out = Vec::with_capacity(k);
            for (o, &fo) in f.iter().enumerate() {
                let ov = r.b.i64(o as i64);
                let src = r.b.bin(BinOp::Sub, ov, before);
                let dim = r.pick(&d, src);
                let new = r.b.cmp(CmpOp::Ne, fo, r.zero);
                out.push(r.b.select(new, r.one, dim));
                before = r.b.bin(BinOp::Add, before, fo);
            }
            out
        }
        BindRule::Count => {
            let total = d.iter().fold(r.one, |a, &x| r.b.bin(BinOp::Mul, a, x));
            let below = r.b.cmp(CmpOp::Slt, t[0], r.zero);
            let above = r.b.cmp(CmpOp::Sgt, t[0], total);
            let bad = r.b.select(below, below, above);
            r.check(bad, Reason::CountRange);
            vec![t[0]]
        }
        BindRule::Extent { axis } => {
            let e = *d.get(axis).ok_or_else(|| n.error(format!("extent axis {axis} out of range")))?;
            let below = r.b.cmp(CmpOp::Slt, t[0], r.zero);
            let above = r.b.cmp(CmpOp::Sgt, t[0], e);
            let bad = r.b.select(below, below, above);
            r.check(bad, Reason::ExtentRange);
            vec![t[0]]
        }
        BindRule::Values => {
            let max = r.b.i64(dlc_ir::bind::MAX_COMPUTED);
            for &v in &t {
                let below = r.b.cmp(CmpOp::Slt, v, r.zero);
                let above = r.b.cmp(CmpOp::Sgt, v, max);
                let bad = r.b.select(below, below, above);
                r.check(bad, Reason::ValueRange);
            }
            t.clone()
        }
        BindRule::Dims => {
            for (&di, &ti) in d.iter().zip(&t) {
                let ne = r.b.cmp(CmpOp::Ne, di, ti);
                r.check(ne, Reason::Count);
            }
            t.clone()
        }
        // Below (they read the rule's operands differently).
        BindRule::Slice | BindRule::Split { .. } => Vec::new(),
    };
    let out = match rule {
        BindRule::Slice => {
            let m = t.len() / 4;
            let a = r.norm_axes(&t[2 * m..3 * m], n_in);
            let mut out: Vec<ValId> = d.iter().flat_map(|&x| [r.zero, r.one, x]).collect();
            for j in 0..m {
                let dj = r.pick(&d, a[j]);
                let (s, c) = r.slice_range(dj, t[j], t[m + j], t[3 * m + j]);
                for i in 0..n_in {
                    let iv = r.b.i64(i as i64);
                    let here = r.b.cmp(CmpOp::Eq, a[j], iv);
                    out[3 * i] = r.b.select(here, s, out[3 * i]);
                    out[3 * i + 1] = r.b.select(here, t[3 * m + j], out[3 * i + 1]);
                    out[3 * i + 2] = r.b.select(here, c, out[3 * i + 2]);
                }
            }
            out
        }
        BindRule::Split { axis } => {
            let max = r.b.i64(i64::MAX);
            let mut at = r.zero;
            let mut out = Vec::with_capacity(2 * t.len());
            for &s in &t {
                let neg = r.b.cmp(CmpOp::Slt, s, r.zero);
                let room = r.b.bin(BinOp::Sub, max, at);
                let over = r.b.cmp(CmpOp::Sgt, s, room);
                let bad = r.b.select(neg, neg, over);
                r.check(bad, Reason::SplitSizes);
                out.extend([at, s]);
                at = r.b.bin(BinOp::Add, at, s);
            }
            let total = *d.get(axis).ok_or_else(|| n.error(format!("split axis {axis} out of range")))?;
            let ne = r.b.cmp(CmpOp::Ne, at, total);
            r.check(ne, Reason::SplitSizes);
            out
        }
        _ => out,
    };
    if out.len() != k {
        return Err(n.error(format!("internal: rule {} gives {} dims for {k} symbols", op.rule, out.len())));
    }
    for (j, &v) in out.iter().enumerate() {
        r.b.store(1, Expr::c(j as i64), v, 8);
    }
    let err = r.err;
    r.b.store(1, Expr::c(k as i64), err, 8);
    Ok(r.b.finish())
}
