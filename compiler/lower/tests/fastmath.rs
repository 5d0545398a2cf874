//! dlc's math functions (dlc_lower::fastmath) as the kernels run them: each is built as
//! kir and run in kir's interpreter (f32 arithmetic, one rounding per operation, fused
//! multiply-adds fused), and its error is bounded against f64 over dense samples.
use dlc_kir::interp::run_kernel;
use dlc_kir::{Access, Elem, Expr, KernelBuilder, LoopKind, Ty, ValId};
use dlc_lower::fastmath;
use std::collections::BTreeMap;

/// `f` applied to every element of `xs` by a kir kernel of `lanes`-lane vectors.
fn run_lanes(xs: &[f32], lanes: u32, f: &dyn Fn(&mut KernelBuilder, ValId, u32) -> ValId) -> Vec<f32> {
    let mut xs = xs.to_vec();
    let n = xs.len();
    xs.resize(n.div_ceil(lanes as usize) * lanes as usize, 0.0);
    let mut b = KernelBuilder::new("f", &[Access::Read, Access::Write]);
    let ty = Ty::vec(Elem::F32, lanes);
    b.for_(Expr::c(0), Expr::c((xs.len() / lanes as usize) as i64), LoopKind::Each, |b, i| {
        let at = &i * &Expr::c(lanes as i64);
        let x = b.load(ty, 0, at.clone(), 4);
        let y = f(b, x, lanes);
        b.store(1, at, y, 4);
    });
    let k = b.finish();
    dlc_kir::verify::kernel(&k).unwrap();
    let mut bufs = vec![xs.iter().flat_map(|x| x.to_le_bytes()).collect(), vec![0u8; xs.len() * 4]];
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
    let mut out: Vec<f32> = bufs[1].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    out.truncate(n);
    out
}

fn run(xs: &[f32], f: &dyn Fn(&mut KernelBuilder, ValId, u32) -> ValId) -> Vec<f32> {
    run_lanes(xs, 1, f)
}

fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..=n).map(|i| lo + (hi - lo) * i as f32 / n as f32).collect()
}

/// Error of `got` against `want` in units of the f32 ulp at `want`.
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    let ulp = (w.abs().next_up() - w.abs()) as f64;
    (got as f64 - want).abs() / ulp.max(f64::MIN_POSITIVE)
}

#[test]
fn exp_error_is_within_2_ulp() {
    let xs = grid(-87.0, 88.0, 200_000);
    let got = run(&xs, &fastmath::exp);
    let worst = xs.iter().zip(&got).map(|(&x, &y)| ulps(y, (x as f64).exp())).fold(0.0, f64::max);
    assert!(worst <= 2.0, "max error {worst} ulp");
    let edge = run(&[0.0, -100.0, f32::NEG_INFINITY, 100.0, 88.0, f32::NAN], &fastmath::exp);
    assert_eq!(&edge[..4], &[1.0, 0.0, 0.0, f32::INFINITY]);
    assert!(edge[4].is_finite() && edge[5].is_nan());
}

#[test]
fn log_error_is_within_1_ulp() {
    // Every 9973rd f32 bit pattern from the smallest subnormal to +inf.
    let xs: Vec<f32> = (0..).map(|k| 1 + 9973 * k).take_while(|&b| b < 0x7f80_0000u32).map(f32::from_bits).collect();
    let got = run(&xs, &fastmath::log);
    let worst = xs.iter().zip(&got).map(|(&x, &y)| ulps(y, (x as f64).ln())).fold(0.0, f64::max);
    assert!(worst <= 1.0, "max error {worst} ulp");
    let edge = run(&[1.0, 0.0, f32::INFINITY, -1.0, f32::NAN], &fastmath::log);
    assert_eq!(&edge[..3], &[0.0, f32::NEG_INFINITY, f32::INFINITY]);
    assert!(edge[3].is_nan() && edge[4].is_nan());
}

