//! Data movement for any dtype: elements move as integers of their width.
use crate::shape::{coalesce, contiguous_strides, linear};
use crate::{LowerError, Node};
use dlc_ir::ops::{Pad, PadMode, ScatterElements, ScatterND, ScatterReduction, Slice, Transpose};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

/// The integer type elements of this byte width move as.
fn elem_of(n: &Node, bytes: usize) -> Result<Elem, LowerError> {
    Elem::int_of_bytes(bytes).ok_or_else(|| n.error(format!("elements of {bytes} bytes")))
}

/// One element per iteration of an `each` nest over `dims`: `y[dst] = x[src]`.
fn copy_nest(
    name: &str,
    elem: Elem,
    dims: &[Expr],
    src: impl Fn(&[Expr]) -> Expr,
    dst: impl Fn(&[Expr]) -> Expr,
) -> Kernel {
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let align = elem.bytes();
    b.nest(dims, LoopKind::Each, |b, idx| {
        let v = b.load(Ty::scalar(elem), 0, src(idx), align);
        b.store(1, dst(idx), v, align);
    });
    b.finish()
}

/// Transpose: a nest over the result's dims (coalesced with the permuted input strides),
/// reading input dim `perm[d]` while walking result dim `d`. Symbolic dims are allowed.
/// With `tiles` (CPU targets) a batch of 2-D transposes, the last two result dims
/// swapped, moves in 8 x 8 tiles instead ([`transpose_tiles`]).
pub fn transpose(name: &str, n: &Node, op: &Transpose, tiles: bool) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let out = Node::dims(&n.outputs[0]);
    let perm = op.resolved_perm(x.len());
    if perm.len() != x.len() || perm.iter().any(|&p| p >= x.len()) {
        return Err(n.error("permutation does not match the rank"));
    }
    let in_strides = contiguous_strides(&x);
    let src: Vec<Expr> = perm.iter().map(|&p| in_strides[p].clone()).collect();
    let dst = contiguous_strides(&out);
    let (dims, st) = coalesce(&out, &[src, dst]);
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    if tiles {
        if let Some(k) = transpose_tiles(name, elem, &dims, &st) {
            return Ok(k);
        }
    }
    Ok(copy_nest(name, elem, &dims, |i| linear(i, &st[0], Expr::c(0)), |i| linear(i, &st[1], Expr::c(0))))
}

/// Tile side of [`transpose_tiles`].
const TILE: i64 = 8;

/// A batch of 2-D transposes, `y[.., i, j] = x[.. + i + j * s]` (the rows' input stride
/// 1, the result contiguous), in 8 x 8 tiles: eight 8-element rows of the input loaded
/// whole, transposed in registers by three rounds of shuffles, stored as eight rows of
/// the result; the columns past the last whole tile and a last strip of fewer than 8
/// rows element by element. An `each` nest over the batch and the strips of 8 rows.
/// (The element-by-element nest reads one input element per store at a stride, which
/// LLVM leaves scalar: ConvInteger's [pixels, channels] to NCHW transposes were a fifth
/// of a dynamically quantized CNN's time.) `None` when the dims are not of that form or
/// a side is a constant below 8.
fn transpose_tiles(name: &str, elem: Elem, dims: &[Expr], st: &[Vec<Expr>]) -> Option<Kernel> {
    let k = dims.len();
    let (src, dst) = (&st[0], &st[1]);
    if k < 2 || src[k - 2].as_const() != Some(1) || dst[k - 1].as_const() != Some(1) {
        return None;
    }
    let (rows, cols) = (&dims[k - 2], &dims[k - 1]);
    if [rows, cols].iter().any(|d| d.as_const().is_some_and(|v| v < TILE)) {
        return None;
    }
    let c = Expr::c;
    let (sc, dr) = (&src[k - 1], &dst[k - 2]);
    let (vt, st1, align) = (Ty::vec(elem, TILE as u32), Ty::scalar(elem), elem.bytes());
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let mut outer = dims[..k - 2].to_vec();
    outer.push((rows + &c(TILE - 1)).floor_div(&c(TILE)));
    b.nest(&outer, LoopKind::Each, |b, idx| {
        let (batch, strip) = idx.split_at(k - 2);
        let (sbase, dbase) = (linear(batch, &src[..k - 2], c(0)), linear(batch, &dst[..k - 2], c(0)));
        let i0 = &strip[0] * &c(TILE);
        let at_src = move |i: &Expr, j: &Expr| &(&sbase + i) + &(j * sc);
        let at_dst = move |i: &Expr, j: &Expr| &(&dbase + &(i * dr)) + j;
        let copy = |b: &mut KernelBuilder, i: &Expr, j: &Expr| {
            let v = b.load(st1, 0, at_src(i, j), align);
            b.store(1, at_dst(i, j), v, align);
        };
        let whole = crate::in_bounds_expr(b, &i0 + &c(TILE - 1), rows);
        b.if_(
            whole,
            |b| {
                let tiles = cols.floor_div(&c(TILE));
                b.for_(c(0), tiles.clone(), LoopKind::Serial, |b, tj| {
                    let j0 = &tj * &c(TILE);
                    let v: Vec<ValId> = (0..TILE).map(|t| b.load(vt, 0, at_src(&i0, &(&j0 + &c(t))), align)).collect();
                    for (s, w) in transpose8(b, &v).into_iter().enumerate() {
                        b.store(1, at_dst(&(&i0 + &c(s as i64)), &j0), w, align);
                    }
                });
                b.for_(&tiles * &c(TILE), cols.clone(), LoopKind::Serial, |b, j| {
                    for s in 0..TILE {
                        copy(b, &(&i0 + &c(s)), &j);
                    }
                });
            },
            |b| {
                b.for_(i0.clone(), rows.clone(), LoopKind::Serial, |b, i| {
                    b.for_(c(0), cols.clone(), LoopKind::Serial, |b, j| copy(b, &i, &j));
                });
            },
        );
    });
    Some(b.finish())
}

