//! The text form round-trips, the verifier rejects what it should, and the interpreter
//! gives the numbers plain Rust arithmetic gives.
use dlc_kir::interp::{run_kernel, run_program, InterpError};
use dlc_kir::{parse, print, verify};
use std::collections::BTreeMap;

/// A program touching every construct of the text form.
const EVERYTHING: &str = r#"program "every \"construct\""
symbol N min 1
symbol M min 2
arena 64*N + 16
buffer %b0 "x" input 0 bytes [4*M*N]
buffer %b1 "w" const bytes [8] data 0000803f00000040
buffer %b2 "t" arena [16] bytes [4*N]
buffer %b3 "c" arena [0] bytes [1]
buffer %b4 "y" output 0 bytes [4*N]

kernel @"k0"(%p0: read, %p1: read, %p2: write) {
  for %i0 in 0 .. N parallel {
    %v0 = const f32 0.0
    local %l0 : f32 = %v0
    for %i1 in 0 .. M serial {
      %v1 = load f32, %p0[M*%i0 + %i1] align 4
      %v2 = get %l0
      %v3 = fadd %v2, %v1
      set %l0, %v3
    }
    %v4 = get %l0
    %v5 = load f32x2, %p1[0] align 8
    %v6 = reduce fadd %v5
    %v7 = fma %v4, %v6, %v0
    %v8 = cmp folt %v7, %v0
    %v9 = fneg %v7
    %v10 = select %v8, %v9, %v7
    store %p2[%i0], %v10 align 4
  }
}

kernel @"k1"(%p0: read, %p1: write)
  table %t0 "dlc.decode.test" : f32 [0.0, 1.5, -inf]
  table %t1 "ints" : i16 [3, -4]
{
  for %i0 in 0 .. floordiv(N + 1, 2) each {
    %v0 = index 2*%i0
    %v1 = const i64 1
    %v2 = add %v0, %v1
    %v3 = index min(N - 1, %v2)
    %v4 = load i32, %p0[%v3] align 4
    %v5 = cast sitofp %v4 to f64
    %v6 = call "exp"(%v5) : f64
    %v7 = cast fptosi.sat %v6 to i32
    %v8 = splat %v7 x 4
    %v9 = insert %v8, %v4, 1
    %v10 = shuffle %v9, %v8 [1, 0, 7]
    %v11 = extract %v10, 2
    %v12 = cmp sgt %v11, %v4
    if %v12 {
      store %p1[mod(%i0, 3)], %v11 align 4
    } else {
      store %p1[0], %v4 align 4
    }
    %v13 = const i1 1
    %v14 = splat %v13 x 4
    %v15 = load i32x4, %p0[0] align 4 mask %v14
    store %p1[0], %v15 align 4 mask %v14
    memcpy %p1[4*%i0], %p0[0], 4
    %v16 = opaque %v0
    %v17 = splat %v4 x 8
    %v18 = cast bitcast %v17 to i8x32
    %v19 = intrinsic "x86.avx512.vpdpbusd.256"(%v17, %v18, %v18) : i32x8
    %v20 = lookup %t0[%v4]
    %v21 = lookup %t1[%v2]
  }
}

schedule {
  call @"k0"(%b0, %b1, %b4)
  copy %b2, %b4
  if %b3 {
    call @"k1"(%b0, %b2)
  } else {
    loop N - 1 carry (%b2 <- %b4) {
      copy %b4, %b2
    }
  }
}
"#;

#[test]
fn text_round_trips() {
    let p = parse::program(EVERYTHING).unwrap();
    verify::program(&p).unwrap();
    let text = print::program(&p);
    assert_eq!(text, EVERYTHING, "printing is canonical");
    assert_eq!(parse::program(&text).unwrap(), p);
}

