//! The CUDA kernels ([`dlc_lower::cuda`]) run through the kir interpreter (block kernels
//! block by block, `threads` regions thread by thread, `blockreduce` in the warp
//! butterfly order) and compared with dlc-interp: every family the GPU has its own
//! kernel for, in the form it must take (a block kernel, or one element per thread).
//! Data movement must be exact; arithmetic within the ONNX checks' tolerances.
use dlc_ir::ops::{
    Activation, Attention, AutoPad, Concat, Conv, Gather, Gemm, GlobalAveragePool, LayerNormalization, MatMul,
    ReduceL1, ReduceL2, ReduceMax, ReduceMean, ReduceMin, ReduceSum, ReduceSumSquare, Reshape, Softmax, SoftmaxMode,
};
use dlc_ir::{DType, Op, TensorData, TensorType};
use dlc_kir::interp::run_kernel;
use std::collections::BTreeMap;
use std::sync::Arc;

mod common;
use common::{floats, i64s};

/// What a CUDA kernel must look like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    /// A block kernel of this many threads.
    Block(u32),
    /// A per-element kernel (an `each` nest).
    Each,
}

fn f32t(d: &[u64]) -> TensorType {
    TensorType::fixed(DType::F32, d)
}

/// Lowers `op` on `xs` for CUDA, checks the kernel's form, runs it and compares every
/// result with dlc-interp's.
fn check(op: Op, xs: &[TensorData], form: Form) {
    let tys: Vec<TensorType> = xs.iter().map(|x| x.ty().clone()).collect();
    let out = op.infer("n", &tys).unwrap();
    let want = dlc_interp::eval(&op, xs, &out).unwrap();
    check_against(op, xs, form, &want)
}