/// The transpose of an 8 x 8 matrix held as eight 8-lane rows `v`: pairs of rows
/// interleaved by element, then by pairs of elements, then by halves (the masks of
/// x86's unpack and 128-bit permutes, one instruction each).
fn transpose8(b: &mut KernelBuilder, v: &[ValId]) -> Vec<ValId> {
    let sh = |b: &mut KernelBuilder, x: ValId, y: ValId, m: [u32; 8]| b.let_(Inst::Shuffle(x, y, m.to_vec()));
    // Rows 2p, 2p + 1: [a0 b0 a1 b1 a4 b4 a5 b5] and [a2 b2 a3 b3 a6 b6 a7 b7].
    let (lo, hi): (Vec<ValId>, Vec<ValId>) = (0..4)
        .map(|p| {
            let (x, y) = (v[2 * p], v[2 * p + 1]);
            (sh(b, x, y, [0, 8, 1, 9, 4, 12, 5, 13]), sh(b, x, y, [2, 10, 3, 11, 6, 14, 7, 15]))
        })
        .unzip();
    // Rows 4q..4q+4: u[q][c] holds column c of them, then column c + 4.
    let u: Vec<Vec<ValId>> = (0..2)
        .map(|q| {
            let (l0, l1, h0, h1) = (lo[2 * q], lo[2 * q + 1], hi[2 * q], hi[2 * q + 1]);
            let (even, odd) = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]);
            vec![sh(b, l0, l1, even), sh(b, l0, l1, odd), sh(b, h0, h1, even), sh(b, h0, h1, odd)]
        })
        .collect();
    let mut w = vec![u[0][0]; 8];
    for col in 0..4 {
        w[col] = sh(b, u[0][col], u[1][col], [0, 1, 2, 3, 8, 9, 10, 11]);
        w[col + 4] = sh(b, u[0][col], u[1][col], [4, 5, 6, 7, 12, 13, 14, 15]);
    }
    w
}

/// Slice with constant parameters: a nest over the result reading
/// `input[start + i * step]` per dim (steps may be negative). Needs fixed dims.
pub fn slice(name: &str, n: &Node, op: &Slice) -> Result<Kernel, LowerError> {
    let r = op.resolve_dims(&n.inputs[0].shape.0).map_err(|m| n.error(m))?;
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    let out: Vec<Expr> = r.iter().map(|t| t.2.expr()).collect();
    if r.iter().any(|t| t.2.fixed() == Some(0)) {
        return Ok(KernelBuilder::new(name, &[Access::Read, Access::Write]).finish());
    }
    let xs = contiguous_strides(&Node::dims(&n.inputs[0]));
    let base = r.iter().zip(&xs).fold(Expr::c(0), |a, ((s, _, _), st)| &a + &st.scale(*s));
    let steps: Vec<Expr> = r.iter().zip(&xs).map(|((_, step, _), st)| st.scale(*step)).collect();
    let ys = contiguous_strides(&out);
    Ok(copy_nest(name, elem, &out, |i| linear(i, &steps, base.clone()), |i| linear(i, &ys, Expr::c(0))))
}