#[test]
fn expressions_parse_into_canonical_form() {
    let e = parse::expr("(N + 1) * (N - 1) + 2*%i0 - floordiv(8*M, 4)").unwrap();
    assert_eq!(e.to_string(), "-2*M + N*N + 2*%i0 - 1");
    assert_eq!(parse::expr(&e.to_string()).unwrap(), e);
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn interpreter_runs_a_program_at_two_sizes() {
    let p = parse::program(EVERYTHING).unwrap();
    for (n, m) in [(3i64, 2i64), (5, 4)] {
        let x: Vec<f32> = (0..n * m).map(|i| i as f32 * 0.5 - 2.0).collect();
        let syms = BTreeMap::from([("N".to_string(), n), ("M".to_string(), m)]);
        let out = run_program(&p, &[f32s(&x)], &syms).unwrap();
        // k0: |rowsum(x) * (1 + 2)|, then the loop copies it back and forth (c is 0).
        let want: Vec<f32> = (0..n as usize)
            .map(|r| {
                let s: f32 = x[r * m as usize..(r + 1) * m as usize].iter().sum();
                (s * 3.0).abs()
            })
            .collect();
        assert_eq!(to_f32(&out[0]), want, "N={n} M={m}");
    }
}

#[test]
fn interpreter_checks_bounds_and_symbols() {
    let k = parse::kernel(
        "kernel @\"oob\"(%p0: read, %p1: write) {\n  for %i0 in 0 .. N each {\n    %v0 = load i8, %p0[%i0 + 1] align 1\n    store %p1[%i0], %v0 align 1\n  }\n}\n",
    )
    .unwrap();
    let syms = BTreeMap::from([("N".to_string(), 4)]);
    let mut bufs = vec![vec![1, 2, 3, 4], vec![0; 4]];
    let e = run_kernel(&k, &mut bufs, &syms).unwrap_err();
    assert!(matches!(&e, InterpError::Fault { msg, .. } if msg.contains("outside its 4 bytes")), "{e}");
    let e = run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, InterpError::Expr { .. }), "{e}");
    let p = parse::program(EVERYTHING).unwrap();
    let below = BTreeMap::from([("N".to_string(), 3), ("M".to_string(), 1)]);
    let e = run_program(&p, &[vec![0; 12]], &below).unwrap_err();
    assert!(e.to_string().contains("below its minimum 2"), "{e}");
}

/// Integer and float semantics the translators must match.
#[test]
fn instruction_semantics() {
    let k = parse::kernel(
        r#"kernel @"ops"(%p0: write) {
  %v0 = const i8 -7
  %v1 = const i8 2
  %v2 = sdiv %v0, %v1
  store %p0[0], %v2 align 1
  %v3 = const i8 200
  %v4 = const i8 3
  %v5 = ashr %v3, %v4
  store %p0[1], %v5 align 1
  %v6 = lshr %v3, %v4
  store %p0[2], %v6 align 1
  %v7 = const i8 9
  %v8 = shl %v4, %v7
  store %p0[3], %v8 align 1
  %v9 = const f32 300.7
  %v10 = cast fptosi.sat %v9 to i8
  store %p0[4], %v10 align 1
  %v11 = const f32 NaN
  %v12 = cast fptoui.sat %v11 to i8
  store %p0[5], %v12 align 1
  %v13 = const f32 -7.9
  %v14 = cast fptoui.sat %v13 to i8
  store %p0[6], %v14 align 1
  %v15 = const f32 2.5
  %v16 = roundeven %v15
  %v17 = cast fptosi.sat %v16 to i8
  store %p0[7], %v17 align 1
  %v18 = fmax %v11, %v15
  %v19 = cast fptosi.sat %v18 to i8
  store %p0[8], %v19 align 1
  %v20 = const i8 -3
  %v21 = cast sext %v20 to i16
  %v22 = cast trunc %v21 to i8
  store %p0[9], %v22 align 1
  %v23 = const f32 1.0
  %v24 = const f32 16777216.0
  %v25 = fadd %v24, %v23
  %v26 = fsub %v25, %v24
  %v27 = cast fptosi.sat %v26 to i8
  store %p0[10], %v27 align 1
}
"#,
    )
    .unwrap();
    let mut bufs = vec![vec![0u8; 11]];
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
    // Signed division overflow is an error, as division by zero is (LLVM makes both UB).
    let ovf = parse::kernel(
        "kernel @\"d\"(%p0: write) {\n  %v0 = const i8 -128\n  %v1 = const i8 -1\n  %v2 = sdiv %v0, %v1\n}\n",
    )
    .unwrap();
    let e = run_kernel(&ovf, &mut [vec![0u8; 1]], &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    let got: Vec<i8> = bufs[0].iter().map(|&b| b as i8).collect();
    // -7 / 2 truncates to -3; 200 is -56 as i8: >> 3 arithmetic -7, logical 25; 3 << (9 mod 8) = 6;
    // 300.7 saturates to 127; NaN to 0; -7.9 to 0 unsigned; roundeven(2.5) = 2;
    // maxnum(NaN, 2.5) = 2.5 -> 2; sext/trunc keep -3; f32 addition rounds (2^24 + 1 = 2^24).
    assert_eq!(got, vec![-3, -7, 25, 6, 127, 0, 0, 2, 2, -3, 0]);
}

