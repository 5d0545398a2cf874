//! Strides and loop-nest shaping over symbolic dims.
use dlc_kir::Expr;

/// Element strides of `dims` broadcast (numpy rules) to `out`: 0 along broadcast dims.
/// A symbolic dim is never treated as broadcast (1) unless `out`'s is 1 too.
pub fn broadcast_strides(dims: &[Expr], out: &[Expr]) -> Vec<Expr> {
    let r = out.len();
    let mut strides = vec![Expr::c(0); r];
    let mut s = Expr::c(1);
    for k in (0..dims.len()).rev() {
        let d = r - dims.len() + k;
        let one = |e: &Expr| e.as_const() == Some(1);
        strides[d] = if one(&dims[k]) && !one(&out[d]) { Expr::c(0) } else { s.clone() };
        s = &s * &dims[k];
    }
    strides
}

/// [`broadcast_strides`] over fixed dims.
pub fn broadcast_strides_fixed(dims: &[u64], out: &[u64]) -> Vec<u64> {
    let r = out.len();
    let mut strides = vec![0; r];
    let mut s = 1;
    for k in (0..dims.len()).rev() {
        let d = r - dims.len() + k;
        strides[d] = if dims[k] == 1 && out[d] != 1 { 0 } else { s };
        s *= dims[k];
    }
    strides
}

/// Element strides of a contiguous row-major tensor.
pub fn contiguous_strides(dims: &[Expr]) -> Vec<Expr> {
    broadcast_strides(dims, dims)
}

/// Merges adjacent dims where every operand's strides stay linear (drops dims of
/// extent 1), so common cases become short, contiguous loop nests. Equality of strides
/// is equality of canonical expressions, so symbolic dims merge too when they can.
pub fn coalesce(out: &[Expr], strides: &[Vec<Expr>]) -> (Vec<Expr>, Vec<Vec<Expr>>) {
    let mut dims: Vec<Expr> = Vec::new();
    let mut st: Vec<Vec<Expr>> = vec![Vec::new(); strides.len()];
    for d in 0..out.len() {
        if out[d].as_const() == Some(1) {
            continue;
        }
        let mergeable = !dims.is_empty()
            && strides.iter().zip(&st).all(|(s, cur)| cur.last().is_some_and(|c| *c == &s[d] * &out[d]));
        if mergeable {
            let last = dims.last_mut().expect("nonempty");
            *last = &*last * &out[d];
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                *cur.last_mut().expect("nonempty") = s[d].clone();
            }
        } else {
            dims.push(out[d].clone());
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                cur.push(s[d].clone());
            }
        }
    }
    (dims, st)
}

/// `sum idx[k] * strides[k]` (+ `base`).
pub fn linear(idx: &[Expr], strides: &[Expr], base: Expr) -> Expr {
    idx.iter().zip(strides).fold(base, |acc, (i, s)| &acc + &(i * s))
}
