//! One snapshot per model under filetests/onnx: the canonical IR after import and after
//! the default pipeline, or the rendered error for models dlc must reject.
use dlc_passes::{default_pipeline, run_pipeline, PassCx};
use std::path::Path;

fn render(path: &Path) -> String {
    let g = match dlc_onnx::import(path, &Default::default()) {
        Ok(g) => g,
        Err(e) => {
            // Paths differ between checkouts; show the file name only.
            let text = e.to_string();
            let full = path.display().to_string();
            return format!("error: {}", text.replace(&full, path.file_name().unwrap().to_str().unwrap()));
        }
    };
    let mut out = String::from("// after import\n");
    out += &dlc_ir::print_graph(&g).expect("prints");
    let mut g2 = g.clone();
    run_pipeline(&mut g2, &default_pipeline(), &mut PassCx::default()).expect("pipeline keeps the graph valid");
    out += "// after default pipeline\n";
    out += &dlc_ir::print_graph(&g2).expect("prints");
    out
}

#[test]
fn onnx_models_import_to_expected_ir() {
    insta::glob!("../filetests/onnx", "*.onnx", |path| {
        insta::assert_snapshot!(render(path));
    });
}

#[test]
fn printing_is_deterministic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests/onnx/conv_variants.onnx");
    let a = render(&path);
    let b = render(&path);
    assert_eq!(a, b);
}
