//! Every malformed program gets located diagnostics: the rendered text (file, line and
//! column, the span underlined, a help line) is snapshot-tested per case.
use std::path::Path;

/// Writes a safetensors file with `fc.weight` f32[4, 3] and `fc.bias` f32[3].
fn weights_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let w: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = (0..3).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let views = vec![
        ("fc.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 3], &w).expect("view")),
        ("fc.bias", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &b).expect("view")),
    ];
    safetensors::serialize_to_file(views, None, &dir.path().join("w.safetensors")).expect("write");
    dir
}

fn render(name: &str, src: &str, dir: &Path) -> String {
    match dlc_dsl::import_source(&format!("{name}.dlc"), src, dir) {
        Ok(g) => panic!("{name}: expected errors, got a graph:\n{:?}", dlc_ir::print_graph(&g)),
        Err(e) => e.to_string(),
    }
}

const HEAD: &str = "model m(x: f32[2, 4]) -> (y: f32[2, 3]) {\n";

/// (name, program): each must fail, every error located.
fn cases() -> Vec<(&'static str, String)> {
    let body = |b: &str| format!("{HEAD}{b}}}\n");
    vec![
        ("syntax_missing_operand", body("  let h = relu(x @ )\n  return h\n")),
        ("syntax_several_errors", body("  let = 3\n  let h = relu(x))\n  return h $ 2\n")),
        ("syntax_unterminated_string", format!("weights \"w.safetensors\n{HEAD}  return x\n}}\n")),
        ("syntax_unclosed_body", format!("{HEAD}  return relu(x)\n")),
        ("syntax_missing_arrow", "model m(x: f32[2]) (y: f32[2]) {\n  return x\n}\n".to_string()),
        ("syntax_keyword_as_name", body("  let model = relu(x)\n  return model\n")),
        ("syntax_positional_after_keyword", body("  let h = softmax(axis=1, x)\n  return h\n")),
        ("syntax_bad_item", "let x = 3\nmodel m(x: f32[2]) -> (y: f32[2]) {\n  return x\n}\n".to_string()),
        ("unknown_name", body("  param w: f32[4, 3] = normal(seed=1)\n  return x @ wq\n")),
        ("unknown_op", body("  let h = relux(x)\n  return h\n")),
        ("unknown_attribute", body("  let h = softmax(x, axes=1)\n  return h\n")),
        ("attribute_wrong_kind", body("  let h = softmax(x, axis=\"last\")\n  return h\n")),
        ("attribute_missing", body("  let h = cast(x)\n  return h\n")),
        ("operand_count", body("  let h = relu(x, x)\n  return h\n")),
        ("shape_mismatch", body("  param w: f32[3, 3] = normal(seed=1)\n  return x @ w\n")),
        ("dtype_mismatch", "model m(x: f32[2, 3], i: i64[2, 3]) -> (y: f32[2, 3]) {\n  return x + i\n}\n".to_string()),
        ("unknown_dtype", "model m(x: float32[2, 3]) -> (y: f32[2, 3]) {\n  return x\n}\n".to_string()),
        (
            "missing_weight",
            format!("weights \"w.safetensors\"\n{HEAD}  param w: f32[4, 3] from \"fc.weights\"\n  return x @ w\n}}\n"),
        ),
        (
            "wrong_weight_shape",
            format!("weights \"w.safetensors\"\n{HEAD}  param w: f32[3, 4] from \"fc.weight\"\n  return x @ w\n}}\n"),
        ),
        (
            "wrong_weight_dtype",
            format!("weights \"w.safetensors\"\n{HEAD}  param w: f64[4, 3] from \"fc.weight\"\n  return x @ w\n}}\n"),
        ),
        ("weights_file_missing", format!("weights \"nope.safetensors\"\n{HEAD}  return x\n}}\n")),
        ("no_weights_line", body("  param w: f32[4, 3] from \"fc.weight\"\n  return x @ w\n")),
        ("output_type_mismatch", body("  return x\n")),
        ("return_count", body("  param w: f32[4, 3] = zeros()\n  return x @ w, x @ w\n")),
        ("defined_twice", body("  param w: f32[4, 3] = zeros()\n  let w = relu(x)\n  return x @ w\n")),
        ("unknown_initialiser", body("  param w: f32[4, 3] = gaussian(seed=1)\n  return x @ w\n")),
        ("initialiser_argument", body("  param w: f32[4, 3] = normal(seed=1, sigma=2)\n  return x @ w\n")),
        (
            "function_arity",
            format!("fn f(a, b) {{\n  return a + b\n}}\n{HEAD}  param w: f32[4, 3] = zeros()\n  return f(x @ w)\n}}\n"),
        ),
        (
            "function_without_return",
            format!("fn f(a) {{\n  let b = relu(a)\n}}\n{HEAD}  param w: f32[4, 3] = zeros()\n  return f(x @ w)\n}}\n"),
        ),
        ("statement_after_return", body("  param w: f32[4, 3] = zeros()\n  return x @ w\n  let z = relu(x)\n")),
        (
            "recursion",
            format!("fn f(a) {{\n  return f(a)\n}}\n{HEAD}  param w: f32[4, 3] = zeros()\n  return f(x @ w)\n}}\n"),
        ),
        ("no_model", "fn f(a) {\n  return a\n}\n".to_string()),
        ("two_models", format!("{HEAD}  return x\n}}\nmodel n(x: f32[2]) -> (y: f32[2]) {{\n  return x\n}}\n")),
        ("not_callable", body("  let h = input(x)\n  return h\n")),
        ("literal_operand", body("  param w: f32[4, 3] = zeros()\n  return x @ w + \"one\"\n")),
        ("parameter_too_large", body("  param w: f32[4000000000, 4000000000, 3] = zeros()\n  return x\n")),
        // The dsl fuzz target's slow input (100M seeded normals took over 10 s on Zen 1):
        // refused at once, above the initialisers' 2^24 elements.
        ("initialiser_over_limit", body("  param w: f32[784, 12828, 10] = normal(seed=2, std=1.1)\n  return x\n")),
    ]
}

#[test]
fn malformed_programs_get_located_diagnostics() {
    let dir = weights_dir();
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/diagnostics");
    settings.bind(|| {
        for (name, src) in cases() {
            let text = render(name, &src, dir.path());
            // Every error points into the file: `name.dlc:LINE:COL`.
            assert!(text.contains(&format!("{name}.dlc:")), "{name}: no location in\n{text}");
            insta::assert_snapshot!(name, format!("{src}\n---\n{text}"));
        }
    });
    assert!(cases().len() >= 20);
}
