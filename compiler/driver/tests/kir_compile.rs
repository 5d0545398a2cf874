//! `dlc compile model.kir`: kir programs, written by `--emit kir` or by hand, compile
//! into artifacts that `dlc run` runs. References are float64 formulas computed here;
//! the two artifacts of one model (from the model and from its kir) are also compared
//! with each other (a consistency check).
use std::path::Path;
use std::process::Command;

fn dlc(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dlc")).args(args).current_dir(dir).output().expect("dlc runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "dlc panicked:\n{stderr}");
    (out.status.code().expect("exited normally"), stderr)
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], values: &[T]) {
    use npyz::WriterBuilder;
    let mut f = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut f).begin_nd().unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> Vec<T> {
    let bytes = std::fs::read(path).unwrap();
    npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
}

#[test]
fn a_models_kir_compiles_back_into_an_equivalent_artifact() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(
        d.join("m.dlc"),
        "model m(x: f32[2, 3], w: f32[3]) -> (y: f32[3, 2], z: f32[2, 3]) {\n  let t = transpose(x, perm=[1, 0])\n  \
         let y = softmax(relu(t) * 2.0, axis=0)\n  return y, sigmoid(x + w)\n}\n",
    )
    .unwrap();
    let (code, err) = dlc(d, &["compile", "m.dlc", "-o", "a", "--emit", "so,kir"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = dlc(d, &["compile", "a/model.kir", "-o", "b"]);
    assert_eq!(code, 0, "{err}");
    for f in ["model.so", "model.a", "model.h", "model.manifest", "report.json"] {
        assert!(d.join("b").join(f).exists(), "{f} missing");
    }
    let header = std::fs::read_to_string(d.join("b/model.h")).unwrap();
    assert!(header.contains("dlc_m_run"), "{header}");
    let x = [1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0];
    let w = [0.1f32, 0.2, -0.3];
    write_npy(&d.join("x.npy"), &[2, 3], &x);
    write_npy(&d.join("w.npy"), &[3], &w);
    for a in ["a", "b"] {
        let (code, err) = dlc(d, &["run", a, "-i", "x=x.npy", "-i", "w=w.npy", "-o", &format!("{a}_out")]);
        assert_eq!(code, 0, "{err}");
    }
    // float64 reference: y = softmax over axis 0 of 2 * relu(x^T); z = sigmoid(x + w).
    let mut y = vec![0f64; 6];
    for j in 0..2 {
        let col: Vec<f64> = (0..3).map(|i| 2.0 * (x[j * 3 + i] as f64).max(0.0)).collect();
        let m = col.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = col.iter().map(|v| (v - m).exp()).sum();
        for i in 0..3 {
            y[i * 2 + j] = (col[i] - m).exp() / s;
        }
    }
    let z: Vec<f64> = (0..6).map(|k| 1.0 / (1.0 + (-(x[k] as f64 + w[k % 3] as f64)).exp())).collect();
    for (name, want) in [("y", &y), ("z", &z)] {
        let got_a: Vec<f32> = read_npy(&d.join(format!("a_out/{name}.npy")));
        let got_b: Vec<f32> = read_npy(&d.join(format!("b_out/{name}.npy")));
        for (g, w) in got_b.iter().zip(want.iter()) {
            assert!((*g as f64 - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{name}: {g} vs {w}");
        }
        assert_eq!(got_a, got_b, "{name}: the model's and its kir's artifacts differ (consistency)");
    }
}

/// A hand-written program with every kind of step: a constant, an arena buffer, a
/// counted loop with a carried buffer and an `if` on an input flag.
const REGIONS: &str = r#"program "regions"
arena 24
buffer %b0 "x" input 0 type "i32[3]" bytes [12]
buffer %b1 "flag" input 1 type "bool[1]" bytes [1]
buffer %b2 "acc" arena [0] bytes [12]
buffer %b3 "next" arena [12] bytes [12]
buffer %b4 "bias" const bytes [12] data 010000000200000003000000
buffer %b5 "y" output 0 type "i32[3]" bytes [12]

kernel @"double_add"(%p0: read, %p1: read, %p2: write) {
  for %i0 in 0 .. 3 each {
    %v0 = load i32, %p0[%i0] align 4
    %v1 = add %v0, %v0
    %v2 = load i32, %p1[%i0] align 4
    %v3 = add %v1, %v2
    store %p2[%i0], %v3 align 4
  }
}

kernel @"negate"(%p0: read, %p1: write) {
  for %i0 in 0 .. 3 each {
    %v0 = load i32, %p0[%i0] align 4
    %v1 = neg %v0
    store %p1[%i0], %v1 align 4
  }
}

schedule {
  copy %b2, %b0
  loop 3 carry (%b2 <- %b3) {
    call @"double_add"(%b2, %b4, %b3)
  }
  if %b1 {
    call @"negate"(%b2, %b5)
  } else {
    copy %b5, %b2
  }
}
"#;

#[test]
fn a_hand_written_program_runs_its_schedule() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("regions.kir"), REGIONS).unwrap();
    let (code, err) = dlc(d, &["compile", "regions.kir", "-o", "a"]);
    assert_eq!(code, 0, "{err}");
    write_npy(&d.join("x.npy"), &[3], &[1i32, -2, 5]);
    for flag in [false, true] {
        write_npy(&d.join("f.npy"), &[1], &[flag]);
        let (code, err) = dlc(d, &["run", "a", "-i", "x=x.npy", "-i", "flag=f.npy", "-o", "out"]);
        assert_eq!(code, 0, "{err}");
        let got: Vec<i32> = read_npy(&d.join("out/y.npy"));
        // Three rounds of acc = 2 * acc + bias, then negated when the flag is set.
        let want: Vec<i32> = [1i32, -2, 5]
            .iter()
            .zip([1, 2, 3])
            .map(|(&x, b)| (0..3).fold(x, |a, _| 2 * a + b))
            .map(|v| if flag { -v } else { v })
            .collect();
        assert_eq!(got, want, "flag {flag}");
    }
    // The interpreter agrees (a consistency check of translator and interpreter).
    let p = dlc_kir::parse::program(REGIONS).unwrap();
    let ins: Vec<Vec<u8>> = vec![[1i32, -2, 5].iter().flat_map(|v| v.to_le_bytes()).collect(), vec![1]];
    let outs = dlc_kir::interp::run_program(&p, &ins, &Default::default()).unwrap();
    assert_eq!(outs[0], [-15i32, 2, -61].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
}

/// Three kernels: `plus_zero` and `plus_zero_again` differ only in their names (one
/// function serves both), `plus_minus_zero` adds -0.0 instead of 0.0 (other code: the
/// sign of -0.0 + c tells them apart).
const SHARED: &str = r#"program "shared"
arena 0
buffer %b0 "x" input 0 type "f32[2]" bytes [8]
buffer %b1 "a" output 0 type "f32[2]" bytes [8]
buffer %b2 "b" output 1 type "f32[2]" bytes [8]
buffer %b3 "c" output 2 type "f32[2]" bytes [8]

kernel @"plus_zero"(%p0: read, %p1: write) {
  for %i0 in 0 .. 2 each {
    %v0 = load f32, %p0[%i0] align 4
    %v1 = const f32 0.0
    %v2 = fadd %v0, %v1
    store %p1[%i0], %v2 align 4
  }
}

kernel @"plus_minus_zero"(%p0: read, %p1: write) {
  for %i0 in 0 .. 2 each {
    %v0 = load f32, %p0[%i0] align 4
    %v1 = const f32 -0.0
    %v2 = fadd %v0, %v1
    store %p1[%i0], %v2 align 4
  }
}

kernel @"plus_zero_again"(%p0: read, %p1: write) {
  for %i0 in 0 .. 2 each {
    %v0 = load f32, %p0[%i0] align 4
    %v1 = const f32 0.0
    %v2 = fadd %v0, %v1
    store %p1[%i0], %v2 align 4
  }
}

schedule {
  call @"plus_zero"(%b0, %b1)
  call @"plus_minus_zero"(%b0, %b2)
  call @"plus_zero_again"(%b0, %b3)
}
"#;

/// Kernels of the same code are compiled once, kernels are compiled in modules of
/// their own (on `--jobs` threads) beside the entry points' and linked back together,
/// and literals compare by their bits: -0.0 is not 0.0.
#[test]
fn kernels_of_one_code_share_a_function_and_compile_in_modules_of_their_own() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("shared.kir"), SHARED).unwrap();
    let p = dlc_kir::parse::program(SHARED).unwrap();
    assert_eq!(p.kernels[0].body, p.kernels[2].body);
    assert_ne!(p.kernels[0].body, p.kernels[1].body, "-0.0 and 0.0 are different literals");
    for jobs in ["1", "2"] {
        let (code, err) = dlc(d, &["compile", "shared.kir", "-o", jobs, "--jobs", jobs]);
        assert_eq!(code, 0, "{err}");
    }
    for f in ["model.so", "model.a"] {
        assert_eq!(std::fs::read(d.join("1").join(f)).unwrap(), std::fs::read(d.join("2").join(f)).unwrap(), "{f}");
    }
    // The archive: the entry points' object, then one module per distinct kernel.
    let ar = Command::new("ar").arg("t").arg(d.join("1/model.a")).output().expect("ar runs");
    let members = String::from_utf8_lossy(&ar.stdout).into_owned();
    assert_eq!(members.lines().collect::<Vec<_>>(), ["dlc_shared.o", "dlc_shared.1.o", "dlc_shared.2.o"]);
    write_npy(&d.join("x.npy"), &[2], &[-0.0f32, 1.5]);
    let (code, err) = dlc(d, &["run", "1", "-i", "x=x.npy", "-o", "out"]);
    assert_eq!(code, 0, "{err}");
    let bits = |name: &str| -> Vec<u32> {
        read_npy::<f32>(&d.join(format!("out/{name}.npy"))).iter().map(|v| v.to_bits()).collect()
    };
    // IEEE 754: -0.0 + 0.0 is +0.0, -0.0 + -0.0 is -0.0.
    assert_eq!(bits("a"), [0.0f32.to_bits(), 1.5f32.to_bits()]);
    assert_eq!(bits("b"), [(-0.0f32).to_bits(), 1.5f32.to_bits()]);
    assert_eq!(bits("c"), bits("a"));
}