/// Strided: the window `starts[i] + o * steps[i]`, `o < counts[i]`, of every axis
/// (expressions over symbols a Bind computed at run time).
pub fn strided(name: &str, n: &Node, op: &dlc_ir::ops::Strided) -> Result<Kernel, LowerError> {
    let [counts, starts, steps] = op.exprs().ok_or_else(|| n.error("counts, starts and steps must be expressions"))?;
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    let xs = contiguous_strides(&Node::dims(&n.inputs[0]));
    let base = starts.iter().zip(&xs).fold(Expr::c(0), |a, (s, st)| &a + &(s * st));
    let steps: Vec<Expr> = steps.iter().zip(&xs).map(|(step, st)| step * st).collect();
    let ys = contiguous_strides(&counts);
    Ok(copy_nest(name, elem, &counts, |i| linear(i, &steps, base.clone()), |i| linear(i, &ys, Expr::c(0))))
}

/// Element `j` of an i32/i64 index tensor `param` as an `i64`, as it is.
pub fn load_raw_index(b: &mut KernelBuilder, param: u32, dtype: DType, j: Expr) -> ValId {
    if dtype == DType::I32 {
        let r = b.load(Ty::scalar(Elem::I32), param, j, 4);
        b.let_(Inst::Cast(CastOp::Sext, r, Ty::scalar(Elem::I64)))
    } else {
        b.load(Ty::scalar(Elem::I64), param, j, 8)
    }
}

/// Loads element `j` of an i32/i64 index tensor `param` as an `i64`, wrapped when
/// negative and clamped into `0..extent`, so bad indices never address outside the data.
pub fn load_index(b: &mut KernelBuilder, param: u32, dtype: DType, j: Expr, extent: i64) -> ValId {
    let raw = load_raw_index(b, param, dtype, j);
    let (zero, ext) = (b.i64(0), b.i64(extent));
    let neg = b.cmp(CmpOp::Slt, raw, zero);
    let wrapped = b.bin(BinOp::Add, raw, ext);
    let k = b.select(neg, wrapped, raw);
    let neg = b.cmp(CmpOp::Slt, k, zero);
    let k = b.select(neg, zero, k);
    let past = b.cmp(CmpOp::Sge, k, ext);
    let last = b.i64(extent.saturating_sub(1).max(0));
    b.select(past, last, k)
}

/// Trilu: copies the kept triangle (`col - row >= k` for the upper one, `<= k` for the
/// lower one, `k` from the optional second operand) and writes zeros elsewhere.
pub fn trilu(name: &str, n: &Node, upper: bool) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let r = x.len();
    if r < 2 {
        return Err(n.error("needs at least 2 dims"));
    }
    let (rows, cols) = (x[r - 2].clone(), x[r - 1].clone());
    let batch = x[..r - 2].iter().fold(Expr::c(1), |a, d| &a * d);
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    let has_k = n.inputs.len() == 2;
    let params: &[Access] =
        if has_k { &[Access::Read, Access::Read, Access::Write] } else { &[Access::Read, Access::Write] };
    let py = params.len() as u32 - 1;
    let mut b = KernelBuilder::new(name, params);
    b.nest(&[batch, rows.clone(), cols.clone()], LoopKind::Each, |b, idx| {
        let at = &(&(&idx[0] * &rows) * &cols) + &(&(&idx[1] * &cols) + &idx[2]);
        let k = if has_k { b.load(Ty::scalar(Elem::I64), 1, Expr::c(0), 8) } else { b.i64(0) };
        let diff = b.index(&idx[2] - &idx[1]);
        let keep = b.cmp(if upper { CmpOp::Sge } else { CmpOp::Sle }, diff, k);
        let v = b.load(Ty::scalar(elem), 0, at.clone(), elem.bytes());
        let zero = b.let_(Inst::Const { ty: Ty::scalar(elem), lit: Lit::Int(0) });
        let y = b.select(keep, v, zero);
        b.store(py, at, y, elem.bytes());
    });
    Ok(b.finish())
}