#[test]
fn verifier_rejects_bad_kernels() {
    let cases = [
        ("store %p0[0], %v9 align 4", "%v9 is used where it is not defined"),
        ("%v0 = const f32 1.0\n  %v1 = const i32 1\n  %v2 = fadd %v0, %v1", "fadd of f32 and i32"),
        ("%v0 = const i32 1\n  %v1 = fadd %v0, %v0", "fadd on i32"),
        ("%v0 = const f32 1.0\n  store %p1[0], %v0 align 4", "%p1 is read-only and written"),
        ("%v0 = index %i3", "%i3 is not a loop variable in scope"),
        ("%v0 = const f32 1.0\n  %v1 = cast trunc %v0 to i8", "cast trunc from f32 to i8"),
        ("%v0 = const i32 1\n  %v1 = load f32, %p1[%v0] align 4", "%v0 in an index is i32, not i64"),
        ("for %i0 in 0 .. 2 serial {\n    %v0 = const i32 1\n  }\n  store %p0[0], %v0 align 4", "%v0 is used where"),
        ("%v0 = const f32 1.0\n  %v1 = load f32, %p1[0] align 3", "alignment 3 is not a power of two"),
        ("%v0 = const i8 1\n  %v1 = lookup %t0[%v0]", "%t0 is not a table of the kernel"),
    ];
    for (body, want) in cases {
        let text = format!("kernel @\"bad\"(%p0: write, %p1: read) {{\n  {body}\n}}\n");
        let k = parse::kernel(&text).unwrap_or_else(|e| panic!("{body}: {e}"));
        let e = verify::kernel(&k).unwrap_err();
        assert!(e.to_string().contains(want), "{body}: got {e}");
    }
}

