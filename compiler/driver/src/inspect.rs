//! `dlc inspect`: what a model holds and whether dlc can compile it.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Describe a model: inputs, outputs, ops, parameters, FLOPs and unsupported nodes; or
/// an artifact (its folder or its model.manifest): target, inputs and outputs with their
/// run-time dims and the least value of each, workspace size, files.
///
/// Exits 0 when the model can be compiled, 1 when it has unsupported nodes or errors.
#[derive(Args)]
pub struct InspectArgs {
    /// The model: an .onnx or .dlc file; or an artifact folder (or its model.manifest).
    pub model: PathBuf,
    /// Also print the imported IR.
    #[arg(long)]
    pub ir: bool,
    /// The length of a sequence input, e.g. frames=3, as `dlc compile` takes it (a
    /// sequence input's elements are inputs of their own; docs/sequences.md).
    #[arg(long = "sequence-length", value_name = "NAME=N")]
    pub sequence_lengths: Vec<String>,
    /// An input of optional type taken as absent, as `dlc compile --absent` takes it.
    #[arg(long = "absent", value_name = "NAME")]
    pub absent: Vec<String>,
}

/// One line per optional input compiled absent.
fn print_absent(names: &[String]) {
    for n in names {
        println!("absent      {n:?}: an optional input compiled absent (--absent); runs do not give it");
    }
}

/// One line per sequence input or output: its elements, which the inputs and outputs
/// above list one by one (`NAME[i]`), or, for a sequence whose length only the run knows,
/// the two outputs that hold it (`Err((data, shapes))`).
fn print_sequences<'a>(seqs: impl Iterator<Item = (&'a str, bool, Result<Vec<String>, (String, String)>)>) {
    for (name, output, elements) in seqs {
        let role = if output { "output" } else { "input" };
        match elements {
            Ok(elements) => {
                let list = if elements.is_empty() { "no elements".to_string() } else { elements.join(", ") };
                println!("sequence    {name:?} ({role}): {} element(s): {list}", elements.len());
            }
            Err((data, shapes)) => println!(
                "sequence    {name:?} ({role}): a length only the run knows: element i is row i of {data:?}, cut to \
                 the dims in row i of {shapes:?} (-1: a leading dim the element lacks)"
            ),
        }
    }
}

pub fn main(a: InspectArgs) -> Result<()> {
    if a.model.extension().is_some_and(|e| e == "dlc") {
        return inspect_graph(&a);
    }
    if a.model.is_dir() || a.model.file_name().is_some_and(|f| f == dlc_artifact::files::MANIFEST) {
        return inspect_artifact(&a);
    }
    let proto = dlc_onnx::read_model(&a.model)?;
    let s = dlc_onnx::summarize(&proto);
    println!("model       {}", a.model.display());
    println!("producer    {}", if s.producer.is_empty() { "-" } else { &s.producer });
    println!("opset       {}", s.opset);
    println!("parameters  {} ({:.2} MiB)", s.parameters, s.weight_bytes as f64 / (1 << 20) as f64);
    println!("ops         {} nodes", s.op_counts.values().sum::<usize>());
    for (op, n) in &s.op_counts {
        println!("  {op:<24} {n}");
    }
    if !s.unsupported.is_empty() {
        println!("unsupported {} node(s):", s.unsupported.len());
        for u in &s.unsupported {
            println!("  {u}");
        }
        anyhow::bail!("'{}' has {} unsupported node(s)", a.model.display(), s.unsupported.len());
    }
    let pins = dlc_onnx::ImportOptions {
        sequence_lengths: crate::compile::parse_sequence_lengths(&a.sequence_lengths)?,
        absent: crate::compile::parse_absent(&a.absent)?,
        ..Default::default()
    };
    let g = crate::compile::load_model_pinned(&a.model, pins)?;
    for &id in g.inputs() {
        println!("input       {:?}: {}", g.node(id).name, g.node(id).outputs[0]);
    }
    for (name, v) in g.outputs() {
        println!("output      {name:?}: {}", g.value_type(*v));
    }
    print_absent(&g.absent_inputs);
    print_sequences(g.sequences.iter().map(|s| {
        (
            s.name.as_str(),
            s.output,
            match s.padded {
                true => Err((s.name.clone(), dlc_ir::sequence_shapes_name(&s.name))),
                false => Ok((0..s.len).map(|i| format!("{:?}", dlc_ir::sequence_element_name(&s.name, i))).collect()),
            },
        )
    }));
    let st = dlc_passes::graph_stats(&g);
    print_symbols_and_flops(&g, &st);
    if a.ir {
        print!("{}", dlc_ir::print_graph(&g)?);
    }
    Ok(())
}