/// GatherElements: every result position reads the data element its index names along
/// the axis (wrapped when negative, clamped into range). Extents are expressions: run-time
/// dims anywhere, the gathered axis's too (a key/value cache of a run-time length).
pub fn gather_elements(name: &str, n: &Node, axis: i64) -> Result<Kernel, LowerError> {
    let d = Node::dims(&n.inputs[0]);
    let out = Node::dims(&n.inputs[1]);
    let a = dlc_ir::ops::normalize_axis(axis, d.len()).ok_or_else(|| n.error("axis out of range"))?;
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    if out.iter().any(|e| e.as_const() == Some(0)) || d[a].as_const() == Some(0) {
        return Ok(b.finish());
    }
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    let (ds, os) = (contiguous_strides(&d), contiguous_strides(&out));
    let (idt, extent) = (n.inputs[1].dtype, d[a].clone());
    b.nest(&out, LoopKind::Each, |b, idx| {
        let o = linear(idx, &os, Expr::c(0));
        let k = match extent.as_const() {
            Some(e) => load_index(b, 1, idt, o.clone(), e),
            None => load_index_expr(b, 1, idt, o.clone(), &extent),
        };
        let mut at = idx.to_vec();
        at[a] = Expr::val(k);
        let v = b.load(Ty::scalar(elem), 0, linear(&at, &ds, Expr::c(0)), elem.bytes());
        b.store(2, o, v, elem.bytes());
    });
    Ok(b.finish())
}

/// The element type a padded tensor moves as, and the fill value's literal in it: f32,
/// f64 and f16 as floats, every other dtype as an integer of its width holding the
/// fill's encoding.
fn pad_fill(n: &Node, value: f64) -> Result<(Elem, Lit), LowerError> {
    let dt = n.outputs[0].dtype;
    Ok(match dt {
        DType::F32 => (Elem::F32, Lit::Float(value)),
        DType::F64 => (Elem::F64, Lit::Float(value)),
        DType::F16 => (Elem::F16, Lit::Float(value)),
        DType::BF16 => (Elem::I16, Lit::Int(((value as f32).to_bits() >> 16) as i64)),
        DType::F8E8M0 => (Elem::I8, Lit::Int(dlc_ir::minifloat::e8m0_encode(value as f32, true) as i64)),
        d if d.minifloat().is_some() => {
            let f = d.minifloat().expect("checked");
            (Elem::I8, Lit::Int(f.encode(value as f32, true) as i64))
        }
        d => (elem_of(n, d.size())?, Lit::Int(value as i64)),
    })
}

/// Pad: each result position maps per dim to a source index (or, in constant mode, to
/// the fill value when outside the operand).
pub fn pad(name: &str, n: &Node, op: &Pad) -> Result<Kernel, LowerError> {
    // Extents are expressions: run-time dims pad like known ones.
    let x = Node::dims(&n.inputs[0]);
    let out = Node::dims(&n.outputs[0]);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    if out.iter().any(|d| d.as_const() == Some(0)) {
        return Ok(b.finish());
    }
    let pads = op.amounts().ok_or_else(|| n.error("pads are not expressions"))?;
    if pads.len() < x.len() {
        return Err(n.error("fewer pads than dims"));
    }
    let (elem, fill) = pad_fill(n, op.value)?;
    let (xs, os) = (contiguous_strides(&x), contiguous_strides(&out));
    b.nest(&out, LoopKind::Each, |b, idx| {
        let mut src = Expr::c(0);
        let mut inside = None;
        for d in 0..x.len() {
            let i = b.index(&idx[d] - &pads[d]);
            let zero = b.i64(0);
            let ext = crate::ival(b, &x[d]);
            // At least 1, so no remainder below divides by zero (an empty dim has no
            // output positions to read for, or is refused by the shape rule).
            let one = b.i64(1);
            let ext1 = b.bin(BinOp::SMax, ext, one);
            let j = match op.mode {
                PadMode::Constant => {
                    let ok = b.cmp(CmpOp::Ult, i, ext);
                    inside = Some(match inside {
                        None => ok,
                        Some(prev) => b.bin(BinOp::And, prev, ok),
                    });
                    b.select(ok, i, zero)
                }
                PadMode::Edge => {
                    let neg = b.cmp(CmpOp::Slt, i, zero);
                    let lo = b.select(neg, zero, i);
                    let past = b.cmp(CmpOp::Sge, lo, ext1);
                    let last = b.bin(BinOp::Sub, ext1, one);
                    b.select(past, last, lo)
                }
                PadMode::Wrap => {
                    let m = b.bin(BinOp::SRem, i, ext1);
                    let neg = b.cmp(CmpOp::Slt, m, zero);
                    let up = b.bin(BinOp::Add, m, ext1);
                    b.select(neg, up, m)
                }
                PadMode::Reflect if x[d].as_const() == Some(1) => zero,
                PadMode::Reflect => {
                    // Period 2 (ext - 1), at least 1 (an extent of 1 reflects to 0).
                    let e1 = b.bin(BinOp::Sub, ext1, one);
                    let two = b.i64(2);
                    let p = b.bin(BinOp::Mul, e1, two);
                    let p = b.bin(BinOp::SMax, p, one);
                    let m = b.bin(BinOp::SRem, i, p);
                    let neg = b.cmp(CmpOp::Slt, m, zero);
                    let up = b.bin(BinOp::Add, m, p);
                    let m = b.select(neg, up, m);
                    let low = b.cmp(CmpOp::Slt, m, ext1);
                    let back = b.bin(BinOp::Sub, p, m);
                    b.select(low, m, back)
                }
            };
            src = &src + &(&Expr::val(j) * &xs[d]);
        }
        let v = b.load(Ty::scalar(elem), 0, src, elem.bytes());
        let v = match inside {
            Some(c) => {
                let f = b.let_(Inst::Const { ty: Ty::scalar(elem), lit: fill });
                b.select(c, v, f)
            }
            None => v,
        };
        b.store(1, linear(idx, &os, Expr::c(0)), v, elem.bytes());
    });
    Ok(b.finish())
}