#[test]
fn parse_errors_name_the_position() {
    let e = parse::kernel("kernel @\"k\"(%p0: read) {\n  %v0 = frob %v1\n}\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 9));
    assert!(e.msg.contains("unknown instruction 'frob'"), "{e}");
    let e = parse::program("program \"p\"\narena 0\nschedule {\n  call @\"nope\"()\n}\n").unwrap_err();
    assert!(e.msg.contains("no kernel named"), "{e}");
    // Deep nesting is an error, not a stack overflow.
    let deep = format!("{}N{}", "(".repeat(100_000), ")".repeat(100_000));
    let e = parse::expr(&deep).unwrap_err();
    assert!(e.msg.contains("nesting deeper than"), "{e}");
    assert!(parse::expr("99999999999999999999").is_err());
    assert!(parse::kernel("kernel @\"k\"(%p1: read) {}").is_err());
}

#[test]
fn tables_are_read_unsigned_and_checked() {
    let text = "kernel @\"k\"(%p0: read, %p1: write)\n  table %t0 \"t\" : f32 [0.5, -2.0, 4.0]\n{\n  \
                %v0 = load i8, %p0[0] align 1\n  %v1 = lookup %t0[%v0]\n  store %p1[0], %v1 align 4\n}\n";
    let k = parse::kernel(text).unwrap();
    assert_eq!(print::kernel(&k), text);
    let run = |code: u8| {
        let mut bufs = vec![vec![code], vec![0; 4]];
        run_kernel(&k, &mut bufs, &BTreeMap::new()).map(|_| f32::from_le_bytes(bufs[1][..4].try_into().unwrap()))
    };
    assert_eq!(run(1).unwrap(), -2.0);
    assert_eq!(run(2).unwrap(), 4.0);
    // Code 0xFF is 255 (unsigned), past the table's 3 elements: an error, not a wrap.
    let e = run(0xFF).unwrap_err();
    assert!(e.to_string().contains("element 255 of table 't' (3 elements)"), "{e}");
    // A float index, a float literal in an integer table, two tables of one name.
    let bad = [
        ("table %t0 \"t\" : f32 [1.0]", "%v0 = const f32 0.0\n  %v1 = lookup %t0[%v0]", "lookup index of f32"),
        ("table %t0 \"t\" : i32 [1]\n  table %t1 \"t\" : i32 [2]", "", "declared twice"),
    ];
    for (tables, body, want) in bad {
        let text = format!("kernel @\"bad\"(%p0: write)\n  {tables}\n{{\n  {body}\n}}\n");
        let k = parse::kernel(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let e = verify::kernel(&k).unwrap_err();
        assert!(e.to_string().contains(want), "{text}: got {e}");
    }
    // The parser reads an integer table's literals as integers; a kernel built in code
    // with a float in one is the verifier's to reject.
    assert!(parse::kernel("kernel @\"k\"()\n  table %t0 \"t\" : i32 [1.5]\n{\n}\n").is_err());
    let mut k = parse::kernel("kernel @\"k\"()\n  table %t0 \"t\" : i32 [1]\n{\n}\n").unwrap();
    k.tables[0].values = vec![dlc_kir::Lit::Float(1.5)].into();
    let e = verify::kernel(&k).unwrap_err();
    assert!(e.to_string().contains("holds literals that are not i32"), "{e}");
}

#[test]
fn plain_float_to_int_casts_truncate_in_range() {
    let text = "kernel @\"k\"(%p0: read, %p1: write) {\n  %v0 = load f32, %p0[0] align 4\n  \
                %v1 = cast fptoui %v0 to i8\n  store %p1[0], %v1 align 1\n}\n";
    let k = parse::kernel(text).unwrap();
    assert_eq!(print::kernel(&k), text);
    let run = |x: f32| {
        let mut bufs = vec![x.to_le_bytes().to_vec(), vec![0]];
        run_kernel(&k, &mut bufs, &BTreeMap::new()).map(|_| bufs[1][0])
    };
    assert_eq!(run(3.7).unwrap(), 3);
    assert_eq!(run(255.9).unwrap(), 255);
    assert_eq!(run(0.2).unwrap(), 0);
    // Out of range the result is unspecified (LLVM's poison); the interpreter runs on.
    for unspecified in [-1.0, 256.0, f32::NAN] {
        assert!(run(unspecified).is_ok());
    }
}

#[test]
fn scratch_arrays_are_private_memory_after_the_parameters() {
    let text = "kernel @\"k\"(%p0: read, %p1: write)\n  scratch %s0 : f32[2]\n  scratch %s1 : i32[1]\n{\n  \
                %v0 = load f32, %p0[0] align 4\n  store %s0[1], %v0 align 4\n  memcpy %s1[0], %s0[4], 4\n  \
                %v1 = load f32, %s1[0] align 4\n  store %p1[0], %v1 align 4\n}\n";
    let k = parse::kernel(text).unwrap();
    assert_eq!(print::kernel(&k), text);
    assert_eq!(k.scratch.len(), 2);
    // Memory index 2 is %s0 (two parameters), 3 is %s1.
    assert!(matches!(k.body[1], dlc_kir::Stmt::Store { param: 2, .. }));
    let mut bufs = vec![2.5f32.to_le_bytes().to_vec(), vec![0; 4]];
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
    assert_eq!(f32::from_le_bytes(bufs[1][..4].try_into().unwrap()), 2.5);
    // Out of bounds of a scratch array, and a scratch array that does not exist.
    let oob = text.replace("store %s0[1]", "store %s0[2]");
    let e = run_kernel(&parse::kernel(&oob).unwrap(), &mut bufs, &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("%s0: elements 2..3 of f32 are outside its 8 bytes"), "{e}");
    let missing = text.replace("store %s0[1]", "store %s2[1]");
    let e = verify::kernel(&parse::kernel(&missing).unwrap()).unwrap_err();
    assert!(e.to_string().contains("%s2 is not a scratch array"), "{e}");
}

#[test]
fn constant_arrays_are_read_only_memory_before_the_scratch_arrays() {
    // %d0 holds f32 [1.5, -2]; %s0 comes after it (memory index 3 with two parameters).
    let text = "kernel @\"k\"(%p0: read, %p1: write)\n  data %d0 \"w\" : f32[2] 0000c03f000000c0\n  \
                scratch %s0 : f32[1]\n{\n  %v0 = load f32x2, %d0[0] align 4\n  %v1 = load f32, %p0[0] align 4\n  \
                %v2 = splat %v1 x 2\n  %v3 = fmul %v0, %v2\n  %v4 = extract %v3, 1\n  store %s0[0], %v4 align 4\n  \
                %v5 = load f32, %s0[0] align 4\n  store %p1[0], %v5 align 4\n}\n";
    let k = parse::kernel(text).unwrap();
    assert_eq!(print::kernel(&k), text);
    assert_eq!((k.data.len(), k.data[0].len()), (1, 2));
    assert_eq!(k.memory(2), Some(dlc_kir::Memory::Data(0)));
    assert_eq!(k.memory(3), Some(dlc_kir::Memory::Scratch(0)));
    let mut bufs = vec![3f32.to_le_bytes().to_vec(), vec![0; 4]];
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
    assert_eq!(f32::from_le_bytes(bufs[1][..4].try_into().unwrap()), -6.0);
    // A constant array is never written, is read within its bytes, and its text holds
    // exactly the bytes its type says.
    let written = text.replace("store %s0[0], %v4", "store %d0[0], %v4");
    let e = verify::kernel(&parse::kernel(&written).unwrap()).unwrap_err();
    assert!(e.to_string().contains("constant array %d0 is written"), "{e}");
    let oob = text.replace("load f32x2, %d0[0]", "load f32x2, %d0[1]");
    let e = run_kernel(&parse::kernel(&oob).unwrap(), &mut bufs, &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("%d0: elements 1..3 of f32 are outside its 8 bytes"), "{e}");
    let short = text.replace("0000c03f000000c0", "0000c03f");
    let e = parse::kernel(&short).unwrap_err();
    assert!(e.to_string().contains("holds 4 bytes, not 2 f32"), "{e}");
    // The builder numbers them before scratch arrays.
    let mut b = dlc_kir::KernelBuilder::new("b", &[dlc_kir::Access::Write]);
    assert_eq!(b.data("w", dlc_kir::Elem::I8, vec![1u8, 2]), 1);
    assert_eq!(b.scratch(dlc_kir::Elem::I8, 4), 2);
}

/// A bitcast that regroups lanes is little-endian; an intrinsic runs by its meaning and
/// is checked against its signature.
#[test]
fn regrouping_bitcasts_and_intrinsics() {
    let k = parse::kernel(
        r#"kernel @"regroup"(%p0: read, %p1: write) {
  %v0 = load i32x8, %p0[0] align 4
  %v1 = cast bitcast %v0 to i8x32
  %v2 = const i8x32 -2
  %v3 = const i32x8 100
  %v4 = intrinsic "x86.avx512.vpdpbusd.256"(%v3, %v1, %v2) : i32x8
  store %p1[0], %v4 align 4
  %v5 = cast bitcast %v1 to i16x16
  %v6 = intrinsic "x86.avx2.pmadd.wd"(%v5, %v5) : i32x8
  store %p1[8], %v6 align 4
}
"#,
    )
    .unwrap();
    let words: Vec<u32> = (0..8).map(|l| 0x0403_0201 * (l + 1)).collect();
    let mut bufs = vec![words.iter().flat_map(|w| w.to_le_bytes()).collect(), vec![0; 64]];
    run_kernel(&k, &mut bufs, &BTreeMap::new()).unwrap();
    let out: Vec<i32> = bufs[1].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    for l in 0..8usize {
        let bytes = words[l].to_le_bytes();
        let dot: i32 = bytes.iter().map(|&b| b as i32 * -2).sum();
        assert_eq!(out[l], 100 + dot, "vpdpbusd lane {l}");
        let (lo, hi) = ((words[l] & 0xffff) as i16 as i32, (words[l] >> 16) as i16 as i32);
        assert_eq!(out[8 + l], lo * lo + hi * hi, "pmaddwd lane {l}");
    }
    let bad = r#"kernel @"bad"(%p0: write) {
  %v0 = const i32x4 1
  %v1 = intrinsic "x86.avx2.pmadd.wd"(%v0, %v0) : i32x8
}
"#;
    let e = verify::kernel(&parse::kernel(bad).unwrap()).unwrap_err();
    assert!(e.to_string().contains("takes (i16x16, i16x16) -> i32x8"), "{e}");
}