#[test]
fn sin_cos_error_is_within_1e_7() {
    let mut xs = grid(-8192.0, 8192.0, 200_000);
    xs.extend(grid(-4.0, 4.0, 40_000));
    for cos in [false, true] {
        let got = run(&xs, &|b, x, l| fastmath::sincos(b, x, l, cos));
        let worst = xs
            .iter()
            .zip(&got)
            .map(|(&x, &y)| (y as f64 - if cos { (x as f64).cos() } else { (x as f64).sin() }).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-7, "cos {cos}: max abs error {worst}");
        let edge = run(&[0.0, f32::INFINITY, f32::NAN], &|b, x, l| fastmath::sincos(b, x, l, cos));
        assert_eq!(edge[0], if cos { 1.0 } else { 0.0 });
        assert!(edge[1].is_nan() && edge[2].is_nan());
    }
}

#[test]
fn atan_asin_error_is_within_3_ulp() {
    let xs = grid(-1.0, 1.0, 100_000);
    let got = run(&xs, &fastmath::asin);
    let worst_asin = xs.iter().zip(&got).map(|(&x, &y)| ulps(y, (x as f64).asin())).fold(0.0, f64::max);
    let mut ys = grid(-100.0, 100.0, 100_000);
    for e in -30..30 {
        ys.push(2f32.powi(e) * 1.3);
        ys.push(-(2f32.powi(e) * 1.3));
    }
    let got = run(&ys, &fastmath::atan);
    let worst_atan = ys.iter().zip(&got).map(|(&y, &r)| ulps(r, (y as f64).atan())).fold(0.0, f64::max);
    assert!(worst_asin <= 3.0 && worst_atan <= 3.0, "max error asin {worst_asin}, atan {worst_atan} ulp");
    assert!(run(&[1.5], &fastmath::asin)[0].is_nan() && run(&[f32::NAN], &fastmath::atan)[0].is_nan());
    assert_eq!(run(&[f32::INFINITY], &fastmath::atan)[0], std::f32::consts::FRAC_PI_2);
}

#[test]
fn tanh_error_is_within_3_ulp_in_scalars_and_vectors() {
    let mut xs = grid(-12.0, 12.0, 200_000);
    for e in -40..5 {
        xs.push(2f32.powi(e) * 1.37);
        xs.push(-(2f32.powi(e) * 1.37));
    }
    let got = run(&xs, &fastmath::tanh);
    let worst = xs.iter().zip(&got).map(|(&x, &y)| ulps(y, (x as f64).tanh())).fold(0.0, f64::max);
    assert!(worst <= 3.0, "max error {worst} ulp");
    assert_eq!(run_lanes(&xs, 16, &fastmath::tanh), got, "16-lane and scalar tanh agree bit for bit");
    let edge = run(&[0.0, -0.0, 50.0, -50.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN], &fastmath::tanh);
    assert_eq!(&edge[..6], &[0.0, -0.0, 1.0, -1.0, 1.0, -1.0]);
    assert!(edge[1].is_sign_negative() && edge[6].is_nan());
}

