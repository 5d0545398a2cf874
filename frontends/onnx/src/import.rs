//! Model-level import: inputs, initializers, nodes in order, outputs.
use crate::error::{OnnxError, UnsupportedNode};
use crate::ops::{registry, NodeCx};
use crate::tensor::{dtype_from_onnx, onnx_type_name, tensor_from_proto};
use dlc_ir::{DType, Dim, Graph, Shape, TensorData, TensorType, Value};
use onnx_protobuf::{type_proto, Message, ModelProto, NodeProto};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The most elements a sequence input may have (each is an input of its own).
pub const MAX_SEQUENCE_LENGTH: usize = 4096;

/// Options for [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Pins input shapes by input name (overrides symbolic or fixed dims).
    pub input_shapes: HashMap<String, Vec<u64>>,
    /// Pins run-time dims by symbol name (as dlc names them: `dlc inspect` lists them),
    /// wherever the inputs use them; the other dims stay symbolic.
    pub dims: HashMap<String, u64>,
    /// The length of each model input that is a sequence of tensors, by input name: dlc
    /// compiles a sequence of a fixed length, whose elements are inputs of their own
    /// (`x[0]`, `x[1]`, ...; docs/sequences.md).
    pub sequence_lengths: HashMap<String, usize>,
    /// Model inputs of optional type compiled as absent (empty optionals): the artifact
    /// does not take them (`--absent`, docs/sequences.md). Any other optional input is
    /// a tensor (or sequence) the caller always gives.
    pub absent: std::collections::BTreeSet<String>,
    /// Import into ONNX's own ops where dlc would use a kernel of its own that ONNX has
    /// no op for (the int8 products' `int_matmul` and `patches`: the exact f32 form
    /// instead), so the graph can be written back as ONNX (`dlc export`).
    pub onnx_ops_only: bool,
}

/// Reads and decodes an ONNX file.
pub fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_path_buf(), source })?;
    decode_model(&bytes, path)
}

/// Decodes the bytes of an ONNX file; `path` names it in errors.
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<ModelProto, OnnxError> {
    crate::wire::check_groups(bytes).map_err(|message| OnnxError::Parse { path: path.to_path_buf(), message })?;
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| OnnxError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    if model.graph.is_none() {
        return Err(OnnxError::Parse { path: path.to_path_buf(), message: "the model has no graph".into() });
    }
    Ok(model)
}

/// The opset version a model imports for `domain` (the default domain is `""`/`ai.onnx`).
fn opset_of(model: &ModelProto, domain: &str) -> i64 {
    let norm = |d: &str| if d.is_empty() { "ai.onnx".to_string() } else { d.to_string() };
    model.opset_import.iter().find(|o| norm(&o.domain) == norm(domain)).map(|o| o.version).unwrap_or(0)
}

pub(crate) fn node_display_name(n: &NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

/// What ONNX's checker refuses of the model as a whole: a default-domain opset that is
/// missing (when nodes use the domain) or outside what dlc supports, and a value name
/// defined twice (two nodes writing it, or a node writing a graph input or initializer).
fn check_model(path: &Path, model: &ModelProto) -> Result<(), OnnxError> {
    let err = |message: String| OnnxError::Model { path: path.to_path_buf(), message };
    let graph = model.graph.as_ref().expect("read_model checks the graph");
    let default = |d: &str| matches!(d, "" | "ai.onnx");
    let declared = model.opset_import.iter().find(|o| default(&o.domain)).map(|o| o.version);
    let used = graph.node.iter().any(|n| default(&n.domain));
    crate::validate::check_opset(declared, used).map_err(err)?;
    let mut defined: HashMap<&str, String> = HashMap::new();
    for v in graph.input.iter().map(|i| i.name.as_str()).chain(graph.initializer.iter().map(|t| t.name.as_str())) {
        defined.insert(v, "a graph input or initializer".into());
    }
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            let this = format!("node '{}'", node_display_name(n, i));
            if let Some(first) = defined.insert(o.as_str(), this.clone()) {
                return Err(err(format!("value '{o}' is defined twice: by {first} and by {this}")));
            }
        }
    }
    Ok(())
}

/// Every node of `model` that dlc cannot import, in graph order.
fn unsupported_nodes(model: &ModelProto) -> Vec<UnsupportedNode> {
    let reg = registry();
    let graph = model.graph.as_ref().expect("read_model checks the graph");
    graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| !reg.contains_key(crate::ops::registry_key(n).as_str()))
        .map(|(i, n)| UnsupportedNode {
            name: node_display_name(n, i),
            op_type: n.op_type.clone(),
            domain: if n.domain.is_empty() { "ai.onnx".into() } else { n.domain.clone() },
            opset: opset_of(model, &n.domain),
        })
        .collect()
}

