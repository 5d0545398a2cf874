//! Resize's two kernels in the kir interpreter against dlc-interp's float64 definition
//! (`dlc_interp::resize`): the taps kernel for every mode, coordinate transformation,
//! nearest rounding, antialias, exclude_outside and crop window, at run-time input and
//! output extents (the path of models with symbolic image dims); the resize kernel on
//! f32 and on integers (nearest), with run-time dims before and after the axis.
use dlc_ir::ops::{NearestMode, Resize, ResizeCoord, ResizeMode, ResizeTaps};
use dlc_ir::{DType, Dim, Op, Shape, TensorData, TensorType};
use dlc_kir::interp::run_kernel;
use std::collections::BTreeMap;

#[allow(dead_code)]
mod common;
use common::floats;

const T: dlc_lower::Target = dlc_lower::Target { f32_lanes: 8, int8: dlc_lower::Int8Dot::Exact, pool: true };

fn taps_op(mode: ResizeMode, coord: ResizeCoord) -> ResizeTaps {
    ResizeTaps {
        axis: 1,
        size: "O".into(),
        scale: 0.0,
        scale_of: String::new(),
        mode,
        coord,
        nearest: NearestMode::RoundPreferFloor,
        cubic_a: -0.75,
        exclude_outside: false,
        antialias: false,
        roi_start: 0.0,
        roi_end: 1.0,
    }
}

/// Runs the taps kernel of `op` (operand `[2, I]`, `I` and `O` run-time) at each
/// `(I, O)` and compares with `dlc_interp::resize::taps`.
fn check_taps(op: &ResizeTaps, sizes: &[(u64, u64)]) {
    let x = TensorType { dtype: DType::F32, shape: Shape(vec![Dim::Fixed(2), Dim::sym("I")]) };
    let outs = Op::ResizeTaps(op.clone()).infer("n", std::slice::from_ref(&x)).unwrap();
    let o = Op::ResizeTaps(op.clone());
    let node = dlc_lower::Node { name: "n", op: &o, inputs: &[x], outputs: &outs, consts: &[], operand_max: &[] };
    let k = dlc_lower::lower("k", &node, &T).expect("lowered").unwrap();
    for &(i, out) in sizes {
        let (want_idx, want_w) = dlc_interp::resize::taps(op, i, out).unwrap();
        let taps = want_idx.len() / out as usize;
        let syms: BTreeMap<String, i64> = [("I".to_string(), i as i64), ("O".to_string(), out as i64)].into();
        let mut bufs =
            vec![vec![0u8; (2 * i * 4) as usize], vec![0xAA; want_idx.len() * 8], vec![0xAA; want_w.len() * 4]];
        run_kernel(&k, &mut bufs, &syms).unwrap_or_else(|e| panic!("{op:?} at {i}->{out}: {e}"));
        let idx: Vec<i64> = bufs[1].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        let w: Vec<f32> = bufs[2].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(idx, want_idx, "{op:?} at {i}->{out}: indices ({taps} taps)");
        for (j, (g, e)) in w.iter().zip(&want_w).enumerate() {
            assert!((*g as f64 - e).abs() <= 1e-6, "{op:?} at {i}->{out}: weight {j} is {g}, want {e}");
        }
    }
}

const SIZES: &[(u64, u64)] = &[(4, 8), (8, 3), (5, 5), (7, 1), (1, 4), (10, 23)];

#[test]
fn taps_of_every_mode_and_coordinate_transformation_from_sizes() {
    use ResizeCoord::*;
    for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
        for coord in [HalfPixel, HalfPixelSymmetric, PytorchHalfPixel, AlignCorners, Asymmetric] {
            check_taps(&taps_op(mode, coord), SIZES);
        }
    }
    check_taps(&taps_op(ResizeMode::Nearest, TfHalfPixelForNn), SIZES);
}

#[test]
fn taps_with_a_given_scale_and_every_nearest_mode() {
    for nearest in [
        NearestMode::RoundPreferFloor,
        NearestMode::RoundPreferCeil,
        NearestMode::Floor,
        NearestMode::Ceil,
        NearestMode::Simple,
    ] {
        for (scale, sizes) in [(2.0, &[(4, 8), (3, 6)][..]), (0.6, &[(5, 3), (10, 6)][..]), (1.7, &[(3, 5)][..])] {
            for coord in [ResizeCoord::HalfPixel, ResizeCoord::Asymmetric, ResizeCoord::AlignCorners] {
                let op = ResizeTaps { scale, nearest, ..taps_op(ResizeMode::Nearest, coord) };
                check_taps(&op, sizes);
            }
        }
    }
}