#[test]
fn erf_error_is_within_4_ulp_below_1_and_4_2e_7_everywhere_and_gelu_follows() {
    let mut xs = grid(-6.0, 6.0, 200_000);
    // Tiny arguments, where erf x ~ 2x / sqrt(pi) and a relative error shows.
    xs.extend((0..400).map(|k| 10f32.powf(-30.0 + k as f32 * 0.075)).flat_map(|x| [x, -x]));
    let got = run(&xs, &fastmath::erf);
    let (mut worst_abs, mut worst_ulp_small, mut worst_ulp) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in xs.iter().zip(&got) {
        let want = libm::erf(x as f64);
        worst_abs = worst_abs.max((y as f64 - want).abs());
        let u = ulps(y, want);
        worst_ulp = worst_ulp.max(u);
        if x.abs() < 1.0 {
            worst_ulp_small = worst_ulp_small.max(u);
        }
    }
    assert!(worst_ulp_small <= 4.0, "max error {worst_ulp_small} ulp for |x| < 1");
    assert!(worst_ulp <= 8.0 && worst_abs <= 4.2e-7, "max error {worst_ulp} ulp, {worst_abs} absolute");
    assert_eq!(run_lanes(&xs, 8, &fastmath::erf), got, "8-lane and scalar erf agree bit for bit");
    let edge = run(&[0.0, -0.0, 10.0, -10.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN], &fastmath::erf);
    assert_eq!(&edge[..6], &[0.0, -0.0, 1.0, -1.0, 1.0, -1.0]);
    assert!(edge[1].is_sign_negative() && edge[6].is_nan());
    // GELU inherits it: |error| <= |x| / 2 * 7e-7 + rounding; in vectors as in scalars.
    let xs = [-5.0f32, -1.0, -0.1, 0.0, 0.3, 1.7, 4.0, 2.5];
    let scalar = run(&xs, &fastmath::gelu);
    assert_eq!(run_lanes(&xs, 8, &fastmath::gelu), scalar, "vector and scalar GELU agree bit for bit");
    for (&x, &g) in xs.iter().zip(&scalar) {
        let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
        assert!((g as f64 - want).abs() <= 1e-6, "gelu({x}) = {g}, want {want}");
    }
}

/// The compositions the CUDA kernels use for the rest of the C library.
#[test]
fn composed_functions_are_within_a_few_1e_7() {
    let check = |name: &str, xs: &[f32], want: &dyn Fn(f64) -> f64, tol: f64| {
        let got = run(xs, &|b, x, _| fastmath::call(b, name, &[x]).expect("known"));
        for (&x, &g) in xs.iter().zip(&got) {
            let w = want(x as f64);
            let ok = (g as f64 - w).abs() <= tol * w.abs().max(1.0) || (g.is_nan() && w.is_nan());
            assert!(ok, "{name}({x}) = {g}, want {w}");
        }
    };
    let wide = grid(-3.0, 3.0, 2_000);
    check("tanhf", &wide, &f64::tanh, 5e-7);
    check("sinhf", &wide, &f64::sinh, 5e-7);
    check("coshf", &wide, &f64::cosh, 5e-7);
    check("asinhf", &wide, &f64::asinh, 5e-7);
    check("acoshf", &grid(1.0, 50.0, 2_000), &f64::acosh, 5e-7);
    check("atanhf", &grid(-0.99, 0.99, 2_000), &f64::atanh, 5e-7);
    check("acosf", &grid(-1.0, 1.0, 2_000), &f64::acos, 5e-7);
    check("tanf", &grid(-1.5, 1.5, 2_000), &f64::tan, 5e-7);
    check("expf", &wide, &f64::exp, 5e-7);
    // pow with C's rules: negative bases with integer exponents, pow(x, 0), pow(1, y).
    let pairs = [(2.0f32, 3.0f32), (-2.0, 3.0), (-2.0, 2.0), (-2.0, 0.5), (0.5, -1.5), (7.0, 0.0), (1.0, f32::NAN)];
    for (x, y) in pairs {
        let mut b = KernelBuilder::new("pow", &[Access::Read, Access::Write]);
        let t = Ty::scalar(Elem::F32);
        let (xv, yv) = (b.load(t, 0, Expr::c(0), 4), b.load(t, 0, Expr::c(1), 4));
        let r = fastmath::call(&mut b, "powf", &[xv, yv]).unwrap();
        b.store(1, Expr::c(0), r, 4);
        let k = b.finish();
        let mut bufs = vec![[x, y].iter().flat_map(|v| v.to_le_bytes()).collect(), vec![0u8; 4]];
        run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
        let g = f32::from_le_bytes(bufs[1][..4].try_into().unwrap());
        let w = (x as f64).powf(y as f64);
        assert!(
            (g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()),
            "pow({x}, {y}) = {g}, want {w}"
        );
    }
    assert!(fastmath::call(&mut KernelBuilder::new("k", &[]), "besself", &[0]).is_none());
}