/// Reshape, Flatten, Identity (when not a view): the bytes are unchanged.
pub fn copy(name: &str, n: &Node) -> Result<Kernel, LowerError> {
    let bytes = Node::dims(&n.outputs[0]).iter().fold(Expr::c(n.outputs[0].dtype.size() as i64), |a, d| &a * d);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    b.stmt(Stmt::Memcpy { dst: 1, dst_off: Expr::c(0), src: 0, src_off: Expr::c(0), bytes });
    Ok(b.finish())
}

/// Concat: for every outer index, each operand's block along the axis in turn.
/// Symbolic dims are allowed.
pub fn concat(name: &str, n: &Node, axis: i64) -> Result<Kernel, LowerError> {
    let out = Node::dims(&n.outputs[0]);
    let a = dlc_ir::ops::normalize_axis(axis, out.len()).ok_or_else(|| n.error("axis out of range"))?;
    let es = Expr::c(n.outputs[0].dtype.size() as i64);
    let prod = |d: &[Expr]| d.iter().fold(Expr::c(1), |p, x| &p * x);
    let outer = prod(&out[..a]);
    let out_block = &prod(&out[a..]) * &es;
    let mut params = vec![Access::Read; n.inputs.len()];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    let mut offset = Expr::c(0);
    for (i, t) in n.inputs.iter().enumerate() {
        let block = &prod(&Node::dims(t)[a..]) * &es;
        if block.as_const() != Some(0) {
            let (ob, off, blk) = (out_block.clone(), offset.clone(), block.clone());
            b.for_(Expr::c(0), outer.clone(), LoopKind::Serial, |b, o| {
                b.stmt(Stmt::Memcpy {
                    dst: n.inputs.len() as u32,
                    dst_off: &(&o * &ob) + &off,
                    src: i as u32,
                    src_off: &o * &blk,
                    bytes: blk.clone(),
                });
            });
        }
        offset = &offset + &block;
    }
    Ok(b.finish())
}

/// Gather: one block copy per (outer index, gathered index); indices are wrapped when
/// negative and clamped into range.
pub fn gather(name: &str, n: &Node, axis: i64) -> Result<Kernel, LowerError> {
    // Extents are expressions (run-time dims before or after the axis, or in the
    // indices); the gathered axis's extent too.
    let d = Node::dims(&n.inputs[0]);
    let a = dlc_ir::ops::normalize_axis(axis, d.len()).ok_or_else(|| n.error("axis out of range"))?;
    let es = n.inputs[0].dtype.size() as i64;
    let prod = |v: &[Expr]| v.iter().fold(Expr::c(1), |p, e| &p * e);
    let outer = prod(&d[..a]);
    let count = prod(&Node::dims(&n.inputs[1]));
    let block = &prod(&d[a + 1..]) * &Expr::c(es);
    let extent = d[a].clone();
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    if extent.as_const() == Some(0) || block.as_const() == Some(0) {
        return Ok(b.finish());
    }
    let idt = n.inputs[1].dtype;
    let Some(ext) = extent.as_const() else {
        // A run-time extent along the axis: indices wrapped and clamped against it.
        b.nest(&[outer, count.clone()], LoopKind::Serial, |b, oj| {
            let k = load_index_expr(b, 1, idt, oj[1].clone(), &extent);
            let src = &(&(&oj[0] * &extent) + &Expr::val(k)) * &block;
            let dst = &(&(&oj[0] * &count) + &oj[1]) * &block;
            b.stmt(Stmt::Memcpy { dst: 2, dst_off: dst, src: 0, src_off: src, bytes: block.clone() });
        });
        return Ok(b.finish());
    };
    b.nest(&[outer, count.clone()], LoopKind::Serial, |b, oj| {
        let k = load_index(b, 1, idt, oj[1].clone(), ext);
        let src = &(&(&oj[0] * &Expr::c(ext)) + &Expr::val(k)) * &block;
        let dst = &(&(&oj[0] * &count) + &oj[1]) * &block;
        b.stmt(Stmt::Memcpy { dst: 2, dst_off: dst, src: 0, src_off: src, bytes: block.clone() });
    });
    Ok(b.finish())
}