/// What `dlc inspect` shows of a model without importing it.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    /// Default-domain opset.
    pub opset: i64,
    /// Producer name and version.
    pub producer: String,
    /// Op type -> count, sorted by op type.
    pub op_counts: BTreeMap<String, usize>,
    /// Number of scalar parameters in initializers.
    pub parameters: u64,
    /// Bytes of initializer data.
    pub weight_bytes: u64,
    /// Nodes dlc cannot import.
    pub unsupported: Vec<UnsupportedNode>,
}

/// Summarises a decoded model.
pub fn summarize(model: &ModelProto) -> ModelSummary {
    let graph = model.graph.as_ref().expect("read_model checks the graph");
    let mut op_counts = BTreeMap::new();
    for n in &graph.node {
        *op_counts.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    let mut parameters = 0;
    let mut weight_bytes = 0;
    for t in &graph.initializer {
        let n: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
        parameters += n;
        weight_bytes += n * dtype_from_onnx(t.data_type).map(|d| d.size() as u64).unwrap_or(0);
    }
    ModelSummary {
        opset: opset_of(model, ""),
        producer: format!("{} {}", model.producer_name, model.producer_version).trim().to_string(),
        op_counts,
        parameters,
        weight_bytes,
        unsupported: unsupported_nodes(model),
    }
}

/// Imports the ONNX file at `path`.
pub fn import(path: &Path, opts: &ImportOptions) -> Result<Graph, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_path_buf(), source })?;
    import_bytes(&bytes, path, opts)
}

/// Imports an ONNX model from its bytes; `path` names it in errors, and external data
/// resolves beside it.
pub fn import_bytes(bytes: &[u8], path: &Path, opts: &ImportOptions) -> Result<Graph, OnnxError> {
    let model = decode_model(bytes, path)?;
    check_model(path, &model)?;
    let unsupported = unsupported_nodes(&model);
    if !unsupported.is_empty() {
        return Err(OnnxError::Unsupported { path: path.to_path_buf(), nodes: unsupported });
    }
    Importer::new(path, &model).run(opts)
}

/// Clone: a Loop that might run as a loop of the model is tried on a copy, and the copy
/// kept when it cannot (`ops::control::unrolled_loop`).
#[derive(Clone)]
pub(crate) struct Importer<'m> {
    pub path: PathBuf,
    pub base: PathBuf,
    pub model: &'m ModelProto,
    pub graph: Graph,
    /// ONNX value name -> IR value.
    pub values: HashMap<String, Value>,
    /// Initializers not yet materialised as Const nodes.
    pub initializers: HashMap<String, TensorData>,
    /// Constant contents of values, for ops whose operands must be known (Reshape shape).
    pub known: HashMap<Value, TensorData>,
    /// ONNX value name -> shape computed from run-time dims (`ops::shapes`): never an
    /// IR value, only the ops of `ops::shapes` read it.
    pub shape_values: HashMap<String, crate::ops::shapes::ShapeVal>,
    /// ONNX value name -> the elements of a sequence of known length (`ops::sequence`).
    pub sequences: HashMap<String, Vec<Value>>,
    /// ONNX value name -> a sequence whose length only the run knows (`ops::sequence`).
    pub(crate) run_sequences: HashMap<String, crate::ops::sequence::RunSeq>,
    /// While importing the body of a Loop that runs as a loop of the model: the values
    /// that stand, as the first element of a sequence, for the elements a carried
    /// sequence had when the iteration began (unknown then; `ops::control::loop_outs`).
    /// Only appending to such a sequence, or passing it on, is allowed
    /// (`ops::sequence`'s `seq` refuses the rest; a node that reads the value fails the
    /// check after the body).
    pub(crate) carried_prefixes: std::collections::HashSet<Value>,
    /// Values whose rank only the run decides (an If on a run-time condition whose
    /// branches give `f32[]` and `f32[1]`): typed at the higher rank, they may have this
    /// lower one (fewer leading dims of 1). Only ops whose result is the same either way
    /// take them (`ops::control::rank_of_uses`).
    pub(crate) rank_may_be: HashMap<Value, usize>,
    /// ONNX value name -> the presence flag (a bool scalar) of an optional whose presence
    /// only the run knows; its element is under the same name (`ops::optional`).
    pub(crate) run_optionals: HashMap<String, Value>,
    /// ONNX value names of empty optionals (`ops::optional`).
    pub absent: std::collections::HashSet<String>,
    /// ONNX value name -> a string tensor's table and bytes (`ops::strings`).
    pub strings: HashMap<String, crate::ops::strings::StrVal>,
    /// The shape values that a Cast made floats (their elements are still the integral
    /// dims; `Range` over one counts in f32).
    pub shape_dtypes: HashMap<String, dlc_ir::DType>,
    /// Float shape values divided by a positive integer constant (`h / 32.0`), by name:
    /// the value is the elements over the divisor, which a `Ceil` or `Floor` makes dims
    /// again (`ceil(h / 32) * 32`, a padding to whole strides); any other use computes
    /// the quotient as data (`ops::shapes`).
    pub float_quotients: HashMap<String, i64>,
    /// I64 vectors computed from shape values (`ops::shapes::shape_tensor`), by IR value:
    /// their elements as dim expressions, which a vector of extents built from them
    /// keeps (`ops::bind::computed_dims`).
    pub(crate) dim_tensors: HashMap<Value, Vec<dlc_ir::Expr>>,
    /// The shape values that are 2-D, `[len / cols, cols]` by name: the pairs of a
    /// padding `torch.onnx` reorders (`ops::shapes`).
    pub shape_cols: HashMap<String, usize>,
    /// The run-time dims of the inputs (named in messages that could be fixed by pinning).
    pub(crate) symbols: Vec<String>,
    /// While importing a branch of an `If` whose condition is known only at run time
    /// (computed speculatively, see `ops::control`): the conditions under which the
    /// branch is taken, each a bool scalar value and the polarity (true: then-branch).
    pub guards: Vec<(Value, bool)>,
    /// ONNX value name -> `(a, b)` for a bool that compares two dims only a run decides
    /// (`Equal` of shape values, computed while the model runs): an `If` on it whose
    /// branches cannot be merged takes its then-branch as a checked assumption
    /// (`ops::control`).
    pub dim_conditions: HashMap<String, (dlc_ir::Expr, dlc_ir::Expr)>,
    /// While importing an expansion written at a newer opset ([`crate::ops`]'s
    /// `expand_at`): the default domain's opset is at least this.
    pub opset_at_least: Option<i64>,
    /// [`ImportOptions::onnx_ops_only`].
    pub onnx_ops_only: bool,
    /// The f32 result of a DequantizeLinear with a constant scale -> its codes, scale
    /// and zero point (`ops::quant`: a Conv of two such values runs on the int8 kernels).
    pub(crate) dequantized: HashMap<Value, crate::ops::quant::Dequantized>,
}