#[test]
fn kir_programs_that_cannot_be_compiled_say_why() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cases = [
        // An input without a tensor type.
        (
            REGIONS.replace(
                r#" type "i32[3]" bytes [12]
buffer %b1"#,
                r#" bytes [12]
buffer %b1"#,
            ),
            "buffer 'x' (input 0) has no `type",
        ),
        // A type whose size is not the buffer's.
        (REGIONS.replace(r#"type "bool[1]""#, r#"type "bool[2]""#), "is 1 bytes, but its type bool[2] is 2 bytes"),
        // A kernel that does not verify.
        (REGIONS.replace("%v3 = add %v1, %v2", "%v3 = add %v1, %v9"), "%v9 is used where it is not defined"),
        // Not kir at all.
        ("program \"p\"\nfrob\n".to_string(), "regions.kir:line 2"),
    ];
    for (text, want) in cases {
        std::fs::write(d.join("regions.kir"), &text).unwrap();
        let (code, err) = dlc(d, &["compile", "regions.kir", "-o", "a"]);
        assert_eq!(code, 1, "{want}: {err}");
        assert!(err.contains(want), "want '{want}' in:\n{err}");
    }
    std::fs::write(d.join("regions.kir"), REGIONS).unwrap();
    let (code, err) = dlc(d, &["compile", "regions.kir", "-o", "a", "--quantize", "int8"]);
    assert_eq!(code, 1);
    assert!(err.contains("apply to models, not to kir programs"), "{err}");
}

/// Scratch arrays through LLVM: every pool task of a `parallel` loop has its own (the
/// rows are reversed through it), and the kernel body has one too.
const SCRATCH: &str = r#"program "scratch"
arena 0
buffer %b0 "x" input 0 type "f32[8,4]" bytes [128]
buffer %b1 "y" output 0 type "f32[8,4]" bytes [128]
buffer %b2 "first" output 1 type "f32[1]" bytes [4]

kernel @"reverse"(%p0: read, %p1: write)
  data %d0 "w" : f32[4] 0000803f000000400000404000008040
  scratch %s0 : f32[4]
{
  for %i0 in 0 .. 8 parallel {
    for %i1 in 0 .. 4 serial {
      %v0 = load f32, %p0[4*%i0 + %i1] align 4
      store %s0[%i1], %v0 align 4
    }
    for %i2 in 0 .. 4 serial {
      %v1 = load f32, %s0[-%i2 + 3] align 4
      %v2 = load f32, %d0[%i2] align 4
      %v3 = fmul %v1, %v2
      store %p1[4*%i0 + %i2], %v3 align 4
    }
  }
}

kernel @"first"(%p0: read, %p1: write)
  scratch %s0 : f32[16]
{
  memcpy %s0[0], %p0[0], 64
  %v0 = load f32x16, %s0[0] align 64
  %v1 = reduce fadd %v0
  store %p1[0], %v1 align 4
}

schedule {
  call @"reverse"(%b0, %b1)
  call @"first"(%b0, %b2)
}
"#;

#[test]
fn scratch_and_constant_arrays_compile_per_task() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("s.kir"), SCRATCH).unwrap();
    let (code, err) = dlc(d, &["compile", "s.kir", "-o", "a"]);
    assert_eq!(code, 0, "{err}");
    let x: Vec<f32> = (0..32).map(|i| i as f32 * 0.5 - 3.0).collect();
    write_npy(&d.join("x.npy"), &[8, 4], &x);
    // Two threads: the parallel loop's tasks run on the pool.
    let out = Command::new(env!("CARGO_BIN_EXE_dlc"))
        .args(["run", "a", "-i", "x=x.npy", "-o", "out"])
        .env("DLC_NUM_THREADS", "2")
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let y: Vec<f32> = read_npy(&d.join("out/y.npy"));
    // Each row reversed, times the constant array [1, 2, 3, 4] (read inside the tasks).
    let want: Vec<f32> = (0..32).map(|k| x[k / 4 * 4 + 3 - k % 4] * (k % 4 + 1) as f32).collect();
    assert_eq!(y, want);
    let first: Vec<f32> = read_npy(&d.join("out/first.npy"));
    let sum: f32 = x[..16].iter().sum();
    assert!((first[0] - sum).abs() <= 1e-5, "{} vs {sum}", first[0]);
}

