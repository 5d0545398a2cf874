//! The IR that the examples and small programs lower to (insta snapshots), and a
//! property test that the frontend never panics, whatever the input.
use std::path::Path;

fn lower(src: &str) -> String {
    match dlc_dsl::import_source("t.dlc", src, Path::new(".")) {
        Ok(g) => dlc_ir::print_graph(&g).expect("printable"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn examples_lower_to_expected_ir() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dsl");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/ir");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for name in ["mlp", "cnn_residual", "encoder"] {
            let g = dlc_dsl::import(&dir.join(format!("{name}.dlc"))).unwrap_or_else(|e| panic!("{e}"));
            dlc_ir::verify(&g).expect("valid graph");
            insta::assert_snapshot!(name, dlc_ir::print_graph(&g).expect("printable"));
        }
    });
}

#[test]
fn small_programs_lower_to_expected_ir() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/ir");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        // Symbolic batch, numbers broadcast as scalars of the tensor's dtype, unary minus,
        // precedence, attributes from function arguments, nested unnamed calls.
        insta::assert_snapshot!(
            "small_arith",
            lower(
                "model m(x: f32[N, 4]) -> (y: f32[N, 4]) {\n  let a = -x * 2 + 1 / x\n  return softmax(a - 0.5, axis=-1)\n}\n"
            )
        );
        insta::assert_snapshot!(
            "small_functions",
            lower(
                "fn scale(t, k) {\n  return t * k\n}\nfn twice(t, ax) {\n  return softmax(scale(scale(t, 2), 3), axis=ax)\n}\nmodel m(x: f32[2, 3]) -> (y: f32[2, 3]) {\n  let s = twice(x, 1)\n  return s\n}\n"
            )
        );
    });
}

/// xorshift64*: a seeded source of test inputs.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn the_frontend_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dsl");
    let seeds: Vec<String> = ["mlp", "cnn_residual", "encoder"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.dlc"))).expect("example"))
        .collect();
    const PIECES: &[&str] = &[
        "model",
        "fn",
        "let",
        "param",
        "return",
        "weights",
        "from",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "=",
        "->",
        "+",
        "-",
        "*",
        "/",
        "@",
        "x",
        "y",
        "f32",
        "i64",
        "N",
        "0",
        "1",
        "-1",
        "2.5",
        "1e400",
        "99999999999999999999",
        "4000000000",
        "\"s\"",
        "\"",
        "#c\n",
        "\n",
        " ",
        "relu",
        "conv",
        "normal",
        "zeros",
        "strides",
        "true",
        "é",
        "\u{0}",
    ];
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for case in 0..3000 {
        let src = match case % 3 {
            // Token soup.
            0 => (0..g.below(60)).map(|_| PIECES[g.below(PIECES.len())]).collect::<Vec<_>>().join(" "),
            // An example with bytes deleted, duplicated or replaced (kept valid UTF-8).
            1 => {
                let mut s: Vec<char> = seeds[g.below(seeds.len())].chars().collect();
                for _ in 0..1 + g.below(8) {
                    let i = g.below(s.len().max(1));
                    match g.below(3) {
                        0 if !s.is_empty() => {
                            s.remove(i.min(s.len() - 1));
                        }
                        1 => s.insert(i, PIECES[g.below(PIECES.len())].chars().next().unwrap_or(' ')),
                        _ if !s.is_empty() => {
                            let j = g.below(s.len());
                            let (k, c) = (i.min(s.len() - 1), s[j]);
                            s[k] = c;
                        }
                        _ => {}
                    }
                }
                s.into_iter().collect()
            }
            // Random bytes, lossily decoded.
            _ => String::from_utf8_lossy(&(0..g.below(200)).map(|_| g.next() as u8).collect::<Vec<_>>()).into_owned(),
        };
        // Must return, Ok or Err, and an Err must render.
        if let Err(e) = dlc_dsl::import_source("fuzz.dlc", &src, Path::new("/nonexistent")) {
            let _ = e.to_string();
        }
    }
}

#[test]
fn pinned_input_shapes_fix_symbolic_dims_everywhere() {
    let src = "model m(x: f32[N, 4]) -> (y: f32[N, 2]) {\n  param w: f32[4, 2] = zeros()\n  return x @ w\n}\n";
    let pins = std::collections::HashMap::from([("x".to_string(), vec![3, 4])]);
    let g = dlc_dsl::import_source_with("t.dlc", src, Path::new("."), &pins).unwrap_or_else(|e| panic!("{e}"));
    let out = g.outputs()[0].1;
    assert_eq!(g.value_type(out).to_string(), "f32[3,2]");
    // Pins that contradict the model are located errors.
    for (pin, msg) in [
        (("x", vec![3, 5]), "t.dlc:1:19"),
        (("x", vec![3]), "t.dlc:1:12"),
        (("z", vec![1]), "--input-shape z: the model has no input 'z'"),
    ] {
        let pins = std::collections::HashMap::from([(pin.0.to_string(), pin.1)]);
        let e = dlc_dsl::import_source_with("t.dlc", src, Path::new("."), &pins).expect_err("bad pin").to_string();
        assert!(e.contains(msg), "{e}");
    }
}