/// Constants in a sidecar file: the program reads back equal, identical constants are
/// stored once, and a bad offset or a missing file is an error naming it.
#[test]
fn constants_round_trip_through_a_weights_file() {
    let mut p = parse::program(EVERYTHING).unwrap();
    // Two constant buffers with the same bytes share one copy in the file.
    let dup = p.buffers.iter().find(|b| matches!(b.kind, dlc_kir::BufKind::Const(_))).cloned().unwrap();
    p.buffers.push(dlc_kir::Buffer { name: "again".into(), ..dup.clone() });
    let (text, weights) = print::program_split(&p, "m.weights", 1);
    assert!(text.starts_with("program \"every \\\"construct\\\"\"\nweights \"m.weights\"\n"), "{text}");
    assert!(text.contains(" at 0\n") && !text.contains(" data "), "{text}");
    let dlc_kir::BufKind::Const(bytes) = &dup.kind else { unreachable!() };
    assert_eq!(&weights[..], &bytes[..], "one copy");
    let mut asked = Vec::new();
    let back = parse::program_with_weights(&text, &mut |f: &str| {
        asked.push(f.to_string());
        Ok(weights.clone())
    })
    .unwrap();
    assert_eq!(back, p);
    assert_eq!(asked, ["m.weights"]);
    // Identical bytes: one offset.
    assert_eq!(text.matches(" at 0\n").count(), 2, "{text}");
    // Without a loader, past the end, and a file that cannot be read.
    let e = parse::program(&text).unwrap_err();
    assert!(e.msg.contains("read it with parse::program_with_weights"), "{e}");
    let e = parse::program_with_weights(&text, &mut |_: &str| Ok(vec![0; 3])).unwrap_err();
    assert!(e.msg.contains("past the weights file's 3 bytes"), "{e}");
    let e = parse::program_with_weights(&text, &mut |_: &str| Err("no such file".into())).unwrap_err();
    assert!(e.msg.contains("weights file 'm.weights': no such file"), "{e}");
    // Small constants stay inline.
    let (inline, w) = print::program_split(&p, "m.weights", 1 << 20);
    assert!(w.is_empty() && inline.contains(" data "));
    assert_eq!(inline, print::program(&p), "no weights file named when none is written");
}