/// A hand-written program for CUDA: a block kernel (one block of 32 threads per row:
/// shared memory, a barrier, `blockreduce`) reading a constant buffer, then a
/// per-element kernel between two arena slices, and a copy of the second into an output.
const CUDA_ROWS: &str = r#"program "rows"
arena 16
buffer %b0 "x" input 0 type "f32[2,32]" bytes [256]
buffer %b1 "w" const bytes [8] data 0000803f00000040
buffer %b2 "y" output 0 type "f32[2,32]" bytes [256]
buffer %b3 "t" arena [0] bytes [8]
buffer %b4 "u" arena [8] bytes [8]
buffer %b5 "s" output 1 type "f32[2]" bytes [8]

kernel @"k0_rowsum"(%p0: read, %p1: read, %p2: write, %p3: write)
  scratch %s0 : f32[1]
  block %i0, %i1, %i2 in [2, 1, 1] threads 32
  shared %h0 : f32[32]
{
  for %i3 in 0 .. 32 threads {
    %v0 = load f32, %p0[32*%i0 + %i3] align 4
    store %s0[0], %v0 align 4
    store %h0[%i3], %v0 align 4
  }
  %v1 = blockreduce fadd %s0
  %v2 = load f32, %p1[%i0] align 4
  for %i4 in 0 .. 32 threads {
    %v3 = load f32, %h0[-%i4 + 31] align 4
    %v4 = fmul %v3, %v2
    store %p2[32*%i0 + %i4], %v4 align 4
  }
  store %p3[%i0], %v1 align 4
}