/// An artifact, from its manifest.
fn inspect_artifact(a: &InspectArgs) -> Result<()> {
    let dir = if a.model.is_dir() { a.model.as_path() } else { a.model.parent().unwrap_or(std::path::Path::new(".")) };
    let m = dlc_artifact::Manifest::read_dir(dir)?;
    println!("artifact    {}", dir.display());
    println!("model       {} ({})", m.model_name, m.compiler_version);
    println!("target      {} ({})", m.target_triple, m.cpu);
    // A string tensor's two buffers say so (docs/strings.md).
    let role = |t: &dlc_artifact::TensorSpec| match t.encoding.as_str() {
        dlc_artifact::STRING_TABLE => "  (string tensor: start and end byte of each element)",
        dlc_artifact::STRING_BYTES => "  (its UTF-8 bytes)",
        _ => "",
    };
    for t in &m.inputs {
        println!("input       {:?}: {}{}{}", t.name, t.dtype, t.shape_string(), role(t));
    }
    for t in &m.outputs {
        let max = if t.max_bytes.is_empty() { String::new() } else { format!(" (allocated: {} bytes)", t.max_bytes) };
        println!("output      {:?}: {}{}{max}{}", t.name, t.dtype, t.shape_string(), role(t));
    }
    print_absent(&m.absent_inputs);
    for n in &m.optional_outputs {
        println!(
            "optional    {n:?}: present only when output {:?} is true (an optional the run decides)",
            dlc_ir::optional_present_name(n)
        );
    }
    print_sequences(m.sequences.iter().map(|s| {
        let elements = match s.data.is_empty() {
            true => Ok(s.elements.iter().map(|e| format!("{e:?}")).collect()),
            false => Err((s.data.clone(), s.shapes.clone())),
        };
        (s.name.as_str(), s.output, elements)
    }));
    for s in &m.symbols {
        if s.computed {
            println!(
                "symbol      {}: computed from the inputs' values before the run (sizes buffers, no bound)",
                s.name
            );
        } else if s.data {
            println!("symbol      {}: computed at run time from tensor values", s.name);
        } else {
            println!("symbol      {} >= {}", s.name, s.min);
        }
    }
    if !m.binds.is_empty() {
        println!("computes    shapes from tensor values at nodes {}", m.binds.join(", "));
    }
    for c in &m.constraints {
        println!("requires    {} == {} (node '{}')", c.lhs, c.rhs, c.node);
    }
    if m.arena_expr.is_empty() {
        println!("workspace   {} bytes", m.arena_bytes);
    } else {
        println!("workspace   {} bytes", m.arena_expr);
    }
    println!("weights     {:.2} MiB (sha256 {})", m.weight_bytes as f64 / (1 << 20) as f64, m.weights_sha256);
    println!("files       {}", m.files.join(", "));
    Ok(())
}

/// A `.dlc` model, described from the graph it lowers to (errors are its diagnostics).
fn inspect_graph(a: &InspectArgs) -> Result<()> {
    let g = crate::compile::load_model(&a.model, Default::default())?;
    let st = dlc_passes::graph_stats(&g);
    let mut ops: std::collections::BTreeMap<&str, usize> = Default::default();
    for id in g.node_ids() {
        if g.node(id).op.kind() != dlc_ir::OpKind::Source {
            *ops.entry(g.node(id).op.mnemonic()).or_default() += 1;
        }
    }
    println!("model       {}", a.model.display());
    println!("parameters  {} ({:.2} MiB)", st.parameters, st.weight_bytes as f64 / (1 << 20) as f64);
    println!("ops         {} nodes", ops.values().sum::<usize>());
    for (op, n) in &ops {
        println!("  {op:<24} {n}");
    }
    for &id in g.inputs() {
        println!("input       {:?}: {}", g.node(id).name, g.node(id).outputs[0]);
    }
    for (name, v) in g.outputs() {
        println!("output      {name:?}: {}", g.value_type(*v));
    }
    print_symbols_and_flops(&g, &st);
    if a.ir {
        print!("{}", dlc_ir::print_graph(&g)?);
    }
    Ok(())
}

/// The run-time dims (with what the model requires of them) and the FLOPs.
fn print_symbols_and_flops(g: &dlc_ir::Graph, st: &dlc_passes::GraphStats) {
    if st.symbols.is_empty() {
        println!("flops       {} per inference", crate::human_flops(st.flops));
        return;
    }
    let mins = dlc_ir::implied::symbol_minimums(g);
    let maxima = dlc_ir::bind::symbol_maxima(g).unwrap_or_default();
    for sym in &st.symbols {
        // A dim computed from tensor values while the model runs.
        let binder = g.node_ids().into_iter().find(|&id| match &g.node(id).op {
            dlc_ir::Op::Bind(b) => b.symbols().any(|s| s == sym),
            _ => false,
        });
        if let Some(id) = binder {
            let (node, rule) = match &g.node(id).op {
                dlc_ir::Op::Bind(b) => (&g.node(id).name, b.rule.as_str()),
                _ => continue,
            };
            let max = maxima.get(sym).map(|m| format!(", at most {m}")).unwrap_or_default();
            println!("symbol      {sym}: computed at run time by node '{node}' ({rule}) from tensor values{max}");
            continue;
        }
        // Where it is read from: every input dim that is exactly this symbol (inputs
        // sharing it must agree at run time).
        let mut at = Vec::new();
        for &id in g.inputs() {
            for (i, d) in g.node(id).outputs[0].shape.0.iter().enumerate() {
                if d.expr() == dlc_ir::Expr::sym(sym.clone()) {
                    at.push(format!("{:?} dim {i}", g.node(id).name));
                }
            }
        }
        let from = if at.is_empty() { "derived".to_string() } else { at.join(", ") };
        let agree = if at.len() > 1 { " (must agree)" } else { "" };
        let (min, why) = match mins.get(sym) {
            Some((m, node)) => (*m, format!("; the window of node '{node}' needs {sym} >= {m}")),
            None => (0, String::new()),
        };
        println!("symbol      {sym} >= {min}, run-time dim of {from}{agree}{why}");
    }
    for c in dlc_ir::implied::constraints(g).unwrap_or_default() {
        println!("requires    {} == {} (node '{}')", c.lhs, c.rhs, c.node);
    }
    let ones: Vec<String> = st.symbols.iter().map(|s| format!("{s}=1")).collect();
    println!("flops       {} per inference at {}", crate::human_flops(st.flops), ones.join(", "));
}