/// [`load_index`] against an extent that may be a run-time dim (at least 1 is assumed
/// for the clamp; an empty axis has nothing to gather).
fn load_index_expr(b: &mut KernelBuilder, param: u32, dtype: DType, j: Expr, extent: &Expr) -> ValId {
    let raw = load_raw_index(b, param, dtype, j);
    let zero = b.i64(0);
    let ext = crate::ival(b, extent);
    let neg = b.cmp(CmpOp::Slt, raw, zero);
    let wrapped = b.bin(BinOp::Add, raw, ext);
    let k = b.select(neg, wrapped, raw);
    let neg = b.cmp(CmpOp::Slt, k, zero);
    let k = b.select(neg, zero, k);
    let one = b.i64(1);
    let last = b.bin(BinOp::Sub, ext, one);
    let last = b.bin(BinOp::SMax, last, zero);
    let past = b.cmp(CmpOp::Sgt, k, last);
    b.select(past, last, k)
}

/// Combines the element at `at` of the result (`param`) with an update by `r`: the
/// arithmetic reductions are f32 only; `max` keeps the old value unless it is below the
/// update (a NaN already there stays), `min` takes the update when the old value is
/// above it.
fn combine(
    b: &mut KernelBuilder,
    n: &Node,
    r: ScatterReduction,
    param: u32,
    at: Expr,
    upd: ValId,
    elem: Elem,
) -> Result<(), LowerError> {
    let v = match r {
        ScatterReduction::None => upd,
        _ if n.outputs[0].dtype != DType::F32 => {
            return Err(n.error(format!("reduction {r:?} on {} is not supported yet", n.outputs[0].dtype)));
        }
        _ => {
            let old = b.load(Ty::scalar(elem), param, at.clone(), elem.bytes());
            match r {
                ScatterReduction::Add => b.bin(BinOp::FAdd, old, upd),
                ScatterReduction::Mul => b.bin(BinOp::FMul, old, upd),
                ScatterReduction::Max => {
                    let lt = b.cmp(CmpOp::FOlt, old, upd);
                    b.select(lt, upd, old)
                }
                _ => {
                    let gt = b.cmp(CmpOp::FOgt, old, upd);
                    b.select(gt, upd, old)
                }
            }
        }
    };
    b.store(param, at, v, elem.bytes());
    Ok(())
}

/// A scatter kernel's start: the result is a copy of the data (parameters: data,
/// indices, updates, result).
fn scatter_start(name: &str, n: &Node) -> Result<(KernelBuilder, Elem), LowerError> {
    let dt = n.outputs[0].dtype;
    let elem = crate::dtype::storage(dt);
    let bytes = Node::dims(&n.outputs[0]).iter().fold(Expr::c(dt.size() as i64), |a, d| &a * d);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Read, Access::Write]);
    b.stmt(Stmt::Memcpy { dst: 3, dst_off: Expr::c(0), src: 0, src_off: Expr::c(0), bytes });
    Ok((b, elem))
}

/// The first error a builder closure kept (builder closures return nothing).
fn first(slot: &mut Option<LowerError>, f: impl FnOnce() -> Result<(), LowerError>) {
    if slot.is_none() {
        if let Err(e) = f() {
            *slot = Some(e);
        }
    }
}