kernel @"k1_neg"(%p0: read, %p1: write) {
  for %i0 in 0 .. 2 each {
    %v0 = load f32, %p0[%i0] align 4
    %v1 = fneg %v0
    store %p1[%i0], %v1 align 4
  }
}

schedule {
  call @"k0_rowsum"(%b0, %b1, %b2, %b3) label "row sums"
  call @"k1_neg"(%b3, %b4)
  copy %b5, %b4
}
"#;

#[test]
fn a_hand_written_program_compiles_for_cuda_and_runs_simulated() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("rows.kir"), CUDA_ROWS).unwrap();
    // The text is canonical: printing what was parsed gives it back.
    let p = dlc_kir::parse::program(CUDA_ROWS).unwrap();
    assert_eq!(dlc_kir::print::program(&p), CUDA_ROWS);
    let (code, err) = dlc(d, &["compile", "rows.kir", "-o", "a", "--target", "nvptx64-nvidia-cuda"]);
    assert_eq!(code, 0, "{err}");
    let ptx = std::fs::read_to_string(d.join("a/model.ptx")).unwrap();
    assert!(ptx.contains(".entry dlc_rows_k0_rowsum(") && ptx.contains(".entry dlc_rows_k1_neg("), "{ptx}");
    assert!(ptx.contains("bar.sync") && ptx.contains("shfl.sync.bfly"), "{ptx}");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("a/launch.json")).unwrap()).unwrap();
    let launches = table["launches"].as_array().unwrap();
    assert_eq!(launches.len(), 2);
    assert_eq!(launches[0]["node"], "row sums");
    assert_eq!(launches[0]["op"], "rowsum");
    assert_eq!(launches[0]["grid"], serde_json::json!([2, 1, 1]));
    assert_eq!(launches[0]["block"], serde_json::json!([32, 1, 1]));
    assert_eq!(launches[0]["args"][1], serde_json::json!({ "weight": 0 }));
    assert_eq!(launches[1]["node"], "k1_neg");
    assert_eq!(launches[1]["args"], serde_json::json!([{ "arena": 0 }, { "arena": 8 }]));
    assert_eq!(table["copies"], serde_json::json!([{ "output": 1, "from": { "arena": 8 }, "bytes": 8 }]));
    assert_eq!(table["arena_bytes"], 16);
    assert_eq!(std::fs::read(d.join("a/model.weights")).unwrap(), [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);

    let x: Vec<f32> = (0..64).map(|i| (i % 32) as f32 + if i < 32 { 0.0 } else { 0.5 }).collect();
    write_npy(&d.join("x.npy"), &[2, 32], &x);
    let (code, err) = dlc(d, &["run", "a", "--simulate", "-i", "x=x.npy", "-o", "out"]);
    assert_eq!(code, 0, "{err}");
    let y: Vec<f32> = read_npy(&d.join("out/y.npy"));
    let s: Vec<f32> = read_npy(&d.join("out/s.npy"));
    let w = [1.0f32, 2.0];
    for r in 0..2 {
        let row = &x[32 * r..32 * r + 32];
        for t in 0..32 {
            assert_eq!(y[32 * r + t], row[31 - t] * w[r], "y[{r},{t}]");
        }
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        assert!((s[r] as f64 + sum).abs() <= 1e-4, "s[{r}] = {} vs -{sum}", s[r]);
    }
}