#[test]
fn taps_with_antialias_exclude_outside_crop_and_keep_aspect_ratio() {
    for mode in [ResizeMode::Linear, ResizeMode::Cubic] {
        // Antialias: a given downscale widens the kernel.
        for scale in [0.6f32, 0.25, 1.5] {
            let op = ResizeTaps { scale, antialias: true, ..taps_op(mode, ResizeCoord::HalfPixel) };
            let out = |i: u64| (i as f64 * scale as f64).floor() as u64;
            check_taps(&op, &[(8, out(8)), (13, out(13))]);
        }
        let op = ResizeTaps { exclude_outside: true, cubic_a: -0.5, ..taps_op(mode, ResizeCoord::HalfPixel) };
        check_taps(&op, SIZES);
        let op = ResizeTaps { roi_start: 0.4, roi_end: 0.6, ..taps_op(mode, ResizeCoord::TfCropAndResize) };
        check_taps(&op, &[(4, 3), (10, 7), (6, 1)]);
        let op = ResizeTaps { roi_start: -0.2, roi_end: 1.3, ..taps_op(mode, ResizeCoord::TfCropAndResize) };
        check_taps(&op, &[(4, 9)]);
        // not_larger / not_smaller: another axis's ratio.
        let op = ResizeTaps { scale_of: "3;5".into(), ..taps_op(mode, ResizeCoord::HalfPixel) };
        check_taps(&op, &[(8, 5), (4, 2)]);
    }
    let op = ResizeTaps { roi_start: 0.4, roi_end: 0.6, ..taps_op(ResizeMode::Nearest, ResizeCoord::TfCropAndResize) };
    check_taps(&op, &[(4, 3), (10, 7)]);
}

/// Runs the resize kernel on `x` (dims with run-time `N` and `W` around the axis) and
/// compares with dlc-interp: exact for nearest, else within f32 rounding.
fn check_apply(dtype: DType, op: &ResizeTaps, n: u64, c: u64, w: u64, extrapolation: f32) {
    let xt = TensorType { dtype, shape: Shape(vec![Dim::sym("N"), Dim::Fixed(c), Dim::sym("W")]) };
    let taps_ty =
        |o: &ResizeTaps| Op::ResizeTaps(o.clone()).infer("n", &[TensorType::fixed(DType::F32, &[1, c, 1])]).unwrap();
    let tt = taps_ty(op);
    let r = Op::Resize(Resize { axis: 1, extrapolation });
    let ins = vec![xt.clone(), tt[0].clone(), tt[1].clone()];
    let outs = r.infer("n", &ins).unwrap();
    let node = dlc_lower::Node { name: "n", op: &r, inputs: &ins, outputs: &outs, consts: &[], operand_max: &[] };
    let k = dlc_lower::lower("k", &node, &T).expect("lowered").unwrap();
    let out = tt[0].shape.0[0].fixed().unwrap();
    let fx = TensorType::fixed(dtype, &[n, c, w]);
    let x = if dtype == DType::F32 {
        floats(&fx, 3)
    } else {
        let v: Vec<u8> = (0..fx.size_bytes().unwrap()).map(|i| (i * 37 % 251) as u8).collect();
        TensorData::new(fx.clone(), v.into()).unwrap()
    };
    let (iv, wv) = dlc_interp::resize::taps(op, c, out).unwrap();
    let kt = iv.len() as u64 / out;
    let idx = TensorData::from_i64(&[out, kt], &iv).unwrap();
    let wt = TensorData::from_f32(&[out, kt + 1], &wv.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap();
    let fout = TensorType::fixed(dtype, &[n, out, w]);
    let want = dlc_interp::eval(&r, &[x.clone(), idx.clone(), wt.clone()], std::slice::from_ref(&fout)).unwrap();
    let syms: BTreeMap<String, i64> = [("N".to_string(), n as i64), ("W".to_string(), w as i64)].into();
    let mut bufs = vec![x.bytes().to_vec(), idx.bytes().to_vec(), wt.bytes().to_vec()];
    bufs.push(vec![0xAA; fout.size_bytes().unwrap() as usize]);
    run_kernel(&k, &mut bufs, &syms).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    if dtype == DType::F32 && kt > 1 {
        let f = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        for (g, e) in f(&bufs[3]).iter().zip(f(want[0].bytes())) {
            assert!((g - e).abs() <= 1e-5 + 1e-4 * e.abs(), "{op:?}: {g} vs {e}");
        }
    } else {
        assert_eq!(bufs[3], want[0].bytes(), "{op:?} on {dtype}");
    }
}

#[test]
fn resize_rows_of_floats_and_integers_at_run_time_dims() {
    let lin = ResizeTaps { size: "9".into(), ..taps_op(ResizeMode::Linear, ResizeCoord::HalfPixel) };
    let cub = ResizeTaps { size: "3".into(), ..taps_op(ResizeMode::Cubic, ResizeCoord::AlignCorners) };
    let near = ResizeTaps { size: "11".into(), ..taps_op(ResizeMode::Nearest, ResizeCoord::Asymmetric) };
    for (n, w) in [(1, 1), (2, 5), (3, 17)] {
        check_apply(DType::F32, &lin, n, 4, w, 0.0);
        check_apply(DType::F32, &cub, n, 6, w, 0.0);
        check_apply(DType::F32, &near, n, 5, w, 0.0);
        check_apply(DType::I8, &near, n, 5, w, 0.0);
        check_apply(DType::I64, &near, n, 5, w, 0.0);
    }
    // Positions outside the crop window take the extrapolation value, nearest or not.
    let crop = |mode| ResizeTaps {
        size: "7".into(),
        roi_start: -0.3,
        roi_end: 1.2,
        ..taps_op(mode, ResizeCoord::TfCropAndResize)
    };
    check_apply(DType::F32, &crop(ResizeMode::Linear), 2, 4, 3, 10.0);
    check_apply(DType::F32, &crop(ResizeMode::Nearest), 2, 4, 3, -2.5);
}
