//! The optimiser ops of `ai.onnx.preview.training` (Adagrad, Momentum, Adam) from dlc's
//! elementwise ops, following ONNX's reference formulas; each updates one or several
//! tensors (inputs `R, T, X..., G..., state...`; outputs the new `X...` then each state
//! kind in turn). `R` and `T` are scalars given at run time (`T` an i64 step count).
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("ai.onnx.preview.training::Adagrad", |cx| optimiser(cx, Kind::Adagrad));
    reg.insert("ai.onnx.preview.training::Momentum", |cx| optimiser(cx, Kind::Momentum));
    reg.insert("ai.onnx.preview.training::Adam", |cx| optimiser(cx, Kind::Adam));
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Adagrad,
    Momentum,
    Adam,
}

struct Ops<'c, 'a, 'm> {
    cx: &'c mut NodeCx<'a, 'm>,
    n: usize,
}

impl Ops<'_, '_, '_> {
    fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}", self.n)
    }
    fn f(&mut self, v: f32) -> Result<Value, String> {
        Ok(self.cx.add_const(TensorData::from_f32(&[], &[v]).ok_or("a constant")?))
    }
    fn op(&mut self, what: &str, op: impl Into<Op>, args: &[Value]) -> Result<Value, String> {
        let name = self.name(what);
        self.cx.add1(&name, op, args)
    }
    fn add(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.op("add", Add {}, &[a, b])
    }
    fn sub(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.op("sub", Sub {}, &[a, b])
    }
    fn mul(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.op("mul", Mul {}, &[a, b])
    }
    fn div(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.op("div", Div {}, &[a, b])
    }
    /// `c * v` for a constant `c`.
    fn scale(&mut self, c: f32, v: Value) -> Result<Value, String> {
        let c = self.f(c)?;
        self.mul(c, v)
    }
}

fn optimiser(cx: &mut NodeCx, kind: Kind) -> Result<Vec<Value>, String> {
    let states = if kind == Kind::Adam { 2 } else { 1 };
    let count = cx.node.input.len();
    if count < 2 + 2 + states || !(count - 2).is_multiple_of(2 + states) {
        return Err(format!("expects R, T and {} lists of one length, got {count} inputs", 2 + states));
    }
    let n = (count - 2) / (2 + states);
    let (r, t) = (cx.input(0)?, cx.input(1)?);
    let norm = cx.float("norm_coefficient", 0.0);
    let (alpha, beta) = (cx.float("alpha", if kind == Kind::Adam { 0.9 } else { 0.0 }), cx.float("beta", 0.999));
    let epsilon = cx.float("epsilon", if kind == Kind::Adam { 1e-6 } else { 0.0 });
    let decay = cx.float("decay_factor", 0.0);
    let post = cx.float("norm_coefficient_post", 0.0);
    let nesterov = match (kind, cx.string("mode", "standard")?.as_str()) {
        (Kind::Momentum, "standard") => false,
        (Kind::Momentum, "nesterov") => true,
        (Kind::Momentum, m) => return Err(format!("unknown mode '{m}'")),
        _ => false,
    };
    let inputs: Vec<Value> = (2..count).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
    let mut o = Ops { cx, n: 0 };
    let tf = o.op("t_f32", Cast::new(DType::F32), &[t])?;
    let zero = o.f(0.0)?;
    let started = o.op("started", Greater {}, &[tf, zero])?;
    let mut outs: Vec<Vec<Value>> = vec![Vec::new(); 1 + states];
    for i in 0..n {
        let (x, g) = (inputs[i], inputs[n + i]);
        let nx = o.scale(norm, x)?;
        let gr = o.add(nx, g)?;
        match kind {
            Kind::Adagrad => {
                let h = inputs[2 * n + i];
                let td = o.scale(decay, tf)?;
                let one = o.f(1.0)?;
                let den = o.add(one, td)?;
                let ra = o.div(r, den)?;
                let g2 = o.mul(gr, gr)?;
                let hn = o.add(h, g2)?;
                let sq = o.op("sqrt", Sqrt {}, &[hn])?;
                let eps = o.f(epsilon)?;
                let sq = o.add(sq, eps)?;
                let step = o.mul(ra, gr)?;
                let step = o.div(step, sq)?;
                outs[0].push(o.sub(x, step)?);
                outs[1].push(hn);
            }
            Kind::Momentum => {
                let v = inputs[2 * n + i];
                // beta at later steps, 1 at the first.
                let (b, one) = (o.f(beta)?, o.f(1.0)?);
                let ba = o.op("beta_adjusted", Where {}, &[started, b, one])?;
                let av = o.scale(alpha, v)?;
                let bg = o.mul(ba, gr)?;
                let vn = o.add(av, bg)?;
                let dir = if nesterov {
                    let avn = o.scale(alpha, vn)?;
                    o.add(gr, avn)?
                } else {
                    vn
                };
                let step = o.mul(r, dir)?;
                outs[0].push(o.sub(x, step)?);
                outs[1].push(vn);
            }
            Kind::Adam => {
                let (v, h) = (inputs[2 * n + i], inputs[3 * n + i]);
                let av = o.scale(alpha, v)?;
                let ag = o.scale(1.0 - alpha, gr)?;
                let vn = o.add(av, ag)?;
                let bh = o.scale(beta, h)?;
                let g2 = o.mul(gr, gr)?;
                let bg = o.scale(1.0 - beta, g2)?;
                let hn = o.add(bh, bg)?;
                let sq = o.op("sqrt", Sqrt {}, &[hn])?;
                let eps = o.f(epsilon)?;
                let sq = o.add(sq, eps)?;
                // r * sqrt(1 - beta^t) / (1 - alpha^t) after the first step, else r.
                let (bc, ac) = (o.f(beta)?, o.f(alpha)?);
                let bt = o.op("pow", Pow {}, &[bc, tf])?;
                let at = o.op("pow", Pow {}, &[ac, tf])?;
                let one = o.f(1.0)?;
                let b1 = o.sub(one, bt)?;
                let b1 = o.op("sqrt", Sqrt {}, &[b1])?;
                let a1 = o.sub(one, at)?;
                let corr = o.div(b1, a1)?;
                let rc = o.mul(r, corr)?;
                let ra = o.op("r_adjusted", Where {}, &[started, rc, r])?;
                let q = o.div(vn, sq)?;
                let step = o.mul(ra, q)?;
                let xn = o.sub(x, step)?;
                outs[0].push(o.scale(1.0 - post, xn)?);
                outs[1].push(vn);
                outs[2].push(hn);
            }
        }
    }
    Ok(outs.into_iter().flatten().collect())
}