/// ScatterElements: in index order (later updates win), each update goes to the result
/// position its index names along the axis (wrapped when negative, clamped into range).
pub fn scatter_elements(name: &str, n: &Node, op: &ScatterElements) -> Result<Kernel, LowerError> {
    // Extents may be run-time dims: the data's (a MaxUnpool into a computed shape), the
    // indices' and updates' (torchvision's RoI pooling scatters the boxes of each level,
    // counted by a NonZero, into the rows of all boxes).
    let d = Node::dims(&n.inputs[0]);
    let id = Node::dims(&n.inputs[1]);
    let a = dlc_ir::ops::normalize_axis(op.axis, d.len()).ok_or_else(|| n.error("axis out of range"))?;
    let (mut b, elem) = scatter_start(name, n)?;
    if id.iter().any(|e| e.as_const() == Some(0)) || d[a].as_const() == Some(0) {
        return Ok(b.finish());
    }
    let (ds, is) = (contiguous_strides(&d), contiguous_strides(&id));
    let (idt, extent) = (n.inputs[1].dtype, d[a].clone());
    let mut err = None;
    b.nest(&id, LoopKind::Serial, |b, idx| {
        first(&mut err, || {
            let j = linear(idx, &is, Expr::c(0));
            let k = load_index_expr(b, 1, idt, j.clone(), &extent);
            let mut at = idx.to_vec();
            at[a] = Expr::val(k);
            let u = b.load(Ty::scalar(elem), 2, j, elem.bytes());
            combine(b, n, op.reduction, 3, linear(&at, &ds, Expr::c(0)), u, elem)
        })
    });
    match err {
        Some(e) => Err(e),
        None => Ok(b.finish()),
    }
}

/// ScatterND: each index tuple (the last dim of the indices) names a slice of the
/// result, which its updates replace or combine into, in order.
pub fn scatter_nd(name: &str, n: &Node, op: &ScatterND) -> Result<Kernel, LowerError> {
    // Extents may be run-time dims (the index tuples' length is known).
    let d = Node::dims(&n.inputs[0]);
    let id = Node::dims(&n.inputs[1]);
    let Some(k) = id.last().and_then(Expr::as_const) else {
        return Err(n.error("the index tuples' length must be known"));
    };
    let k = k as usize;
    if k > d.len() {
        return Err(n.error("index tuples longer than the data's rank"));
    }
    let prod = |v: &[Expr]| v.iter().fold(Expr::c(1), |a, x| &a * x);
    let tuples = prod(&id[..id.len() - 1]);
    let slice = prod(&d[k..]);
    let (mut b, elem) = scatter_start(name, n)?;
    if tuples.as_const() == Some(0) || slice.as_const() == Some(0) || d[..k].iter().any(|e| e.as_const() == Some(0)) {
        return Ok(b.finish());
    }
    let ds = contiguous_strides(&d);
    let idt = n.inputs[1].dtype;
    let mut err = None;
    b.nest(&[tuples, slice.clone()], LoopKind::Serial, |b, ts| {
        first(&mut err, || {
            let (t, s) = (&ts[0], &ts[1]);
            let mut base = Expr::c(0);
            for (q, extent) in d[..k].iter().enumerate() {
                let at = &(t * &Expr::c(k as i64)) + &Expr::c(q as i64);
                let c = match extent.as_const() {
                    Some(e) => load_index(b, 1, idt, at, e),
                    // A run-time extent of 0 leaves nothing to scatter into (the clamp's
                    // last index is 0, the copy of no bytes): the loop still reads inside.
                    None => load_index_expr(b, 1, idt, at, extent),
                };
                base = &base + &(&Expr::val(c) * &ds[q]);
            }
            let u = b.load(Ty::scalar(elem), 2, &(t * &slice) + s, elem.bytes());
            combine(b, n, op.reduction, 3, &base + s, u, elem)
        })
    });
    match err {
        Some(e) => Err(e),
        None => Ok(b.finish()),
    }
}