#[test]
fn kir_programs_cuda_cannot_run_say_why() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let symbolic = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/kir/transpose_symbolic.kir"),
    )
    .unwrap()
    .replace("input 0 bytes", "input 0 type \"i32[3,N]\" bytes")
    .replace("output 0 bytes", "output 0 type \"i32[N,3]\" bytes");
    let cases = [
        (REGIONS.to_string(), "has control flow (if, loop), which CUDA artifacts do not support yet"),
        (symbolic, "has run-time dims (N), which CUDA artifacts do not support yet"),
        (CUDA_ROWS.replace("copy %b5, %b4", "copy %b3, %b4"), "a copy into buffer 't', which is not an output"),
    ];
    for (text, want) in cases {
        std::fs::write(d.join("p.kir"), &text).unwrap();
        let (code, err) = dlc(d, &["compile", "p.kir", "-o", "a", "--target", "nvptx64-nvidia-cuda"]);
        assert_eq!(code, 1, "{want}: {err}");
        assert!(err.contains(want), "want '{want}' in:\n{err}");
    }
    std::fs::write(d.join("p.kir"), CUDA_ROWS).unwrap();
    let (code, err) = dlc(d, &["compile", "p.kir", "-o", "a", "--target", "nvptx64-nvidia-cuda", "--emit", "so"]);
    assert_eq!(code, 1);
    assert!(err.contains("--emit so does not apply to a kir program compiled for CUDA (ptx and ll do)"), "{err}");
}