/// [`check`] against results `want`.
fn check_against(op: Op, xs: &[TensorData], form: Form, want: &[TensorData]) {
    let tys: Vec<TensorType> = xs.iter().map(|x| x.ty().clone()).collect();
    let out = op.infer("n", &tys).unwrap();
    let node = dlc_lower::Node { name: "n", op: &op, inputs: &tys, outputs: &out, consts: &[], operand_max: &[] };
    let k = dlc_lower::cuda::lower("k", &node, &dlc_lower::Target::with_lanes(1)).expect("a kernel").unwrap();
    let text = dlc_kir::print::kernel(&k);
    match form {
        Form::Block(t) => assert_eq!(k.block.as_ref().map(|b| b.threads), Some(t), "{op:?}\n{text}"),
        Form::Each => {
            assert!(k.block.is_none() && text.contains(" each {"), "{op:?}\n{text}")
        }
    }
    assert_eq!(want.len(), out.len());
    let mut bufs: Vec<Vec<u8>> = xs.iter().map(|x| x.bytes().to_vec()).collect();
    bufs.extend(out.iter().map(|t| vec![0xAA; t.size_bytes().unwrap() as usize]));
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap_or_else(|e| panic!("{op:?}: {e}\n{text}"));
    for (r, (got, w)) in bufs[xs.len()..].iter().zip(want).enumerate() {
        if out[r].dtype != DType::F32 || op.kind() == dlc_ir::OpKind::Movement {
            assert_eq!(got, w.bytes(), "{op:?} result {r}");
            continue;
        }
        let f = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        for (i, (g, w)) in f(got).iter().zip(f(w.bytes())).enumerate() {
            let same = g == &w || (g.is_nan() && w.is_nan());
            assert!(same || (g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{op:?} result {r}[{i}]: {g} vs {w}");
        }
    }
}

fn data(tys: &[TensorType], seed: u64) -> Vec<TensorData> {
    tys.iter().enumerate().map(|(i, t)| floats(t, seed + i as u64)).collect()
}

#[test]
fn tiled_gemm_for_matmul_and_gemm_with_partial_tiles_and_epilogues() {
    // Thin (m <= 16: 16x64 tiles, 256 threads) and square (64x64 tiles of 4x4 per
    // thread, 256 threads) products, partial tiles in every dim, k not a multiple of
    // the 16-deep slices, batch broadcast, 1-D operands, bias with an activation.
    let cases: Vec<(Op, Vec<TensorType>)> = vec![
        (MatMul { act: Activation::None }.into(), vec![f32t(&[2, 1, 3, 4]), f32t(&[3, 4, 5])]),
        (MatMul { act: Activation::None }.into(), vec![f32t(&[70, 33]), f32t(&[33, 130])]),
        (MatMul { act: Activation::None }.into(), vec![f32t(&[4]), f32t(&[2, 4, 3])]),
        (MatMul { act: Activation::Relu }.into(), vec![f32t(&[17, 20]), f32t(&[20, 6]), f32t(&[6])]),
    ];
    for (op, tys) in cases {
        check(op, &data(&tys, 10), Form::Block(256));
    }
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        for c_dims in [None, Some(vec![19u64, 67]), Some(vec![67]), Some(vec![1])] {
            let op: Op = Gemm { alpha: 0.5, beta: 2.0, trans_a, trans_b, act: Activation::Gelu }.into();
            let a = if trans_a { f32t(&[18, 19]) } else { f32t(&[19, 18]) };
            let b = if trans_b { f32t(&[67, 18]) } else { f32t(&[18, 67]) };
            let mut tys = vec![a, b];
            tys.extend(c_dims.map(|c| f32t(&c)));
            check(op, &data(&tys, 20), Form::Block(256));
        }
    }
}

#[test]
fn convolutions_as_implicit_gemm_and_depthwise_per_element() {
    let conv = |group: i64, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, act: Activation| -> Op {
        Conv { kernel_shape: vec![], strides, pads, dilations, group, auto_pad: AutoPad::NotSet, act }.into()
    };
    // (op, x dims, w dims, bias, residual, form): one output channel per group is
    // depthwise, one thread per output.
    type Case = (Op, [u64; 4], [u64; 4], bool, bool, Form);
    let cases: Vec<Case> = vec![
        (
            conv(1, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::None),
            [1, 3, 6, 5],
            [4, 3, 3, 3],
            false,
            false,
            Form::Block(256),
        ),
        (
            conv(2, vec![2, 1], vec![0, 1, 2, 0], vec![2, 1], Activation::Relu),
            [2, 4, 9, 7],
            [6, 2, 3, 2],
            true,
            false,
            Form::Block(256),
        ),
        (
            conv(1, vec![1, 1], vec![1, 1, 1, 1], vec![1, 1], Activation::None),
            [1, 8, 12, 12],
            [40, 8, 3, 3],
            true,
            true,
            Form::Block(256),
        ),
        (
            conv(4, vec![1, 2], vec![1, 1, 1, 1], vec![1, 1], Activation::Gelu),
            [1, 4, 5, 6],
            [4, 1, 3, 3],
            true,
            true,
            Form::Each,
        ),
        (
            conv(3, vec![2, 2], vec![2, 2, 2, 2], vec![2, 2], Activation::Clip { min: -0.5, max: 0.5 }),
            [2, 3, 11, 10],
            [3, 1, 2, 3],
            true,
            false,
            Form::Each,
        ),
    ];
    for (op, xd, wd, bias, res, form) in cases {
        let mut tys = vec![f32t(&xd), f32t(&wd)];
        if bias {
            tys.push(f32t(&[wd[0]]));
        }
        if res {
            tys.push(op.infer("n", &tys).unwrap()[0].clone());
        }
        check(op, &data(&tys, 30), form);
    }
}

#[test]
fn long_rows_reduce_by_block_and_short_ones_per_output() {
    type Make = fn(Vec<i64>, bool) -> Op;
    let ops: [Make; 7] = [
        |axes, keepdims| ReduceSum { axes, keepdims }.into(),
        |axes, keepdims| ReduceMean { axes, keepdims }.into(),
        |axes, keepdims| ReduceMax { axes, keepdims }.into(),
        |axes, keepdims| ReduceMin { axes, keepdims }.into(),
        |axes, keepdims| ReduceL1 { axes, keepdims }.into(),
        |axes, keepdims| ReduceL2 { axes, keepdims }.into(),
        |axes, keepdims| ReduceSumSquare { axes, keepdims }.into(),
    ];
    for make in ops {
        // Rows of 130 (128 threads), of 20 x 30 = 600 (256 threads), and of 5 (a thread
        // per output).
        check(make(vec![-1], true), &[floats(&f32t(&[3, 130]), 1)], Form::Block(128));
        check(make(vec![1, 2], false), &[floats(&f32t(&[2, 20, 30]), 2)], Form::Block(256));
        check(make(vec![-1], false), &[floats(&f32t(&[4, 5]), 3)], Form::Each);
    }
    check(GlobalAveragePool {}.into(), &[floats(&f32t(&[2, 3, 12, 12]), 4)], Form::Block(128));
    check(GlobalAveragePool {}.into(), &[floats(&f32t(&[2, 3, 4, 4]), 5)], Form::Each);
}

#[test]
fn softmax_and_layernorm_take_a_block_per_row() {
    for mode in [SoftmaxMode::Softmax, SoftmaxMode::LogSoftmax] {
        check(Softmax { axis: -1, mode }.into(), &[floats(&f32t(&[3, 300]), 6)], Form::Block(256));
        // A middle axis: rows strided by the inner extent.
        check(Softmax { axis: 1, mode }.into(), &[floats(&f32t(&[2, 70, 3]), 7)], Form::Block(128));
    }
    let x = f32t(&[3, 4, 70]);
    let sc = f32t(&[70]);
    for rms in [false, true] {
        for (bias, skip, stats) in
            [(false, false, false), (true, false, true), (true, true, false), (false, true, true)]
        {
            let op: Op = LayerNormalization { axis: -1, epsilon: 1e-5, rms, stats, skip }.into();
            let mut tys = vec![x.clone(), sc.clone()];
            if bias {
                tys.push(sc.clone());
            }
            if skip {
                tys.push(x.clone());
            }
            let xs = data(&tys, 40);
            if !stats {
                check(op, &xs, Form::Block(128));
                continue;
            }
            // dlc-interp has no statistics outputs: the normalised result from it, the
            // mean and 1/sqrt(variance + epsilon) of each row in f64 here (the mean is 0
            // for RMS normalisation, whose "variance" is the mean square).
            let plain: Op = LayerNormalization { axis: -1, epsilon: 1e-5, rms, stats: false, skip }.into();
            let mut want = dlc_interp::eval(&plain, &xs, &plain.infer("n", &tys).unwrap()).unwrap();
            let mut x: Vec<f64> = xs[0].to_f32().unwrap().iter().map(|&v| v as f64).collect();
            if skip {
                let r = xs.last().unwrap().to_f32().unwrap();
                x.iter_mut().zip(r).for_each(|(a, b)| *a += b as f64);
            }
            let (mut mean, mut inv) = (Vec::new(), Vec::new());
            for row in x.chunks(70) {
                let mu = if rms { 0.0 } else { row.iter().sum::<f64>() / 70.0 };
                let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / 70.0;
                mean.push(mu as f32);
                inv.push((1.0 / (var + 1e-5).sqrt()) as f32);
            }
            want.push(TensorData::from_f32(&[3, 4, 1], &mean).unwrap());
            want.push(TensorData::from_f32(&[3, 4, 1], &inv).unwrap());
            check_against(op, &xs, Form::Block(128), &want);
        }
    }
    // The last two dims, with a scale broadcast along the first of them (256 threads).
    let op: Op = LayerNormalization { axis: 1, epsilon: 1e-3, rms: false, stats: false, skip: false }.into();
    check(op, &data(&[f32t(&[2, 4, 70]), f32t(&[1, 70])], 50), Form::Block(256));
}

#[test]
fn attention_takes_a_block_per_query_row_with_every_mask_kind() {
    for (nb, sq, sk, h, d, dv) in [(2u64, 3u64, 5u64, 2u64, 8u64, 8u64), (1, 4, 200, 3, 4, 12)] {
        let qkv = vec![f32t(&[nb, sq, h * d]), f32t(&[nb, sk, h * d]), f32t(&[nb, sk, h * dv])];
        let masks: Vec<Option<(bool, TensorData)>> = vec![
            None,
            Some((false, floats(&f32t(&[nb, 1, 1, sk]), 61))),
            Some((true, i64s(&[nb, sk], &(0..nb * sk).map(|j| (j % 3 != 1) as i64).collect::<Vec<_>>()))),
        ];
        for mask in masks {
            let key_padding = mask.as_ref().is_some_and(|m| m.0);
            let op: Op = Attention { heads: h as i64, scale: 0.3, key_padding, padding_fill: -1e4 }.into();
            let mut xs = data(&qkv, 70);
            xs.extend(mask.map(|m| m.1));
            check(op, &xs, Form::Block(128));
        }
    }
}

#[test]
fn gathers_concats_and_copies_are_exact_per_element() {
    let d = TensorData::new(
        TensorType::fixed(DType::I16, &[3, 4, 2]),
        Arc::from((0..48u8).map(|i| i.wrapping_mul(29)).collect::<Vec<u8>>()),
    )
    .unwrap();
    for axis in [0, 1, -1] {
        let extent = [3i64, 4, 2][if axis < 0 { 2 } else { axis as usize }];
        // Negative indices wrap.
        let idx: Vec<i64> = (0..6).map(|i| (i * 5 % (2 * extent)) - extent).collect();
        check(Gather { axis }.into(), &[d.clone(), i64s(&[2, 3], &idx)], Form::Each);
    }
    let a = floats(&f32t(&[2, 2, 3]), 80);
    let b = floats(&f32t(&[2, 5, 3]), 81);
    check(Concat { axis: 1 }.into(), &[a.clone(), b], Form::Each);
    check(Concat { axis: 2 }.into(), &[a.clone(), a.clone()], Form::Each);
    check(Reshape { shape: vec![3, 4], allowzero: false }.into(), &[a], Form::Each);
}