#[test]
fn verifier_checks_block_kernels() {
    // (declarations, body, error)
    let blk = "\n  scratch %s0 : f32[1]\n  block %i0, %i1, %i2 in [2, 1, 1] threads 64\n  shared %h0 : f32[4]";
    let cases = [
        ("", "for %i0 in 0 .. 32 threads {\n  }", "a threads loop outside a block kernel"),
        (blk, "for %i3 in 0 .. 32 threads {\n  }", "runs from 0 to the block's 64 threads"),
        (
            blk,
            "for %i3 in 0 .. 64 threads {\n    for %i4 in 0 .. 64 threads {\n    }\n  }",
            "a threads loop inside a threads region",
        ),
        (blk, "%v0 = const f32 1.0\n  store %s0[0], %v0 align 4", "used outside a threads region"),
        (blk, "for %i3 in 0 .. 64 threads {\n    %v0 = blockreduce fadd %s0\n  }", "inside a threads region"),
        (blk, "%v0 = blockreduce add %s0", "blockreduce add"),
        (blk, "%v0 = blockreduce fadd %h0", "not an f32 scratch array"),
        (
            blk,
            "%v0 = const f32 1.0\n  local %l0 : f32 = %v0\n  for %i3 in 0 .. 64 threads {\n    set %l0, %v0\n  }",
            "block-uniform and set inside a threads region",
        ),
        (blk, "for %i3 in 0 .. 4 parallel {\n  }", "a parallel loop in a block kernel"),
        ("\n  block %i0, %i1, %i2 in [1, 1, 1] threads 2000", "", "2000 threads per block"),
        ("\n  block %i0, %i1, %i2 in [1, 1, 1] threads 48", "%v0 = blockreduce fmax %s9", "a multiple of 32"),
    ];
    for (decls, body, want) in cases {
        let text = format!("kernel @\"bad\"(%p0: write, %p1: read){decls}\n{{\n  {body}\n}}\n");
        let k = parse::kernel(&text).unwrap_or_else(|e| panic!("{body}: {e}\n{text}"));
        let e = verify::kernel(&k).unwrap_err();
        assert!(e.to_string().contains(want), "{body}: got {e}");
        // Block kernels print canonically.
        assert_eq!(print::kernel(&parse::kernel(&print::kernel(&k)).unwrap()), print::kernel(&k));
    }
}