/// NonZero: a serial scan of the operand in row-major order; each nonzero element
/// (NaN included) writes its index along every axis into column `j` of the
/// `[rank, count]` result, `j` counting the nonzero elements so far. `count` (a symbol
/// a Bind computed) is the result's row length.
pub fn nonzero(name: &str, n: &Node, op: &dlc_ir::ops::NonZero) -> Result<Kernel, LowerError> {
    let x = &n.inputs[0];
    let dims = Node::dims(x);
    let xs = contiguous_strides(&dims);
    let count = Expr::sym(op.count.clone());
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let zero = b.i64(0);
    let j = b.local(Ty::scalar(Elem::I64), zero);
    let mut res = Ok(());
    b.nest(&dims, LoopKind::Serial, |b, idx| {
        let at = linear(idx, &xs, Expr::c(0));
        let nz = match x.dtype {
            DType::F32 | DType::F64 | DType::F16 => {
                let e = crate::dtype::storage(x.dtype);
                let v = b.load(Ty::scalar(e), 0, at, e.bytes());
                let z = b.let_(Inst::Const { ty: Ty::scalar(e), lit: dlc_kir::Lit::Float(0.0) });
                b.cmp(CmpOp::FUne, v, z)
            }
            // bf16: any bit but the sign's set.
            DType::BF16 => {
                let v = b.load(Ty::scalar(Elem::I16), 0, at, 2);
                let m = b.let_(Inst::Const { ty: Ty::scalar(Elem::I16), lit: dlc_kir::Lit::Int(0x7fff) });
                let v = b.bin(BinOp::And, v, m);
                let z = b.let_(Inst::Const { ty: Ty::scalar(Elem::I16), lit: dlc_kir::Lit::Int(0) });
                b.cmp(CmpOp::Ne, v, z)
            }
            d if d.is_float() || d.is_storage_only() => {
                res = Err(n.error(format!("NonZero of {d} is not supported yet")));
                return;
            }
            d => {
                let e = crate::dtype::storage(d);
                let v = b.load(Ty::scalar(e), 0, at, e.bytes());
                let z = b.let_(Inst::Const { ty: Ty::scalar(e), lit: dlc_kir::Lit::Int(0) });
                b.cmp(CmpOp::Ne, v, z)
            }
        };
        b.if_(
            nz,
            |b| {
                let col = b.let_(Inst::Get(j));
                for (d, i) in idx.iter().enumerate() {
                    let v = b.index(i.clone());
                    b.store(1, &(&count * &Expr::c(d as i64)) + &Expr::val(col), v, 8);
                }
                let one = b.i64(1);
                let next = b.bin(BinOp::Add, col, one);
                b.stmt(Stmt::Set(j, next));
            },
            |_| {},
        );
    });
    res?;
    Ok(b.finish())
}

/// Compress: a serial scan of the condition (up to the axis's extent); each true entry
/// `i` copies slice `i` of every outer index to slice `j` of the result, `j` counting
/// the true entries so far (the result's axis has `count` slices, a symbol a Bind
/// computed).
pub fn compress(name: &str, n: &Node, op: &dlc_ir::ops::Compress) -> Result<Kernel, LowerError> {
    let dims = Node::dims(&n.inputs[0]);
    let a = dlc_ir::ops::normalize_axis(op.axis, dims.len()).ok_or_else(|| n.error("axis out of range"))?;
    let len = Node::dims(&n.inputs[1]).into_iter().next().ok_or_else(|| n.error("condition length"))?;
    let es = Expr::c(n.inputs[0].dtype.size() as i64);
    let prod = |d: &[Expr]| d.iter().fold(Expr::c(1), |p, x| &p * x);
    let (outer, inner) = (prod(&dims[..a]), prod(&dims[a + 1..]));
    let block = &inner * &es;
    let count = Expr::sym(op.count.clone());
    // Entries past the axis's extent are ignored.
    let upto = len.min_with(&dims[a]);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    let zero = b.i64(0);
    let j = b.local(Ty::scalar(Elem::I64), zero);
    b.for_(Expr::c(0), upto, LoopKind::Serial, |b, i| {
        let flag = b.load(Ty::scalar(Elem::I8), 1, i.clone(), 1);
        let z = b.let_(Inst::Const { ty: Ty::scalar(Elem::I8), lit: Lit::Int(0) });
        let taken = b.cmp(CmpOp::Ne, flag, z);
        b.if_(
            taken,
            |b| {
                let col = b.let_(Inst::Get(j));
                let (outer, dim, count, block) = (outer.clone(), dims[a].clone(), count.clone(), block.clone());
                b.for_(Expr::c(0), outer, LoopKind::Serial, |b, o| {
                    b.stmt(Stmt::Memcpy {
                        dst: 2,
                        dst_off: &(&(&o * &count) + &Expr::val(col)) * &block,
                        src: 0,
                        src_off: &(&(&o * &dim) + &i) * &block,
                        bytes: block.clone(),
                    });
                });
                let one = b.i64(1);
                let next = b.bin(BinOp::Add, col, one);
                b.stmt(Stmt::Set(j, next));
            },
            |_| {},
        );
    });
    Ok(b.finish())
}

/// Iota: `start + i * delta` as the result's dtype, for `i` below the (possibly run-time)
/// length; one `each` loop.
pub fn iota(name: &str, n: &Node, op: &dlc_ir::ops::Iota) -> Result<Kernel, LowerError> {
    let len = Node::dims(&n.outputs[0]).remove(0);
    let dt = n.outputs[0].dtype;
    let mut b = KernelBuilder::new(name, &[Access::Write]);
    b.for_(Expr::c(0), len, LoopKind::Each, |b, i| {
        let v = b.index(&i.scale(op.delta) + &Expr::c(op.start));
        crate::dtype::store_as(b, 0, i, v, DType::I64, dt);
    });
    Ok(b.finish())
}