#[test]
fn math_library_calls_are_pure_to_llvm_so_invariant_ones_leave_their_loops() {
    // Each row of x times the sine of its own s: the fused kernel's inner loop calls
    // sinf on a value that does not change along it; LLVM hoists such a call only when
    // the declaration says it touches no memory. (exp, log and tanh are dlc's own,
    // inline: a sigmoid has no call left.)
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(
        d.join("se.dlc"),
        "model se(x: f32[4, 300], s: f32[4, 1]) -> (y: f32[4, 300]) {\n  return x * sin(s)\n}\n",
    )
    .unwrap();
    let (code, err) = dlc(d, &["compile", "se.dlc", "-o", "a", "--emit", "so,ll"]);
    assert_eq!(code, 0, "{err}");
    let ll = std::fs::read_to_string(d.join("a/model.ll")).unwrap();
    let decl = ll.lines().find(|l| l.starts_with("declare") && l.contains("@sinf(")).expect("sinf is declared");
    let group = decl.rsplit('#').next().unwrap().trim();
    let attrs = ll.lines().find(|l| l.starts_with(&format!("attributes #{group} "))).expect("its attributes");
    assert!(attrs.contains("memory(none)") && attrs.contains("nounwind"), "{decl}\n{attrs}");
    let x: Vec<f32> = (0..1200).map(|i| (i % 37) as f32 * 0.25 - 4.0).collect();
    let s = [-3.0f32, 0.0, 0.5, 20.0];
    write_npy(&d.join("x.npy"), &[4, 300], &x);
    write_npy(&d.join("s.npy"), &[4, 1], &s);
    let (code, err) = dlc(d, &["run", "a", "-i", "x=x.npy", "-i", "s=s.npy", "-o", "out"]);
    assert_eq!(code, 0, "{err}");
    let y: Vec<f32> = read_npy(&d.join("out/y.npy"));
    for (i, &v) in y.iter().enumerate() {
        let want = x[i] as f64 * (s[i / 300] as f64).sin();
        assert!((v as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "y[{i}] = {v}, want {want}");
    }
}

/// `fptosi.sat` and `fptoui.sat` from f16, f32 and f64 to every integer width, in 8-lane
/// vectors (elements 0..16) and scalars (16..32), compiled and run natively: NaN is 0 and
/// a value past either end is that end, as Rust's `as` defines them (the reference here).
#[test]
fn saturating_conversions_compile_to_the_same_values_in_vectors_and_scalars() {
    let x: [f64; 32] = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.5,
        -0.5,
        -0.99,
        -1.0,
        126.9,
        127.5,
        128.0,
        255.5,
        256.0,
        -128.5,
        -129.0,
        32767.5,
        32768.0,
        65535.9,
        65536.0,
        -32769.0,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        -2147483904.0,
        4294967295.0,
        4294967296.0,
        9.2e18,
        9223372036854775808.0,
        18446744073709551616.0,
        -9.3e18,
        1e30,
        -7.25,
    ];
    let dsts = [("i8", "i8", true), ("i8", "u8", false), ("i16", "i16", true), ("i16", "u16", false)]
        .into_iter()
        .chain([("i32", "i32", true), ("i32", "u32", false), ("i64", "i64", true), ("i64", "u64", false)]);
    let mut text = String::from(
        "program \"sat\"\narena 0\nbuffer %b0 \"x16\" input 0 type \"f16[32]\" bytes [64]\n\
         buffer %b1 \"x32\" input 1 type \"f32[32]\" bytes [128]\nbuffer %b2 \"x64\" input 2 type \"f64[32]\" bytes [256]\n",
    );
    let mut kernels = String::new();
    let mut schedule = String::from("schedule {\n");
    let mut outs = vec![];
    for (s, src) in ["f16", "f32", "f64"].into_iter().enumerate() {
        for (elem, dty, signed) in dsts.clone() {
            let (o, name) = (outs.len(), format!("{dty}_{src}"));
            let bytes = 32 * elem[1..].parse::<usize>().unwrap() / 8;
            text += &format!("buffer %b{} \"{name}\" output {o} type \"{dty}[32]\" bytes [{bytes}]\n", 3 + o);
            let op = if signed { "fptosi.sat" } else { "fptoui.sat" };
            let a = elem[1..].parse::<usize>().unwrap() / 8;
            let fa = src[1..].parse::<usize>().unwrap() / 8;
            kernels += &format!(
                "kernel @\"{name}\"(%p0: read, %p1: write) {{\n  for %i0 in 0 .. 2 serial {{\n    \
                 %v0 = load {src}x8, %p0[8*%i0] align {fa}\n    %v1 = cast {op} %v0 to {elem}x8\n    \
                 store %p1[8*%i0], %v1 align {a}\n  }}\n  for %i1 in 0 .. 16 serial {{\n    \
                 %v2 = load {src}, %p0[%i1 + 16] align {fa}\n    %v3 = cast {op} %v2 to {elem}\n    \
                 store %p1[%i1 + 16], %v3 align {a}\n  }}\n}}\n\n"
            );
            schedule += &format!("  call @\"{name}\"(%b{s}, %b{})\n", 3 + o);
            outs.push((name, dty, src));
        }
    }
    let text = format!("{text}\n{kernels}{schedule}}}\n");
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("sat.kir"), &text).unwrap();
    let (code, err) = dlc(d, &["compile", "sat.kir", "-o", "a"]);
    assert_eq!(code, 0, "{err}\n{text}");
    let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f64(v)).collect();
    write_npy(&d.join("x16.npy"), &[32], &x16);
    write_npy(&d.join("x32.npy"), &[32], &x.map(|v| v as f32));
    write_npy(&d.join("x64.npy"), &[32], &x);
    let (code, err) = dlc(d, &["run", "a", "-i", "x16=x16.npy", "-i", "x32=x32.npy", "-i", "x64=x64.npy", "-o", "out"]);
    assert_eq!(code, 0, "{err}");
    for (name, dty, src) in outs {
        // The source value as the kernel saw it, exactly, in f64.
        let seen: Vec<f64> = match src {
            "f16" => x16.iter().map(|h| h.to_f64()).collect(),
            "f32" => x.iter().map(|&v| v as f32 as f64).collect(),
            _ => x.to_vec(),
        };
        let path = d.join(format!("out/{name}.npy"));
        let got: Vec<i128> = match dty {
            "i8" => read_npy::<i8>(&path).into_iter().map(i128::from).collect(),
            "u8" => read_npy::<u8>(&path).into_iter().map(i128::from).collect(),
            "i16" => read_npy::<i16>(&path).into_iter().map(i128::from).collect(),
            "u16" => read_npy::<u16>(&path).into_iter().map(i128::from).collect(),
            "i32" => read_npy::<i32>(&path).into_iter().map(i128::from).collect(),
            "u32" => read_npy::<u32>(&path).into_iter().map(i128::from).collect(),
            "i64" => read_npy::<i64>(&path).into_iter().map(i128::from).collect(),
            _ => read_npy::<u64>(&path).into_iter().map(i128::from).collect(),
        };
        let want: Vec<i128> = seen
            .iter()
            .map(|&v| match dty {
                "i8" => (v as i8) as i128,
                "u8" => (v as u8) as i128,
                "i16" => (v as i16) as i128,
                "u16" => (v as u16) as i128,
                "i32" => (v as i32) as i128,
                "u32" => (v as u32) as i128,
                "i64" => (v as i64) as i128,
                _ => (v as u64) as i128,
            })
            .collect();
        for i in 0..32 {
            assert_eq!(got[i], want[i], "{name}[{i}]: {} -> {}, want {}", seen[i], got[i], want[i]);
        }
    }
}