/// The reduction order `blockreduce` specifies, against a plain left fold: sums agree
/// within rounding, max and min exactly, NaNs stay where the order says.
#[test]
fn block_reductions_follow_the_warp_butterfly_order() {
    use dlc_kir::interp::block_reduce;
    use dlc_kir::ReduceOp;
    for threads in [32usize, 64, 128, 256, 1024] {
        let v: Vec<f32> = (0..threads).map(|i| ((i * 37) % 101) as f32 * 0.25 - 12.0).collect();
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let got = block_reduce(ReduceOp::FAdd, v.clone());
        assert!((got as f64 - sum).abs() <= 1e-5 * sum.abs().max(1.0), "{threads}: {got} vs {sum}");
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = v.iter().copied().fold(f32::INFINITY, f32::min);
        assert_eq!(block_reduce(ReduceOp::FMax, v.clone()), max);
        assert_eq!(block_reduce(ReduceOp::FMin, v), min);
    }
    // The order matters in f32: 1e8 and 31 ones. Lane 0 adds its partner's partial in
    // each round: 1 (off 16), 2, 4, 8, 16 (the partners' sums of 1, 2, 4, 8 and 16
    // ones). With an ulp of 8 at 1e8, +1 and +2 round away, +4 is a tie kept at the even
    // 1e8, then +8 and +16 land exactly: 100000024. (A left fold would lose every one.)
    let mut v = vec![1.0f32; 32];
    v[0] = 1e8;
    assert_eq!(block_reduce(ReduceOp::FAdd, v), 100_000_024.0);
    // a < b ? b : a keeps a NaN held by the lane itself and drops a partner's NaN.
    let mut v = vec![0.0f32; 32];
    v[1] = f32::NAN;
    assert_eq!(block_reduce(ReduceOp::FMax, v), 0.0);
}