impl<'m> Importer<'m> {
    pub(crate) fn new(path: &Path, model: &'m ModelProto) -> Self {
        let name = model
            .graph
            .as_ref()
            .map(|g| g.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        Importer {
            path: path.to_path_buf(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            model,
            graph: Graph::new(name),
            values: HashMap::new(),
            initializers: HashMap::new(),
            known: HashMap::new(),
            shape_values: HashMap::new(),
            sequences: HashMap::new(),
            run_sequences: HashMap::new(),
            carried_prefixes: Default::default(),
            rank_may_be: HashMap::new(),
            run_optionals: HashMap::new(),
            strings: HashMap::new(),
            absent: Default::default(),
            shape_dtypes: Default::default(),
            float_quotients: Default::default(),
            dim_tensors: Default::default(),
            shape_cols: Default::default(),
            symbols: Vec::new(),
            guards: Vec::new(),
            dim_conditions: HashMap::new(),
            opset_at_least: None,
            onnx_ops_only: false,
            dequantized: HashMap::new(),
        }
    }

    fn model_err(&self, message: impl Into<String>) -> OnnxError {
        OnnxError::Model { path: self.path.clone(), message: message.into() }
    }

    fn run(mut self, opts: &ImportOptions) -> Result<Graph, OnnxError> {
        self.onnx_ops_only = opts.onnx_ops_only;
        let graph = self.model.graph.as_ref().expect("read_model checks the graph");
        for t in &graph.initializer {
            if t.data_type == 8 {
                let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
                let s = crate::ops::strings::constant(&mut self.graph, &mut self.known, &t.name, &dims, &t.string_data)
                    .map_err(|m| self.model_err(format!("initializer: {m}")))?;
                self.strings.insert(t.name.clone(), s);
                continue;
            }
            let data = tensor_from_proto(t, &self.base).map_err(|m| self.model_err(format!("initializer: {m}")))?;
            self.initializers.insert(t.name.clone(), data);
        }
        let mut pins = Pins::default();
        let mut sequences_used = 0;
        for vi in &graph.input {
            // A graph input that is also an initializer is a constant with a default value
            // (IR version < 4 lists every weight as an input); dlc treats it as a constant.
            if self.initializers.contains_key(&vi.name) || self.strings.contains_key(&vi.name) {
                continue;
            }
            if opts.absent.contains(&vi.name) {
                if !is_optional(vi) {
                    return Err(self.model_err(format!(
                        "--absent {}: input '{}' is not of optional type, so it cannot be absent",
                        vi.name, vi.name
                    )));
                }
                self.absent.insert(vi.name.clone());
                self.graph.absent_inputs.push(vi.name.clone());
                continue;
            }
            if let Some(elem) = sequence_element_type(vi) {
                let Some(&n) = opts.sequence_lengths.get(&vi.name) else {
                    return Err(self.model_err(format!(
                        "input '{}' is a sequence of tensors; dlc compiles a sequence of a fixed length: give it with \
                         --sequence-length {}=N (its elements are then inputs '{}', '{}', ...)",
                        vi.name,
                        vi.name,
                        dlc_ir::sequence_element_name(&vi.name, 0),
                        dlc_ir::sequence_element_name(&vi.name, 1)
                    )));
                };
                sequences_used += 1;
                if n > MAX_SEQUENCE_LENGTH {
                    return Err(self.model_err(format!(
                        "--sequence-length {}={n}: more elements than dlc allows ({MAX_SEQUENCE_LENGTH}; each is an \
                         input of its own)",
                        vi.name
                    )));
                }
                let mut elems = Vec::with_capacity(n);
                for i in 0..n {
                    let name = dlc_ir::sequence_element_name(&vi.name, i);
                    if graph.input.iter().chain(&graph.output).any(|o| o.name == name) {
                        return Err(self.model_err(format!(
                            "input '{}' is a sequence, whose element {i} dlc takes as input '{name}', which names \
                             another input or output",
                            vi.name
                        )));
                    }
                    let tag = format!("{}_{i}", vi.name);
                    let mut ty = self.tensor_type(&name, elem, Some(&tag), &opts.input_shapes)?;
                    self.pin(&name, &mut ty, opts, &mut pins)?;
                    elems.push(self.graph.add_input(name, ty));
                }
                self.sequences.insert(vi.name.clone(), elems);
                self.graph.sequences.push(dlc_ir::SequenceIo {
                    name: vi.name.clone(),
                    output: false,
                    len: n,
                    padded: false,
                });
                continue;
            }
            let string = is_string(vi);
            let mut ty = self.value_info_type(vi, &opts.input_shapes)?;
            self.pin(&vi.name, &mut ty, opts, &mut pins)?;
            if string {
                // Its element table, then its bytes (docs/strings.md).
                ty.shape.0.push(Dim::Fixed(2));
                let table = self.graph.add_input(vi.name.clone(), ty);
                let names = graph.input.iter().map(|i| i.name.as_str());
                let bytes_name = self.string_bytes_name(&vi.name, "input", "passes", names)?;
                let n = Dim::sym(symbol_name(&format!("{}_bytes", vi.name)));
                let bytes = self.graph.add_input(bytes_name, TensorType { dtype: DType::U8, shape: Shape(vec![n]) });
                self.strings.insert(vi.name.clone(), crate::ops::strings::StrVal { table, bytes });
                self.graph.strings.insert(vi.name.clone());
                continue;
            }
            let v = self.graph.add_input(vi.name.clone(), ty);
            self.values.insert(vi.name.clone(), v);
        }
        if let Some(unknown) = opts.absent.iter().find(|n| !self.graph.absent_inputs.contains(n)) {
            let optional: Vec<&str> = graph
                .input
                .iter()
                .filter(|i| is_optional(i) && !self.initializers.contains_key(&i.name))
                .map(|i| i.name.as_str())
                .collect();
            return Err(self.model_err(format!(
                "--absent {unknown}: the model has no optional input of that name (without a default value); its \
                 optional inputs are {optional:?}"
            )));
        }
        if sequences_used != opts.sequence_lengths.len() {
            let seqs: Vec<&str> =
                graph.input.iter().filter(|i| sequence_element_type(i).is_some()).map(|i| i.name.as_str()).collect();
            let unknown: Vec<&String> = opts.sequence_lengths.keys().filter(|k| !seqs.contains(&k.as_str())).collect();
            return Err(self.model_err(format!(
                "--sequence-length names {unknown:?}, which are not sequence inputs; the model's are {seqs:?}"
            )));
        }
        let Pins { used: pinned_used, dims_used, mut symbols_seen } = pins;
        if let Some(unknown) = opts.dims.keys().find(|k| !dims_used.contains(*k)) {
            symbols_seen.dedup();
            return Err(self.model_err(format!(
                "--dim {unknown}: the inputs have no run-time dim of that name; theirs are {symbols_seen:?}"
            )));
        }
        if pinned_used != opts.input_shapes.len() {
            let names: Vec<String> = self.graph.inputs().iter().map(|&id| self.graph.node(id).name.clone()).collect();
            let unknown: Vec<&String> = opts.input_shapes.keys().filter(|k| !names.contains(k)).collect();
            return Err(
                self.model_err(format!("--input-shape names unknown input(s) {unknown:?}; inputs are {names:?}"))
            );
        }
        // The run-time dims of the inputs, to suggest pinning one where a shape rule fails
        // on an expression of them.
        let mut symbols = Vec::new();
        for &id in self.graph.inputs() {
            for d in &self.graph.node(id).outputs[0].shape.0 {
                d.expr().symbols(&mut symbols);
            }
        }
        self.symbols = symbols;
        self.import_nodes(&graph.node, "")?;
        for vi in &graph.output {
            if let Some(s) = self.shape_values.get(&vi.name) {
                let dims: Vec<String> = s.elems.iter().map(|e| e.to_string()).collect();
                return Err(self.model_err(format!(
                    "graph output '{}' is a shape of run-time dims [{}], which dlc cannot return yet",
                    vi.name,
                    dims.join(", ")
                )));
            }
            if let Some(s) = self.strings.get(&vi.name).copied() {
                // Its element table, then its bytes (docs/strings.md); a model input
                // returned as it is goes through an Identity node (`own_output`).
                let table = self.own_output(s.table, &vi.name)?;
                let names = graph.output.iter().map(|o| o.name.as_str());
                let bytes_name = self.string_bytes_name(&vi.name, "output", "returns", names)?;
                let bytes = self.own_output(s.bytes, &bytes_name)?;
                self.graph.add_output(vi.name.clone(), table);
                self.graph.add_output(bytes_name, bytes);
                self.graph.strings.insert(vi.name.clone());
                continue;
            }
            if let Some(s) = self.run_sequences.get(&vi.name).cloned() {
                // Two outputs: the elements, each padded to one box, and their dims
                // (docs/sequences.md).
                let shapes_name = dlc_ir::sequence_shapes_name(&vi.name);
                if graph.output.iter().any(|o| o.name == shapes_name) {
                    return Err(self.model_err(format!(
                        "output '{}' is a sequence whose length only the run knows, whose elements' dims dlc \
                         returns as '{shapes_name}', which names another output",
                        vi.name
                    )));
                }
                let data = self.own_output(s.data, &vi.name)?;
                let shapes = self.own_output(s.shapes, &shapes_name)?;
                self.graph.add_output(vi.name.clone(), data);
                self.graph.add_output(shapes_name, shapes);
                self.graph.sequences.push(dlc_ir::SequenceIo {
                    name: vi.name.clone(),
                    output: true,
                    len: 0,
                    padded: true,
                });
                continue;
            }
            if let Some(elems) = self.sequences.get(&vi.name).cloned() {
                if matches!(vi.type_.as_ref().and_then(|t| t.value.as_ref()), Some(type_proto::Value::TensorType(_))) {
                    return Err(self.model_err(format!(
                        "graph output '{}': value '{}' is a sequence, but the output is declared a tensor",
                        vi.name, vi.name
                    )));
                }
                // Each element an output of its own, `y[0]`, `y[1]`, ... (docs/sequences.md).
                for (i, v) in elems.into_iter().enumerate() {
                    let name = dlc_ir::sequence_element_name(&vi.name, i);
                    if graph.output.iter().any(|o| o.name == name) {
                        return Err(self.model_err(format!(
                            "output '{}' is a sequence, whose element {i} dlc returns as '{name}', which names \
                             another output",
                            vi.name
                        )));
                    }
                    let v = self.own_output(v, &name)?;
                    self.graph.add_output(name, v);
                }
                let len = self.sequences[&vi.name].len();
                self.graph.sequences.push(dlc_ir::SequenceIo {
                    name: vi.name.clone(),
                    output: true,
                    len,
                    padded: false,
                });
                continue;
            }
            let v = self.lookup(&vi.name).map_err(|m| self.model_err(format!("graph output '{}': {m}", vi.name)))?;
            crate::ops::control::of_one_rank(&self, v, &format!("graph output '{}'", vi.name))
                .map_err(|m| self.model_err(m))?;
            self.graph.add_output(vi.name.clone(), v);
        }
        // Optional outputs whose presence only the run knows: a bool flag each, after
        // the model's outputs (docs/sequences.md).
        for vi in &graph.output {
            let Some(&flag) = self.run_optionals.get(&vi.name) else { continue };
            let name = dlc_ir::optional_present_name(&vi.name);
            if graph.output.iter().any(|o| o.name == name) {
                return Err(self.model_err(format!(
                    "output '{}' is an optional whose presence dlc returns as '{name}', which names another output",
                    vi.name
                )));
            }
            let flag = self.own_output(flag, &name)?;
            self.graph.add_output(name, flag);
            self.graph.optional_outputs.push(vi.name.clone());
        }
        if self.graph.outputs().is_empty() {
            return Err(self.model_err("the model has no outputs"));
        }
        dlc_ir::verify(&self.graph).map_err(|e| self.model_err(e.to_string()))?;
        Ok(self.graph)
    }

    /// Binds ONNX value `name` to what a node gave, by its kind (an optional whose presence
    /// only the run knows: its element, and its flag in `run_optionals`).
    fn bind(&mut self, name: &str, v: crate::ops::shapes::Out) {
        use crate::ops::shapes::Out;
        let name = name.to_string();
        match v {
            Out::Value(v) => {
                self.values.insert(name, v);
            }
            Out::Shape(s) => {
                self.shape_values.insert(name, s);
            }
            Out::Seq(s) => {
                self.sequences.insert(name, s);
            }
            Out::RunSeq(s) => {
                self.run_sequences.insert(name, s);
            }
            Out::Str(s) => {
                self.strings.insert(name, s);
            }
            Out::Absent => {
                self.absent.insert(name);
            }
            Out::Maybe(inner, flag) => {
                self.run_optionals.insert(name.clone(), flag);
                self.bind(&name, *inner);
            }
        }
    }

    /// Forgets what ONNX value `name` is bound to, whatever kind (a body imported once
    /// per iteration binds its names again).
    pub(crate) fn unbind(&mut self, name: &str) {
        self.values.remove(name);
        self.shape_values.remove(name);
        self.sequences.remove(name);
        self.run_sequences.remove(name);
        self.run_optionals.remove(name);
        self.strings.remove(name);
        self.absent.remove(name);
    }

    /// `v` as a value an output may take: a model input, or a value another output
    /// already returns, through an Identity named after output `name`.
    fn own_output(&mut self, v: Value, name: &str) -> Result<Value, OnnxError> {
        let taken = self.graph.outputs().iter().any(|(_, o)| *o == v);
        if !taken && !matches!(self.graph.node(v.node).op, dlc_ir::Op::Input(_)) {
            return Ok(v);
        }
        self.graph
            .add_node(format!("{name}/output"), dlc_ir::ops::Identity {}, &[v])
            .map(|o| o[0])
            .map_err(|e| self.model_err(e.to_string()))
    }

    /// Imports `nodes` in order (the model's graph, or a subgraph of an `If` whose values
    /// join this scope; `prefix` names the node that holds them in messages).
    pub(crate) fn import_nodes(&mut self, nodes: &[onnx_protobuf::NodeProto], prefix: &str) -> Result<(), OnnxError> {
        let symbols = self.symbols.clone();
        let reg = registry();
        for (i, node) in nodes.iter().enumerate() {
            let name = format!("{prefix}{}", node_display_name(node, i));
            let opset = opset_of(self.model, &node.domain);
            // A function body written at a newer opset than the model's (a contrib op as
            // the ONNX ops that define it).
            let opset = match self.opset_at_least {
                Some(at_least) if node.domain.is_empty() || node.domain == "ai.onnx" => opset.max(at_least),
                _ => opset,
            };
            // (The model's own nodes were checked up front; a subgraph's are here.)
            let Some(&build) = reg.get(crate::ops::registry_key(node).as_str()) else {
                let domain = if node.domain.is_empty() { "ai.onnx" } else { node.domain.as_str() };
                return Err(OnnxError::Node {
                    path: self.path.clone(),
                    node: name,
                    op_type: node.op_type.clone(),
                    message: format!("{} (domain {domain}, opset {opset}) is not supported", node.op_type),
                });
            };
            crate::validate::check_node(node, opset).map_err(|message| OnnxError::Node {
                path: self.path.clone(),
                node: name.clone(),
                op_type: node.op_type.clone(),
                message,
            })?;
            let path = self.path.clone();
            let node_err = |message: String| {
                let named: Vec<&String> = symbols.iter().filter(|s| message.contains(s.as_str())).collect();
                let message = if !named.is_empty() && !message.contains("--input-shape") && !message.contains("--dim") {
                    format!(
                        "{message} (the run-time dims here are {}: pin one with --dim NAME=N, or an input's whole \
                             shape with --input-shape)",
                        named.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )
                } else {
                    message
                };
                OnnxError::Node { path: path.clone(), node: name.clone(), op_type: node.op_type.clone(), message }
            };
            let uses_shape = node.input.iter().any(|n| self.shape_values.contains_key(n));
            // A 2-D mark is the node's to set (`ops::shapes`), not a former binding's.
            for o in &node.output {
                self.shape_cols.remove(o);
                self.float_quotients.remove(o);
            }
            let mut cx = NodeCx { imp: self, node, name: name.clone(), opset };
            use crate::ops::shapes::{self, Out};
            let takes_shape = matches!(node.op_type.as_str(), "Shape" | "Size") && node.domain.is_empty();
            // Arithmetic between a shape value and data known only at run time computes at
            // run time: the shape values become tensors.
            // (GroupQueryAttention reads its total length as a dim expression itself.)
            let uses_shape = uses_shape
                && !crate::ops::gqa::reads_shape_values(node)
                && !crate::ops::control::loop_reads_shape_values(&mut cx).map_err(node_err)?
                && !shapes::materialize_for_data(&mut cx).map_err(node_err)?;
            // A value whose rank the run decides: the lower rank the results may have.
            let lower = crate::ops::control::rank_of_uses(&cx).map_err(node_err)?;
            let outs: Vec<Out> = if crate::ops::optional::applies(&cx) {
                crate::ops::optional::build(&mut cx).map_err(node_err)?
            } else if crate::ops::trees::applies(&cx) {
                crate::ops::trees::classify(&mut cx).map_err(node_err)?
            } else if crate::ops::strings::applies(&cx) {
                crate::ops::strings::build(&mut cx).map_err(node_err)?
            } else if crate::ops::sequence::applies(&cx) {
                crate::ops::sequence::build(&mut cx).map_err(node_err)?
            } else if uses_shape || (takes_shape && shapes::symbolic_shape(&mut cx).map_err(node_err)?) {
                shapes::build(&mut cx).map_err(node_err)?
            } else {
                build(&mut cx).map_err(node_err)?.into_iter().map(Out::Value).collect()
            };
            let wanted: Vec<&String> = node.output.iter().filter(|o| !o.is_empty()).collect();
            if outs.len() < wanted.len() {
                return Err(node_err(format!(
                    "produces {} output(s), the model uses {}; extra outputs are not supported",
                    outs.len(),
                    wanted.len()
                )));
            }
            for (oname, v) in node.output.iter().zip(outs) {
                // A name bound again (a body imported once per iteration) forgets what
                // it was bound to before, whatever kind that was.
                if !oname.is_empty() {
                    self.unbind(oname);
                }
                if !oname.is_empty() {
                    self.bind(oname, v);
                }
            }
            if let Some(r) = lower {
                for o in &node.output {
                    if let Some(&v) = self.values.get(o) {
                        self.rank_may_be.insert(v, r);
                    }
                }
            }
        }
        Ok(())
    }

    fn value_info_type(
        &self,
        vi: &onnx_protobuf::ValueInfoProto,
        pinned: &HashMap<String, Vec<u64>>,
    ) -> Result<TensorType, OnnxError> {
        // An optional tensor input is a tensor the caller always gives, unless compiled
        // absent (`ImportOptions::absent`, handled before this).
        let value = vi.type_.as_ref().and_then(|t| t.value.as_ref());
        let value = match value {
            Some(type_proto::Value::OptionalType(o)) => o.elem_type.as_ref().and_then(|t| t.value.as_ref()),
            v => v,
        };
        let Some(type_proto::Value::TensorType(t)) = value else {
            return Err(self.model_err(format!(
                "input '{}' is not a tensor or a sequence of tensors (maps are \
                 unsupported)",
                vi.name
            )));
        };
        self.tensor_type(&vi.name, t, None, pinned)
    }

    /// The IR type of input `name` of ONNX tensor type `t`. With `tag` (an element of a
    /// sequence input), each of its dims is a run-time dim of its own, named after `tag`
    /// (the elements of one sequence may differ in shape: a `dim_param` of the
    /// sequence's element type does not tie them).
    fn tensor_type(
        &self,
        name: &str,
        t: &onnx_protobuf::type_proto::Tensor,
        tag: Option<&str>,
        pinned: &HashMap<String, Vec<u64>>,
    ) -> Result<TensorType, OnnxError> {
        let dtype = if t.elem_type == 8 && tag.is_none() { Some(DType::I64) } else { dtype_from_onnx(t.elem_type) };
        let dtype = dtype.ok_or_else(|| {
            self.model_err(format!("input '{name}' has unsupported element type {}", onnx_type_name(t.elem_type)))
        })?;
        let Some(shape) = t.shape.as_ref() else {
            // No rank in the model: the shape `--input-shape` gives (`pin` sets it).
            if let Some(dims) = pinned.get(name) {
                return Ok(TensorType { dtype, shape: Shape::fixed(dims) });
            }
            return Err(self.model_err(format!(
                "input '{name}' has no shape; dlc needs the rank (give its shape with --input-shape '{name}=DxDx...')"
            )));
        };
        use onnx_protobuf::tensor_shape_proto::dimension::Value as D;
        let dims = shape
            .dim
            .iter()
            .enumerate()
            .map(|(i, d)| match (&d.value, tag) {
                (Some(D::DimValue(n)), _) if *n >= 0 => Dim::Fixed(*n as u64),
                (Some(D::DimParam(p)), Some(tag)) if p.chars().any(|c| c.is_ascii_alphanumeric()) => {
                    Dim::sym(symbol_name(&format!("{tag}_{p}")))
                }
                // A name, not a placeholder: exporters write "?" or "-1" for a dim they
                // do not know, which says nothing about other dims with the same text.
                (Some(D::DimParam(p)), None) if p.chars().any(|c| c.is_ascii_alphanumeric()) => {
                    Dim::sym(symbol_name(p))
                }
                _ => Dim::sym(symbol_name(&format!("{}_{i}", tag.unwrap_or(name)))),
            })
            .collect();
        Ok(TensorType { dtype, shape: Shape(dims) })
    }

    /// Applies `--dim` and `--input-shape` to input `name` of type `ty`.
    fn pin(&self, name: &str, ty: &mut TensorType, opts: &ImportOptions, pins: &mut Pins) -> Result<(), OnnxError> {
        for d in &mut ty.shape.0 {
            let Some(sym) = d.expr().as_symbol().map(str::to_string) else { continue };
            if let Some(&n) = opts.dims.get(&sym) {
                *d = Dim::Fixed(n);
                pins.dims_used.insert(sym.clone());
            }
            pins.symbols_seen.push(sym);
        }
        let Some(dims) = opts.input_shapes.get(name) else { return Ok(()) };
        if dims.len() != ty.shape.rank() {
            return Err(self.model_err(format!(
                "--input-shape {name}: gives {} dims, the input has rank {} ({ty})",
                dims.len(),
                ty.shape.rank(),
            )));
        }
        for (d, &n) in ty.shape.0.iter().zip(dims) {
            if let Dim::Fixed(m) = d {
                if *m != n {
                    return Err(self.model_err(format!(
                        "--input-shape {name}: dim {m} of {ty} is fixed by the model, cannot pin it to {n}"
                    )));
                }
            }
        }
        ty.shape = Shape::fixed(dims);
        pins.used += 1;
        Ok(())
    }

    /// The IR value behind an ONNX value name, materialising initializers on first use.
    /// The name of string tensor `name`'s bytes buffer, an error when it names another
    /// of the model's `kind`s (inputs or outputs: `names`).
    fn string_bytes_name<'n>(
        &self,
        name: &str,
        kind: &str,
        verb: &str,
        mut names: impl Iterator<Item = &'n str>,
    ) -> Result<String, OnnxError> {
        let bytes = dlc_ir::string_bytes_name(name);
        if names.any(|n| n == bytes) {
            return Err(self.model_err(format!(
                "{kind} '{name}' is a string tensor, whose bytes dlc {verb} as '{bytes}', which names another {kind}"
            )));
        }
        Ok(bytes)
    }

    pub fn lookup(&mut self, name: &str) -> Result<Value, String> {
        if let Some(v) = self.values.get(name) {
            return Ok(*v);
        }
        if let Some(t) = self.initializers.remove(name) {
            let v = self.graph.add_const(name.to_string(), t.clone());
            self.known.insert(v, t);
            self.values.insert(name.to_string(), v);
            return Ok(v);
        }
        if self.absent.contains(name) {
            return Err(format!("value '{name}' is an empty optional (it has no element)"));
        }
        if self.strings.contains_key(name) {
            return Err(format!(
                "value '{name}' is a string tensor: this op does not take strings (docs/strings.md lists the ops \
                 that do)"
            ));
        }
        if self.sequences.contains_key(name) {
            return Err(format!(
                "value '{name}' is a sequence: only the sequence ops take it (a sequence as a model output, or in other \
                 ops, is not supported)"
            ));
        }
        if self.run_sequences.contains_key(name) {
            return Err(format!(
                "value '{name}' is a sequence whose length only the run knows: SequenceAt, SequenceLength, \
                 ConcatFromSequence, SequenceInsert, SequenceErase, Identity and a model output take it \
                 (docs/sequences.md)"
            ));
        }
        Err(format!("value '{name}' is not produced by any node, initializer or graph input"))
    }
}

/// What the input loop learnt of `--dim` and `--input-shape`.
#[derive(Default)]
struct Pins {
    /// Inputs `--input-shape` pinned.
    used: usize,
    /// Symbols `--dim` pinned.
    dims_used: std::collections::HashSet<String>,
    /// The inputs' run-time dims, in order (named when `--dim` names another).
    symbols_seen: Vec<String>,
}

/// The element type of a graph input or output that is a sequence of tensors (or an
/// optional one, given unless compiled absent).
pub(crate) fn sequence_element_type(vi: &onnx_protobuf::ValueInfoProto) -> Option<&onnx_protobuf::type_proto::Tensor> {
    let mut t = vi.type_.as_ref()?.value.as_ref()?;
    if let type_proto::Value::OptionalType(o) = t {
        t = o.elem_type.as_ref()?.value.as_ref()?;
    }
    let type_proto::Value::SequenceType(s) = t else { return None };
    match s.elem_type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(e) => Some(e),
        _ => None,
    }
}

/// Whether a graph input is of optional type (an ONNX `optional_type`).
fn is_optional(vi: &onnx_protobuf::ValueInfoProto) -> bool {
    matches!(vi.type_.as_ref().and_then(|t| t.value.as_ref()), Some(type_proto::Value::OptionalType(_)))
}

/// Whether a graph input or output is a string tensor.
fn is_string(vi: &onnx_protobuf::ValueInfoProto) -> bool {
    matches!(vi.type_.as_ref().and_then(|t| t.value.as_ref()), Some(type_proto::Value::TensorType(t)) if t.elem_type == 8)
}

/// A symbol name for an ONNX `dim_param` (or an anonymous dim's made-up name):
/// characters outside `[A-Za-z0-9_]` become `_`, and a name that does not start with a
/// letter or `_` gets a `_` before it.
pub fn symbol_name(p: &str) -> String {
    let mut name: String = p.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if !dlc_sym::is_symbol_name(&name) {
        name.insert(0, '_');
    }
    name
}
